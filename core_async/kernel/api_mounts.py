"""The async API's mounts: extra ASGI apps served under a path prefix (see :mod:`codeagent.mounts`).

A pure ASGI middleware placed inside the request-context middleware (so a
mounted app's answers get a request id and count in the request metrics,
labelled with the prefix) and outside the API's router: a request under a
prefix goes to the mount's app with the server's :class:`ServerContext` in its
scope; anything else reaches the API unchanged. A mounted app that raises
before answering gets the API's 500 answer (``internal``), logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from codeagent.mounts import SCOPE_KEY, Mount, ServerContext, check_prefix, mount_for

log = logging.getLogger("codeagent.kernel.api")


@dataclass(frozen=True)
class MountLabel:
    """Stands in ``scope["route"]`` for a mounted app's request: its ``path`` labels the metrics."""

    path: str


class MountDispatcher:
    """Hands requests under a mount's prefix to its app; everything else to the API."""

    def __init__(
        self, app: ASGIApp, *, mounts: Sequence[Mount], context: Callable[[Scope], ServerContext]
    ) -> None:
        self.app = app
        self.mounts = [(check_prefix(prefix), target) for prefix, target in mounts]
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.mounts:
            await self.app(scope, receive, send)
            return
        root_path: str = scope.get("root_path", "")
        path: str = scope["path"]
        route_path = path[len(root_path) :] if root_path and path.startswith(root_path) else path
        found = mount_for(self.mounts, route_path)
        if found is None:
            await self.app(scope, receive, send)
            return
        prefix, target = found
        child = dict(scope)
        child["root_path"] = root_path + prefix
        if route_path == prefix:  # the prefix itself is the app's root
            child["path"] = path + "/"
            child["raw_path"] = (scope.get("raw_path") or path.encode()) + b"/"
        child[SCOPE_KEY] = self.context(scope)
        scope["route"] = MountLabel(prefix)
        if scope["type"] != "http":
            await target(child, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await target(child, receive, tracked)
        except Exception as exc:  # as the API's own endpoints: a 500 in the API's error shape, logged
            log.exception("%s %s failed in the app mounted at %s", scope.get("method"), path, prefix)
            if started:
                raise
            body = json.dumps({"error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}})
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", b"%d" % len(body)),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body.encode()})
