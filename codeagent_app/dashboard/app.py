"""The dashboard's ASGI app (Starlette, Jinja2 templates, static files shipped in the package).

Mounted by the application at ``/ui`` on either API server (the async
kernel's, the legacy stdlib one, the worker set's supervisor). The server
hands every request with a :class:`~codeagent.mounts.ServerContext`: which
server it is, whether the request carries the token (bearer header or the
session cookie set here), its metrics. Routes, relative to the mount:

======  ======================  ==================================================
GET     /                       the page (401 with the sign-in form without the token)
GET     /login, POST /login     the sign-in form; a right token sets the session cookie
POST    /logout                 forgets the cookie
GET     /api/state              JSON: components, todos, live figures, counters
GET     /api/mismatches         JSON: shadow mismatches (``?component=``), with diffs
GET     /api/audit              JSON: the flags audit log, newest first
GET     /api/migration          JSON: ``migrate status`` and ``migrate next --dry-run``
GET     /part/mismatches        HTML of the mismatch list (the page's script swaps it in)
GET     /part/audit             HTML of the audit and migration section
POST    /flags, /rollback       the change forms without JavaScript (same handler as ``PUT /flags``)
GET     /ab, /ab/files/{name}   the newest ``codeagent bench`` report and its charts
GET     /static/{name}          CSS and JavaScript (no token needed)
======  ======================  ==================================================

With JavaScript, the page changes flags through the API itself
(``PUT /flags/{component}`` with ``"source": "ui"``), follows ``/events`` on the
async server (reconnecting with ``?after=N``) and polls ``/api/state`` on the
legacy one. Every POST here must come from the page's own origin.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import mimetypes
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote

import anyio.to_thread
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from codeagent.api_auth import SESSION_COOKIE, same_origin
from codeagent.mounts import SCOPE_KEY, ServerContext
from codeagent_app.dashboard.data import DashboardData, Workspace
from codeagent_app.flags_api import flags_routes
from feature_flags import COMPONENTS, Mode

T = TypeVar("T")

#: Where the application mounts the dashboard.
PREFIX = "/ui"
#: How long the loop-lag probe sleeps; the lag is how much later than that it wakes.
LAG_PROBE_SECONDS = 0.01
#: Largest form body accepted.
MAX_FORM_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store"}
_PAGE_HEADERS = {
    **_NO_STORE,
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_CONTENT_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


@dataclass(frozen=True)
class DashboardConfig:
    """What one dashboard shows: the served workspaces, the flag file the API changes, the bench reports."""

    loop: str
    workspaces: list[Workspace]
    #: The flag file ``GET/PUT /flags`` of the same server act on.
    flags_path: Path
    #: Where ``codeagent bench`` reports are (a report directory, or a directory of them).
    bench_dir: Path | None = None
    prefix: str = PREFIX


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str
    version: str


def _load_assets() -> dict[str, _Asset]:
    assets: dict[str, _Asset] = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        if not entry.is_file() or entry.name.startswith("."):
            continue
        body = entry.read_bytes()
        suffix = Path(entry.name).suffix
        kind = _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
        assets[entry.name] = _Asset(body, kind, hashlib.sha256(body).hexdigest()[:12])
    return assets


def _form(raw: bytes) -> dict[str, str]:
    parsed = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[-1] for key, values in parsed.items()}


def _percent(text: str) -> Any:
    """A number when the text is one; otherwise the text itself, for the API to refuse in its own words."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() else value


