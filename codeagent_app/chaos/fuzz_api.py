"""The API fuzzing of :mod:`~codeagent_app.chaos.fuzz`: both servers, every route, hostile requests."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import urllib.parse
from pathlib import Path
from typing import Any

from codeagent_app.chaos.workload import Workload, make_workspace

TOKEN = "fuzz-token"
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
ROUTES = (
    "/health",
    "/todos",
    "/todos/{id}",
    "/todos/{id}/retry",
    "/todos/{id}/cancel",
    "/status",
    "/checkpoints/{id}",
    "/flags",
    "/flags/{id}",
    "/metrics",
    "/v1/todos",
    "/v1/workspaces",
    "/v1/limits",
    "/v1/workspaces/{id}/todos",
    "/nowhere/{id}",
)


def _requests() -> Any:
    from codeagent_app.chaos.fuzz import _strategies

    st, json_values, _, _ = _strategies()
    ident = st.one_of(
        st.sampled_from(["t-00001", "files", "llm", "ws", "..", "%2e%2e", "%zz", ""]), st.text(max_size=30)
    )
    body = st.one_of(
        st.just(b""),
        st.binary(max_size=300),
        st.integers(2, 120_000).map(lambda n: b"[" * n + b"]" * n),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {},
            optional={
                "text": json_values | st.text(max_size=40),
                "files": json_values | st.lists(st.text(max_size=20), max_size=3),
                "mode": st.sampled_from(["legacy", "new", "shadow", "canary", "x"]) | json_values,
                "percent": json_values,
                "serve": json_values,
                "reason": json_values,
                "source": st.sampled_from(["api", "ui", "cli"]) | json_values,
            },
        ).map(lambda d: json.dumps(d).encode()),
    )
    query = st.one_of(
        st.just(""), st.text(max_size=30).map(lambda q: "?" + urllib.parse.quote(q, safe="=&%"))
    )
    auth = st.sampled_from([f"Bearer {TOKEN}", f"Bearer {TOKEN}", "Bearer wrong", "", None])
    return st.tuples(st.sampled_from(METHODS), st.sampled_from(ROUTES), ident, query, body, auth)


def _target(route: str, ident: str, query: str) -> str:
    return route.replace("{id}", urllib.parse.quote(ident, safe="")) + query


def check_answer(status: int, raw: bytes, content_type: str, where: str) -> str | None:
    """What is wrong with an answer (``None``: a clean one)."""
    if status == 503 and _overloaded(raw):
        return None  # shed under load (the loop ran late): a clear answer, retried by a well-behaved client
    if status >= 500:
        return f"{where}: {status} {raw[:200]!r}"
    if "json" not in content_type:
        return None if status < 400 else f"{where}: an error that is not JSON ({content_type}): {raw[:120]!r}"
    try:
        doc = json.loads(raw)
    except ValueError:
        return f"{where}: body is not JSON: {raw[:120]!r}"
    if status >= 400:
        error = doc.get("error") if isinstance(doc, dict) else None
        if not (
            isinstance(error, dict)
            and isinstance(error.get("code"), str)
            and isinstance(error.get("message"), str)
        ):
            return f"{where}: error without the shape {{error: {{code, message}}}}: {raw[:120]!r}"
    return None


def _overloaded(raw: bytes) -> bool:
    try:
        doc = json.loads(raw)
    except ValueError:
        return False
    error = doc.get("error") if isinstance(doc, dict) else None
    return isinstance(error, dict) and error.get("code") == "overloaded"


def _workspace(root: Path) -> None:
    make_workspace(root, [Workload(3)], config={"api": {"token": TOKEN}})


def fuzz_async_api(tally: Any, examples: int, seed: int, root: Path) -> None:
    """The async server's app in-process (Starlette's test client), and its WebSocket."""
    from hypothesis import strategies as st
    from starlette.testclient import TestClient

    from codeagent_app.flags_api import flags_routes
    from core_async.checkpoints import AsyncCheckpointJsonStore
    from core_async.kernel.api_app import StoreWorkspace, create_api_app
    from core_async.kernel.events import EventBus
    from core_async.kernel.metrics import MetricsCollector
    from core_async.status import AsyncStatusJsonStore
    from core_async.todos import AsyncTodoJsonStore

    _workspace(root)
    ws = StoreWorkspace(
        "ws",
        AsyncTodoJsonStore(root),
        AsyncStatusJsonStore(root),
        AsyncCheckpointJsonStore(root),
        path=str(root),
    )
    app = create_api_app(
        [ws],
        metrics=MetricsCollector(),
        events=EventBus(),
        token=TOKEN,
        extra_routes=flags_routes(root / ".agent" / "flags.toml"),
        limits=lambda: {},
    )
    with TestClient(app, raise_server_exceptions=False) as client:

        def one(request: tuple[str, str, str, str, bytes, str | None]) -> None:
            method, route, ident, query, body, auth = request
            target = _target(route, ident, query)
            headers = {"content-type": "application/json"} | (
                {"authorization": auth} if auth is not None else {}
            )
            answer = client.request(method, target, content=body, headers=headers)
            wrong = check_answer(
                answer.status_code,
                answer.content,
                answer.headers.get("content-type", ""),
                f"async {method} {target}",
            )
            if wrong:
                raise AssertionError(wrong)

        tally.check("API bodies, paths, query strings (async server)", examples, seed, _requests(), one)

        def socket(params: tuple[str, str | None]) -> None:
            after, auth = params
            from starlette.websockets import WebSocketDisconnect

            query = urllib.parse.urlencode({"after": after}) if after else ""
            headers = {"authorization": auth} if auth is not None else {}
            hello: Any = None
            try:
                with client.websocket_connect(f"/events?{query}", headers=headers) as conn:
                    hello = conn.receive_json()
                    if hello.get("type") != "stream.hello":
                        raise AssertionError(f"/events?{query}: first message {hello!r}")
            except concurrent.futures.CancelledError:
                # The test client cancels the endpoint's task when the client side closes first; the
                # answer (hello or refusal) was already checked.
                if hello is None:
                    raise
            except WebSocketDisconnect as gone:
                if gone.code not in (1008, 1003, 4400, 4401, 4403, 1007):
                    raise AssertionError(f"/events?{query}: closed with {gone.code}") from None

        tally.check(
            "WebSocket /events query strings and tokens (async server)",
            max(10, examples // 4),
            seed,
            st.tuples(st.text(max_size=12), st.sampled_from([f"Bearer {TOKEN}", "Bearer no", "", None])),
            socket,
        )


def fuzz_legacy_api(tally: Any, examples: int, seed: int, root: Path) -> None:
    """The legacy server over real HTTP (its own request parsing included)."""
    from codeagent_app.flags_api import flags_routes
    from legacy.api import LegacyAPIServer
    from legacy.checkpoints import CheckpointStore
    from legacy.status import StatusStore
    from legacy.todos import TodoStore

    _workspace(root)
    server = LegacyAPIServer(
        TodoStore(root),
        StatusStore(root),
        CheckpointStore(root),
        token=TOKEN,
        extra_routes=flags_routes(root / ".agent" / "flags.toml"),
        root=root,
    )
    server.start()
    host, port = urllib.parse.urlsplit(server.url).netloc.split(":")
    try:

        def one(request: tuple[str, str, str, str, bytes, str | None]) -> None:
            method, route, ident, query, body, auth = request
            target = _target(route, ident, query)
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            try:
                headers = {"content-type": "application/json", "content-length": str(len(body))}
                if auth is not None:
                    headers["authorization"] = auth
                conn.request(method, target, body=body, headers=headers)
                answer = conn.getresponse()
                raw = answer.read()
                wrong = check_answer(
                    answer.status, raw, answer.getheader("content-type") or "", f"legacy {method} {target}"
                )
            finally:
                conn.close()
            if wrong:
                raise AssertionError(wrong)

        tally.check("API bodies, paths, query strings (legacy server)", examples, seed, _requests(), one)
    finally:
        server.stop()
