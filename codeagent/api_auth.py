"""Who may use the HTTP API: the bearer token, or the session cookie a browser got from signing in.

One rule for both servers (legacy and async) and everything they serve:

* no ``api.token`` configured: every request is let in;
* ``Authorization: Bearer TOKEN``: let in;
* the session cookie (:data:`SESSION_COOKIE`), which the dashboard's sign-in form sets (http-only,
  ``SameSite=Strict``): let in when it holds :func:`session_value` of the token in force (an HMAC of
  the token, so the token itself never sits in the browser, and changing the token signs every
  browser out). A browser attaches cookies by itself, so a request that changes something (any method
  but GET and HEAD) or opens a WebSocket counts its cookie only when its ``Origin`` is the server
  itself: a page on another origin, even another port of the same host, cannot act with it.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import hmac

#: The cookie the dashboard's sign-in form sets, and both servers accept.
SESSION_COOKIE = "codeagent_session"
#: Methods that only read: a cookie is enough for them, whatever the request's origin.
SAFE_METHODS = frozenset({"GET", "HEAD"})
#: What the servers pass as the method of a WebSocket handshake (it is never "safe").
WEBSOCKET = "WEBSOCKET"


def session_value(token: str) -> str:
    """The session cookie's value for ``token``."""
    return hmac.new(token.encode("utf-8"), b"codeagent session", hashlib.sha256).hexdigest()


def cookie_value(cookie_header: str | None, name: str = SESSION_COOKIE) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` request header, or ``None``."""
    for part in (cookie_header or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None


def bearer_matches(token: str, authorization: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (constant-time comparison)."""
    return hmac.compare_digest((authorization or "").encode("utf-8"), f"Bearer {token}".encode())


def same_origin(origin: str | None, host: str | None) -> bool:
    """Whether an ``Origin`` header names the server reached through ``Host`` (http or https)."""
    if not origin or not host:
        return False
    return origin in (f"http://{host}", f"https://{host}")


def request_authorized(
    token: str | None,
    *,
    method: str,
    authorization: str | None,
    cookie: str | None = None,
    origin: str | None = None,
    host: str | None = None,
) -> bool:
    """Whether a request may be answered (see the module docstring for the rule)."""
    if token is None:
        return True
    if bearer_matches(token, authorization):
        return True
    given = cookie_value(cookie)
    if given is None or not hmac.compare_digest(given.encode("utf-8"), session_value(token).encode()):
        return False
    return method.upper() in SAFE_METHODS or same_origin(origin, host)