class Dashboard:
    """One dashboard: its data readers, templates, static files, and the ASGI app serving them."""

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.data = DashboardData(config.workspaces, config.flags_path, config.bench_dir)
        self.env = Environment(
            loader=PackageLoader(__package__, "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.assets = _load_assets()
        self.lags: deque[float] = deque(maxlen=30)
        self._put_flag = next(r.handler for r in flags_routes(config.flags_path) if r.method == "PUT")

    # ----------------------------------------------------------------- the app

    def asgi(self) -> Starlette:
        """The ASGI app (mount it at :attr:`DashboardConfig.prefix`)."""
        routes = [
            Route("/", self.page, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/api/state", self.api_state, methods=["GET"]),
            Route("/api/mismatches", self.api_mismatches, methods=["GET"]),
            Route("/api/audit", self.api_audit, methods=["GET"]),
            Route("/api/migration", self.api_migration, methods=["GET"]),
            Route("/part/mismatches", self.part_mismatches, methods=["GET"]),
            Route("/part/audit", self.part_audit, methods=["GET"]),
            Route("/flags", self.form_flags, methods=["POST"]),
            Route("/rollback", self.form_rollback, methods=["POST"]),
            Route("/ab", self.ab_page, methods=["GET"]),
            Route("/ab/files/{name}", self.ab_file, methods=["GET"]),
            Route("/static/{name}", self.static, methods=["GET"]),
        ]
        app = Starlette(routes=routes)
        app.router.redirect_slashes = False
        return app

    # ----------------------------------------------------------------- helpers

    @staticmethod
    def _context(request: Request) -> ServerContext:
        context = request.scope.get(SCOPE_KEY)
        if not isinstance(context, ServerContext):
            raise RuntimeError("the dashboard is served only when mounted on a codeagent API server")
        return context

    def _base(self, request: Request) -> str:
        return str(request.scope.get("root_path", ""))

    def _api_root(self, request: Request) -> str:
        base = self._base(request)
        return base[: -len(self.config.prefix)] if base.endswith(self.config.prefix) else ""

    async def _run(self, context: ServerContext, fn: Callable[..., T], *args: Any) -> T:
        """Blocking reads: on a worker thread on the async server (its loop runs the agent), inline on legacy."""
        if context.loop == "legacy":  # each request already runs on its own thread and loop
            return fn(*args)
        return await anyio.to_thread.run_sync(partial(fn, *args))

    async def _probe_lag(self) -> float:
        """How late a short sleep wakes on this loop, in ms (the benchmarks' loop-lag measure)."""
        start = time.perf_counter()
        await asyncio.sleep(LAG_PROBE_SECONDS)
        lag = max(0.0, (time.perf_counter() - start - LAG_PROBE_SECONDS) * 1000.0)
        self.lags.append(lag)
        return lag

    async def _gather(
        self, context: ServerContext, fn: Callable[..., T], *args: Any
    ) -> tuple[T, float | None]:
        """Run ``fn`` off the loop while the lag probe runs on it (async server only)."""
        if context.loop == "legacy":
            return fn(*args), None
        probe = asyncio.ensure_future(self._probe_lag())
        try:
            value = await self._run(context, fn, *args)
        finally:
            lag = await probe
        return value, lag

    def _lag_view(self, lag: float | None) -> dict[str, Any]:
        if lag is None:
            return {
                "last_ms": None,
                "max_ms": None,
                "text": "n/a",
                "detail": "the legacy loop has no event loop",
            }
        worst = max(self.lags, default=lag)
        return {
            "last_ms": round(lag, 2),
            "max_ms": round(worst, 2),
            "text": f"{lag:.1f} ms",
            "detail": f"max {worst:.1f} ms over the last {len(self.lags)} probes",
        }

    def _render(self, name: str, request: Request, context: ServerContext, **values: Any) -> str:
        template = self.env.get_template(name)
        return template.render(
            base=self._base(request),
            api=self._api_root(request),
            server_loop=context.loop,
            events=context.events,
            token_required=context.token_required,
            assets={name: asset.version for name, asset in self.assets.items()},
            workspaces=self.config.workspaces,
            flags_path=str(self.config.flags_path),
            components=COMPONENTS,
            modes=[m.value for m in Mode],
            **values,
        )

    async def _html(
        self, name: str, request: Request, context: ServerContext, status: int = 200, **values: Any
    ) -> HTMLResponse:
        """A rendered template (off the loop on the async server: a long todo list takes a while)."""
        text = await self._run(context, partial(self._render, name, request, context, **values))
        return HTMLResponse(text, status_code=status, headers=_PAGE_HEADERS)

    async def _sign_in(
        self, request: Request, context: ServerContext, error: str = "", status: int = 401
    ) -> Response:
        return await self._html("login.html", request, context, status=status, error=error)

    @staticmethod
    def _refused() -> JSONResponse:
        return JSONResponse(
            {"error": {"code": "unauthorized", "message": "missing or wrong bearer token"}},
            status_code=401,
            headers={**_NO_STORE, "WWW-Authenticate": "Bearer"},
        )

    @staticmethod
    def _same_origin(request: Request) -> bool:
        return same_origin(request.headers.get("origin"), request.headers.get("host"))

    @staticmethod
    async def _read_form(request: Request) -> dict[str, str] | None:
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_FORM_BYTES:
                return None
        return _form(raw)

    def _filter(self, request: Request) -> str | None:
        wanted = request.query_params.get("component") or None
        return wanted if wanted in COMPONENTS else None

    # ----------------------------------------------------------------- views

    def _state(self, context: ServerContext) -> dict[str, Any]:
        now = datetime.now(UTC)
        metrics = context.metrics() if context.metrics is not None else None
        return {
            "loop": context.loop,
            "time": now.isoformat(timespec="seconds"),
            "flags": self.data.components(),
            "workspaces": self.data.todos(now),
            "live": self.data.live(metrics, now),
            "mismatches": {"count": self.data.mismatch_count()},
            "audit": {"count": self.data.audit_count()},
        }

    def _page_values(self, context: ServerContext, component: str | None) -> dict[str, Any]:
        state = self._state(context)
        directory = self.data.bench_dir
        return {
            "state": state,
            "mismatches": self.data.mismatches(component),
            "audit": self.data.audit(),
            "migration": self.data.migration(),
            "bench_dir": str(directory) if directory is not None else "",
        }

    def _flag_message(self, request: Request, state: Mapping[str, Any]) -> str:
        changed = request.query_params.get("changed", "")
        names = [n for n in changed.split(",") if n in COMPONENTS]
        rows = {row["component"]: row for row in state["flags"]["components"]}
        if not names:
            return ""
        done = ", ".join(f"{n}: {rows[n]['mode_text']}" for n in names)
        return f"{done} (recorded in the audit log with source ui)"

    async def _page(
        self, request: Request, context: ServerContext, *, status: int = 200, error: str = ""
    ) -> Response:
        values, lag = await self._gather(context, self._page_values, context, self._filter(request))
        values["state"]["live"]["lag"] = self._lag_view(lag)
        message = "" if error else self._flag_message(request, values["state"])
        return await self._html(
            "index.html", request, context, status=status, flag_error=error, flag_message=message, **values
        )

    async def page(self, request: Request) -> Response:
        """The page."""
        context = self._context(request)
        if not context.authorized:
            return await self._sign_in(request, context)
        return await self._page(request, context)

    async def api_state(self, request: Request) -> Response:
        """Components, todos, live figures and counters, as the page's script polls them."""
        context = self._context(request)
        if not context.authorized:
            return self._refused()
        state, lag = await self._gather(context, self._state, context)
        state["live"]["lag"] = self._lag_view(lag)
        return JSONResponse(state, headers=_NO_STORE)

    async def api_mismatches(self, request: Request) -> Response:
        """Shadow mismatches, newest first, with their diffs."""
        context = self._context(request)
        if not context.authorized:
            return self._refused()
        found = await self._run(context, self.data.mismatches, self._filter(request))
        return JSONResponse(found, headers=_NO_STORE)

    async def api_audit(self, request: Request) -> Response:
        """The flags audit log, newest first."""
        context = self._context(request)
        if not context.authorized:
            return self._refused()
        return JSONResponse({"entries": await self._run(context, self.data.audit)}, headers=_NO_STORE)

    async def api_migration(self, request: Request) -> Response:
        """``migrate status`` and ``migrate next --dry-run`` per workspace."""
        context = self._context(request)
        if not context.authorized:
            return self._refused()
        return JSONResponse({"workspaces": await self._run(context, self.data.migration)}, headers=_NO_STORE)

    async def part_mismatches(self, request: Request) -> Response:
        """The mismatch list as HTML, for the page's script."""
        context = self._context(request)
        if not context.authorized:
            return self._refused()
        found = await self._run(context, self.data.mismatches, self._filter(request))
        return await self._html("_mismatches.html", request, context, mismatches=found)

    async def part_audit(self, request: Request) -> Response:
        """The audit and migration section as HTML, for the page's script."""
        context = self._context(request)
        if not context.authorized:
            return self._refused()

        def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            return self.data.audit(), self.data.migration()

        audit, migration = await self._run(context, read)
        return await self._html("_audit.html", request, context, audit=audit, migration=migration)

    # ----------------------------------------------------------------- changes without JavaScript

    async def _change(self, context: ServerContext, changes: list[tuple[str, dict[str, Any]]]) -> str:
        """Apply ``(component, PUT body)`` pairs through the flags API's handler; the first refusal's message."""
        for component, body in changes:
            status, answer = await self._run(context, self._put_flag, component, body)
            if status != 200:
                return str(answer.get("error", {}).get("message", answer))
        return ""

    async def form_flags(self, request: Request) -> Response:
        """The change form (mode, percent, serve, reason) posted without JavaScript."""
        context = self._context(request)
        if not context.authorized or not self._same_origin(request):
            return self._refused()
        form = await self._read_form(request)
        if form is None:
            return await self._page(request, context, status=400, error="the form is too large")
        component = form.get("component", "")
        body: dict[str, Any] = {"mode": form.get("mode", ""), "source": "ui"}
        if form.get("reason", "").strip():
            body["reason"] = form["reason"].strip()
        if (percent := _percent(form.get("percent", ""))) is not None:
            body["percent"] = percent
        if form.get("serve") and body["mode"] == Mode.SHADOW.value:
            body["serve"] = form["serve"]
        error = await self._change(context, [(component, body)])
        if error:
            return await self._page(request, context, status=400, error=f"{component}: {error}")
        return RedirectResponse(f"{self._base(request)}/?changed={quote(component)}#components", 303)

    async def form_rollback(self, request: Request) -> Response:
        """The rollback form (one component or all, with a reason) posted without JavaScript."""
        context = self._context(request)
        if not context.authorized or not self._same_origin(request):
            return self._refused()
        form = await self._read_form(request) or {}
        reason = form.get("reason", "").strip()
        target = form.get("component", "")
        if not reason:
            return await self._page(request, context, status=400, error="a rollback needs a reason")
        names = list(COMPONENTS) if target == "all" else [target]
        body = {"mode": Mode.LEGACY.value, "reason": f"rollback: {reason}", "source": "ui"}
        error = await self._change(context, [(name, dict(body)) for name in names])
        if error:
            return await self._page(request, context, status=400, error=f"rollback: {error}")
        return RedirectResponse(f"{self._base(request)}/?changed={quote(','.join(names))}#components", 303)

    # ----------------------------------------------------------------- signing in

    async def login_form(self, request: Request) -> Response:
        """The sign-in form (a page to go back to when no token is configured)."""
        context = self._context(request)
        if not context.token_required:
            return RedirectResponse(f"{self._base(request)}/", 303)
        return await self._sign_in(request, context, status=200)

    async def login(self, request: Request) -> Response:
        """Check the token typed in; a right one sets the http-only, same-site session cookie."""
        context = self._context(request)
        if not self._same_origin(request):
            return self._refused()
        form = await self._read_form(request) or {}
        typed = form.get("token", "")
        if context.token is None:
            return RedirectResponse(f"{self._base(request)}/", 303)
        if not hmac.compare_digest(typed.encode("utf-8"), context.token.encode("utf-8")):
            return await self._sign_in(request, context, error="That is not the token of this server.")
        answer = RedirectResponse(f"{self._base(request)}/", 303)
        value = context.session_cookie()
        assert value is not None
        answer.set_cookie(SESSION_COOKIE, value, path="/", httponly=True, samesite="strict")
        return answer

    async def logout(self, request: Request) -> Response:
        """Forget the session cookie."""
        if not self._same_origin(request):
            return self._refused()
        answer = RedirectResponse(f"{self._base(request)}/login", 303)
        answer.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return answer

    # ----------------------------------------------------------------- A/B report and static files

    async def ab_page(self, request: Request) -> Response:
        """The newest ``codeagent bench`` report: its tables and charts."""
        context = self._context(request)
        if not context.authorized:
            return await self._sign_in(request, context)
        report = await self._run(context, self.data.report, f"{self._base(request)}/ab/files")
        directory = self.data.bench_dir
        return await self._html(
            "ab.html", request, context, report=report, bench_dir=str(directory) if directory else ""
        )

    async def ab_file(self, request: Request) -> Response:
        """A chart of the newest report."""
        context = self._context(request)
        if not context.authorized:
            return self._refused()
        path = await self._run(context, self.data.report_image, request.path_params["name"])
        if path is None:
            return Response("no such chart", status_code=404, media_type="text/plain")
        body = await self._run(context, path.read_bytes)
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Response(body, media_type=kind, headers={"Cache-Control": "no-cache"})

    async def static(self, request: Request) -> Response:
        """The page's CSS and JavaScript (versioned by their hash; no token needed)."""
        asset = self.assets.get(request.path_params["name"])
        if asset is None:
            return Response("not found", status_code=404, media_type="text/plain")
        if request.headers.get("if-none-match") == f'"{asset.version}"':
            return Response(status_code=304)
        return Response(
            asset.body,
            media_type=asset.content_type,
            headers={"ETag": f'"{asset.version}"', "Cache-Control": "public, max-age=86400"},
        )
