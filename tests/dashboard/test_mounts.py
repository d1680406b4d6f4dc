"""The servers' mount hook and the session cookie, on both servers, with a plain ASGI app as the mount.

The async server is a real kernel (``KernelOptions.mounts``) on its own thread;
the legacy one a ``LegacyAPIServer`` with ``mounts``. Everything outside the
mount's prefix is the API as before; inside it, the app gets the request with
the server's context; the session cookie opens the API (and the event stream)
only from the server's own origin.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from codeagent.api_auth import SESSION_COOKIE, cookie_value, request_authorized, same_origin, session_value
from codeagent.mounts import SCOPE_KEY, Message, Receive, Scope, Send, ServerContext, check_prefix
from legacy.api import LegacyAPIServer
from legacy.checkpoints import CheckpointStore
from legacy.status import StatusStore
from legacy.todos import TodoStore
from llm_stub import StubOptions, StubServer
from tests.kernel.workspaces import make_workspace, running_kernel

KINDS = ["legacy", "async"]
TOKEN = "s3cret"
COOKIE = f"{SESSION_COOKIE}={session_value(TOKEN)}"


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Says what it was given, in two body chunks (the legacy server must put them together)."""
    context = scope[SCOPE_KEY]
    assert isinstance(context, ServerContext)
    if scope["path"].endswith("/boom"):
        raise RuntimeError("the mounted app broke")
    body = b""
    while True:
        message: Message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    data = json.dumps(
        {
            "path": scope["path"],
            "root_path": scope["root_path"],
            "query": scope["query_string"].decode(),
            "method": scope["method"],
            "body": body.decode(),
            "loop": context.loop,
            "authorized": context.authorized,
            "token_required": context.token_required,
            "cookie_value": context.session_cookie(),
            "metrics": context.metrics is not None,
            "events": context.events,
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"x-echo", b"yes")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data[:7], "more_body": True})
    await send({"type": "http.response.body", "body": data[7:]})


class ThreadedKernel:
    """A kernel serving its API (with mounts) on its own event loop, in a thread."""

    def __init__(self, root: Path, token: str | None, llm_url: str) -> None:
        self.root, self.token, self.url, self.llm_url = root, token, "", llm_url
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        assert self._ready.wait(30) and self._error is None, self._error
        return self.url

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with running_kernel(
            [self.root], self.llm_url, port=0, token=self.token, mounts=[("/ui", echo)]
        ) as core:
            self.url = str(core.api_url)
            self._ready.set()
            await self._stop.wait()


def _origin(value: str | None) -> Origin | None:
    return Origin(value) if value is not None else None


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    with StubServer(StubOptions()) as stub:
        yield stub.url


@pytest.fixture(params=KINDS)
def served(request: pytest.FixtureRequest, tmp_path: Path, stub_url: str) -> Iterator[tuple[str, str]]:
    """``(kind, url)`` of a server with the echo app mounted at ``/ui`` and the token ``TOKEN``."""
    root = tmp_path / "ws"
    make_workspace(root, 1)
    if request.param == "async":
        with ThreadedKernel(root, TOKEN, stub_url) as url:
            yield "async", url
        return
    server = LegacyAPIServer(
        TodoStore(root), StatusStore(root), CheckpointStore(root), token=TOKEN, mounts=[("/ui", echo)]
    )
    server.start()
    try:
        yield "legacy", server.url
    finally:
        server.stop()


def test_a_mount_gets_every_request_under_its_prefix_and_nothing_else(served: tuple[str, str]) -> None:
    kind, url = served
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, timeout=10, headers=auth) as client:
        for path in ("/ui", "/ui/"):
            answer = client.get(path)
            assert answer.status_code == 200 and answer.headers["x-echo"] == "yes"
            assert answer.json()["path"] == "/ui/" and answer.json()["root_path"] == "/ui"
        seen = client.get("/ui/a/b?x=1&y=two").json()
        assert (seen["path"], seen["query"], seen["method"]) == ("/ui/a/b", "x=1&y=two", "GET")
        assert seen["loop"] == kind and seen["authorized"] and seen["token_required"]
        assert seen["cookie_value"] == session_value(TOKEN)
        assert seen["metrics"] is (kind == "async") and seen["events"] is (kind == "async")
        posted = client.post("/ui/form", content=b"a=1&b=2", headers={"Content-Type": "text/plain"}).json()
        assert (posted["method"], posted["body"]) == ("POST", "a=1&b=2")
        # Not the mount: the API, as before (on one kept-alive connection, after the mount's answers).
        assert client.get("/uix").status_code == 404
        assert client.get("/uix").json()["error"]["code"] == "not_found"
        assert client.get("/health").json() == {"status": "ok", "loop": kind}
        assert client.get("/todos").status_code == 200


