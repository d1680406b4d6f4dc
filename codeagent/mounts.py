"""Extra ASGI apps an API server serves under a path prefix (e.g. the application's dashboard at ``/ui``).

Both API servers take ``mounts``: ``(prefix, app)`` pairs given by the
application, so that neither server imports it. A request whose path is a
prefix, or below it, goes to that mount's app; every other request is the API,
exactly as without mounts. The app gets an ASGI ``http`` scope the way
Starlette's ``Mount`` passes one: ``path`` is the full path, ``root_path`` the
prefix (the prefix itself arrives as the app's root, ``prefix + "/"``). The
async server also passes WebSocket scopes; the legacy server, a stdlib HTTP
server, runs the app synchronously per request and buffers its answer.

The server does not authenticate for the app (its sign-in form must be
reachable without the token): it says what it knows in
``scope[SCOPE_KEY]``, a :class:`ServerContext`, and the app refuses what needs
the token itself.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from codeagent.api_auth import session_value

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: An ASGI application (the same shape as ``starlette.types.ASGIApp``).
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: ``(prefix, app)``: ``prefix`` starts with ``/`` and does not end with one, e.g. ``/ui``.
Mount = tuple[str, AsgiApp]

#: Where a mounted app finds the :class:`ServerContext` in its scope.
SCOPE_KEY = "codeagent.server"


@dataclass(frozen=True)
class ServerContext:
    """What the serving API server tells a mounted app about itself and about the request."""

    #: Which server: ``"legacy"`` or ``"async"``.
    loop: str
    #: Whether the request carries the token in force (or none is configured): see :mod:`codeagent.api_auth`.
    authorized: bool
    #: The token in force, ``None`` when none is configured.
    token: str | None = field(default=None, repr=False)
    #: The server's Prometheus exposition (``GET /metrics``), when it has one.
    metrics: Callable[[], bytes] | None = None
    #: Whether the server streams events on the WebSocket ``/events``.
    events: bool = False

    @property
    def token_required(self) -> bool:
        """Whether the server has a token (and so the app needs a signed-in browser)."""
        return self.token is not None

    def session_cookie(self) -> str | None:
        """The session cookie's value for the token in force (``None`` without a token)."""
        return session_value(self.token) if self.token is not None else None


def check_prefix(prefix: str) -> str:
    """``prefix`` if it can be a mount's prefix (``/name``, no trailing slash); ``ValueError`` otherwise."""
    if not prefix.startswith("/") or prefix.endswith("/") or "?" in prefix or "#" in prefix:
        raise ValueError(f"a mount prefix looks like '/ui' (no trailing slash), got {prefix!r}")
    return prefix


def mount_for(mounts: Sequence[Mount], path: str) -> Mount | None:
    """The mount serving ``path`` (the prefix itself or a path below it), or ``None``."""
    for prefix, app in mounts:
        if path == prefix or path.startswith(prefix + "/"):
            return prefix, app
    return None
