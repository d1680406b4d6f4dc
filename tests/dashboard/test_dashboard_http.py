"""The dashboard over plain HTTP, on ``codeagent serve`` run as a real process with either loop.

What a browser without JavaScript gets (every section server-rendered; the
change forms), the token rules on every route (page, JSON, HTML parts, charts,
the API, the event stream), the A/B view, and the dashboard of a worker set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from codeagent.api_auth import SESSION_COOKIE, session_value
from feature_flags import read_entries
from llm_stub import StubOptions, StubServer
from tests.dashboard.servers import demo_workspace, plant_mismatch, serving, wait_for

LOOPS = ["legacy", "async"]
TOKEN = "dashboard-token"
DONE_ROW = re.compile(r'<tr data-id="[^"]+" data-status="done">')


def _origin(value: str | None) -> Origin | None:
    return Origin(value) if value is not None else None


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with StubServer(StubOptions(latency_ms=20)) as server:
        yield server


def _all_done(client: httpx.Client) -> bool:
    todos = client.get("/todos").json()["todos"]
    return len(todos) == 12 and all(t["status"] == "done" for t in todos)


@pytest.mark.parametrize("loop", LOOPS)
def test_without_javascript_every_section_reads_and_the_forms_change_the_flags(
    loop: str, tmp_path: Path, stub: StubServer
) -> None:
    root = demo_workspace(tmp_path / "demo")
    plant_mismatch(root)
    flags = root / ".agent" / "flags.toml"
    with (
        serving(loop, [root], stub.url, log=tmp_path / "serve.log") as (_proc, url),
        httpx.Client(base_url=url, timeout=20) as client,
    ):
        wait_for(lambda: _all_done(client), 60, "the demo's todos")
        page = client.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        for section in ('id="components"', 'id="live"', 'id="todos"', 'id="mismatches"', 'id="audit"'):
            assert section in html
        assert len(DONE_ROW.findall(html)) == 12
        assert 'data-component="files"' in html and "codeagent migrate next --dry-run" in html
        assert "config: legacy -&gt; shadow: would move (dry run)" in html
        assert "return sum((a, b))" in html and 'class="d-replace"' in html  # the diff, side by side
        assert f'data-loop="{loop}"' in html and f'data-events="{1 if loop == "async" else 0}"' in html
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]

        state = client.get("/ui/api/state").json()
        assert state["loop"] == loop and state["mismatches"]["count"] == 1
        assert [t["status"] for t in state["workspaces"][0]["todos"]] == ["done"] * 12
        assert state["live"]["todos_total"] == 12 and state["live"]["throughput"]["finished"] == 12
        assert (state["live"]["lag"]["last_ms"] is None) is (loop == "legacy")
        found = client.get("/ui/api/mismatches", params={"component": "files"}).json()
        assert found["matching"] == 1 and found["items"][0]["diff"]
        assert client.get("/ui/api/mismatches", params={"component": "llm"}).json()["matching"] == 0
        assert client.get("/ui/api/migration").json()["workspaces"][0]["next"]["component"] == "config"
        assert "No shadow mismatch recorded for git" in client.get("/ui/part/mismatches?component=git").text

        # The change form, posted by a browser without JavaScript (its Origin is the page's).
        own = {"Origin": url}
        before = flags.read_bytes() if flags.exists() else b""
        refused = client.post(
            "/ui/flags", data={"component": "files", "mode": "canary", "percent": "150"}, headers=own
        )
        assert refused.status_code == 400 and "less than or equal to 100" in refused.text
        assert (flags.read_bytes() if flags.exists() else b"") == before and not read_entries(flags)
        assert (
            client.post("/ui/flags", data={"component": "files", "mode": "new"}).status_code == 401
        )  # no Origin
        changed = client.post(
            "/ui/flags",
            data={"component": "files", "mode": "canary", "percent": "10", "reason": "from a form"},
            headers=own,
        )
        assert changed.status_code == 303
        assert "files: canary 10%" in client.get(changed.headers["location"]).text
        last = read_entries(flags)[-1]
        assert (last.source, last.reason) == ("ui", "from a form")
        assert "percent = 10" in flags.read_text()
        no_reason = client.post("/ui/rollback", data={"component": "all", "reason": ""}, headers=own)
        assert no_reason.status_code == 400 and "a rollback needs a reason" in no_reason.text
        rolled = client.post("/ui/rollback", data={"component": "all", "reason": "enough"}, headers=own)
        assert rolled.status_code == 303
        last = read_entries(flags)[-1]
        assert (last.source, last.reason) == ("ui", "rollback: enough")
        assert client.get("/flags/files").json()["mode"] == "legacy"

        # The flags API itself takes "source": "ui" (what the page's script sends).
        put = client.put("/flags/llm", json={"mode": "shadow", "source": "ui", "reason": "r"})
        assert put.status_code == 200 and read_entries(flags)[-1].source == "ui"
        assert client.put("/flags/llm", json={"mode": "new", "source": "me"}).status_code == 400

        # The A/B view: the committed report's tables and charts.
        ab = client.get("/ui/ab")
        assert (
            ab.status_code == 200 and "<table>" in ab.text and 'src="/ui/ab/files/throughput.png"' in ab.text
        )
        chart = client.get("/ui/ab/files/throughput.png")
        assert chart.status_code == 200 and chart.content.startswith(b"\x89PNG")
        assert client.get("/ui/ab/files/..%2Fresults.json").status_code == 404
        assert client.get("/ui/static/dashboard.js").headers["content-type"].startswith("text/javascript")
        assert client.get("/ui/static/nothing.js").status_code == 404


def _refusals(client: httpx.Client, loop: str) -> dict[str, int]:
    """Status of every route of the dashboard and the API, asked without a token."""
    gets = [
        "/ui", "/ui/", "/ui/api/state", "/ui/api/mismatches", "/ui/api/audit", "/ui/api/migration",
        "/ui/part/mismatches", "/ui/part/audit", "/ui/ab", "/ui/ab/files/throughput.png",
        "/todos", "/todos/t-0001", "/status", "/checkpoints/t-0001", "/flags", "/flags/files",
    ]  # fmt: skip
    if loop == "async":
        gets += ["/metrics", "/v1/todos", "/v1/workspaces", "/v1/limits", "/v1/flags"]
    out = {f"GET {path}": client.get(path).status_code for path in gets}
    own = {"Origin": str(client.base_url).rstrip("/")}
    posts: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/ui/flags", {"data": {"component": "files", "mode": "new"}, "headers": own}),
        ("POST", "/ui/rollback", {"data": {"component": "all", "reason": "x"}, "headers": own}),
        ("PUT", "/flags/files", {"json": {"mode": "new"}}),
        ("POST", "/todos", {"json": {"text": "x"}}),
        ("POST", "/todos/t-0001/retry", {}),
    ]
    for method, path, kwargs in posts:
        out[f"{method} {path}"] = client.request(method, path, **kwargs).status_code
    return out


@pytest.mark.parametrize("loop", LOOPS)
def test_with_a_token_every_route_refuses_without_it_and_the_cookie_opens_them(
    loop: str, tmp_path: Path, stub: StubServer
) -> None:
    root = demo_workspace(tmp_path / "demo", token=TOKEN)
    with serving(loop, [root], stub.url, log=tmp_path / "serve.log") as (_proc, url):
        with httpx.Client(base_url=url, timeout=20) as anonymous:
            refusals = _refusals(anonymous, loop)
            assert set(refusals.values()) == {401}, refusals
            page = anonymous.get("/ui")
            assert 'action="/ui/login"' in page.text and 'name="token"' in page.text  # the sign-in form
            assert anonymous.get("/health").status_code == 200
            assert anonymous.get("/ui/login").status_code == 200
            assert anonymous.get("/ui/static/dashboard.css").status_code == 200
            assert anonymous.get("/ui", headers={"Cookie": f"{SESSION_COOKIE}=guess"}).status_code == 401
            wrong = anonymous.post("/ui/login", data={"token": "nope"}, headers={"Origin": url})
            assert wrong.status_code == 401 and "not the token" in wrong.text
            assert anonymous.post("/ui/login", data={"token": TOKEN}).status_code == 401  # no Origin
            signed = anonymous.post("/ui/login", data={"token": TOKEN}, headers={"Origin": url})
            assert signed.status_code == 303
            cookie = signed.headers["set-cookie"]
            assert cookie.startswith(f"{SESSION_COOKIE}={session_value(TOKEN)};")
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
            assert TOKEN not in cookie
        jar = {SESSION_COOKIE: session_value(TOKEN)}
        with httpx.Client(base_url=url, timeout=20, cookies=jar) as browser:
            assert browser.get("/ui").status_code == 200 and "Sign out" in browser.get("/ui").text
            assert browser.get("/ui/api/state").status_code == 200
            assert browser.get("/ui/part/audit").status_code == 200
            assert browser.get("/todos").status_code == 200
            assert browser.put("/flags/files", json={"mode": "new"}).status_code == 401  # no Origin
            foreign = {"Origin": "http://127.0.0.1:1"}
            assert browser.put("/flags/files", json={"mode": "new"}, headers=foreign).status_code == 401
            put = browser.put("/flags/files", json={"mode": "new", "source": "ui"}, headers={"Origin": url})
            assert put.status_code == 200 and put.json()["mode"] == "new"
            out = browser.post("/ui/logout", headers={"Origin": url})
            assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
        if loop == "async":
            events = url.replace("http://", "ws://") + "/events"
            for headers, origin in (
                ({}, url),
                ({"Cookie": f"{SESSION_COOKIE}={session_value(TOKEN)}"}, None),
            ):
                with pytest.raises(InvalidStatus):
                    connect(events, additional_headers=headers, origin=_origin(origin)).close()
            cookie_header = {"Cookie": f"{SESSION_COOKIE}={session_value(TOKEN)}"}
            with connect(events, additional_headers=cookie_header, origin=Origin(url)) as ws:
                assert json.loads(ws.recv(timeout=10))["type"] == "stream.hello"


def test_the_dashboard_of_a_worker_set_shows_every_workspace(tmp_path: Path, stub: StubServer) -> None:
    roots = [demo_workspace(tmp_path / "alpha"), demo_workspace(tmp_path / "beta")]
    with (
        serving("async", roots, stub.url, log=tmp_path / "serve.log", extra=("--workers", "2")) as (_p, url),
        httpx.Client(base_url=url, timeout=20) as client,
    ):

        def done() -> bool:
            state = client.get("/ui/api/state").json()
            return all(ws["counts"]["done"] == 12 for ws in state["workspaces"])

        wait_for(done, 90, "both workspaces")
        state = client.get("/ui/api/state").json()
        assert [ws["name"] for ws in state["workspaces"]] == ["alpha", "beta"]
        assert state["live"]["source"] == "metrics" and state["live"]["todos_total"] == 24
        page = client.get("/ui").text
        assert 'data-workspace="alpha"' in page and 'data-workspace="beta"' in page
        assert len(DONE_ROW.findall(page)) == 24