def test_a_mount_that_raises_is_a_500_and_the_server_goes_on(served: tuple[str, str]) -> None:
    _kind, url = served
    with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        assert client.get("/ui/boom").status_code == 500
        assert client.get("/ui/fine").status_code == 200


def test_the_mount_is_told_whether_the_request_carries_the_token(served: tuple[str, str]) -> None:
    _kind, url = served
    own = url
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/ui/x").json()["authorized"] is False
        assert client.get("/ui/x", headers={"Authorization": "Bearer nope"}).json()["authorized"] is False
        assert client.get("/ui/x", headers={"Cookie": COOKIE}).json()["authorized"] is True
        assert (
            client.get("/ui/x", headers={"Cookie": f"{SESSION_COOKIE}=forged"}).json()["authorized"] is False
        )
        # A cookie alone never changes anything unless the request comes from the server's own page.
        assert client.post("/ui/x", headers={"Cookie": COOKIE}).json()["authorized"] is False
        assert client.post("/ui/x", headers={"Cookie": COOKIE, "Origin": own}).json()["authorized"] is True
        foreign = {"Cookie": COOKIE, "Origin": "http://127.0.0.1:1"}
        assert client.post("/ui/x", headers=foreign).json()["authorized"] is False


def test_the_session_cookie_opens_the_api_only_from_the_servers_own_origin(served: tuple[str, str]) -> None:
    _kind, url = served
    todo = {"text": 'append a line "x" to file f0.txt', "files": ["f0.txt"]}
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/todos").status_code == 401
        assert client.get("/todos", headers={"Cookie": COOKIE}).status_code == 200
        assert client.get("/todos", headers={"Cookie": f"{SESSION_COOKIE}=x"}).status_code == 401
        assert client.get("/flags", headers={"Cookie": COOKIE}).status_code == 404  # no flag routes here
        assert client.post("/todos", json=todo, headers={"Cookie": COOKIE}).status_code == 401
        foreign = {"Cookie": COOKIE, "Origin": "http://evil.example"}
        assert client.post("/todos", json=todo, headers=foreign).status_code == 401
        assert client.post("/todos", json=todo, headers={"Cookie": COOKIE, "Origin": url}).status_code == 201
        bearer = {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}
        assert client.post("/todos", json=todo, headers=bearer).status_code == 201


def test_the_event_stream_takes_the_cookie_from_its_own_origin(tmp_path: Path, stub_url: str) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 0)
    with ThreadedKernel(root, TOKEN, stub_url) as url:
        ws_url = url.replace("http://", "ws://") + "/events"
        with connect(ws_url, additional_headers={"Cookie": COOKIE}, origin=Origin(url)) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "stream.hello"
        for headers, origin in (
            ({"Cookie": COOKIE}, None),
            ({"Cookie": COOKIE}, "http://127.0.0.1:1"),
            ({}, url),
        ):
            with pytest.raises(InvalidStatus):
                connect(ws_url, additional_headers=headers, origin=_origin(origin)).close()


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {}, False),
        ("GET", {"authorization": f"Bearer {TOKEN}"}, True),
        ("GET", {"cookie": f"a=b; {COOKIE}; c=d"}, True),
        ("HEAD", {"cookie": COOKIE}, True),
        ("PUT", {"cookie": COOKIE}, False),
        ("PUT", {"cookie": COOKIE, "origin": "http://h:1", "host": "h:1"}, True),
        ("PUT", {"cookie": COOKIE, "origin": "https://h:1", "host": "h:1"}, True),
        ("PUT", {"cookie": COOKIE, "origin": "http://h:2", "host": "h:1"}, False),
        ("WEBSOCKET", {"cookie": COOKIE, "origin": "null", "host": "h:1"}, False),
        ("GET", {"cookie": f"{SESSION_COOKIE}={session_value('other')}"}, False),
    ],
)
def test_the_rule(method: str, headers: dict[str, Any], expected: bool) -> None:
    allowed = request_authorized(
        TOKEN,
        method=method,
        authorization=headers.get("authorization"),
        cookie=headers.get("cookie"),
        origin=headers.get("origin"),
        host=headers.get("host"),
    )
    assert allowed is expected
    assert request_authorized(None, method=method, authorization=None)  # no token: open


def test_small_pieces() -> None:
    assert cookie_value(f'x=1; {SESSION_COOKIE}="abc"') == "abc"
    assert cookie_value("x=1") is None and cookie_value(None) is None
    assert same_origin("http://127.0.0.1:5", "127.0.0.1:5") and not same_origin(None, "127.0.0.1:5")
    assert session_value("a") != session_value("b") and len(session_value("a")) == 64
    assert check_prefix("/ui") == "/ui"
    for bad in ("ui", "/ui/", "/"):
        with pytest.raises(ValueError):
            check_prefix(bad)
