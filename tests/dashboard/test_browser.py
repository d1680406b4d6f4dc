"""The dashboard in a real browser: Playwright for Python driving Debian's Chromium, headless.

Each loop's ``codeagent serve`` runs as a real process on the demo workspace,
with the stub LLM at 250 ms per answer, so the page can watch the 12 todos
appear and go from pending to done. Chromium is Debian's (``apt-get install
chromium``; ``.ci/run`` installs it): Playwright downloads nothing. Without it
these tests skip with one line, unless ``CI`` is set, where they must run.

The run writes ``docs/dashboard.png`` (the README's picture) and prints the
page's load time, first byte to load event, as the browser measured it.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from codeagent.api_auth import SESSION_COOKIE
from feature_flags import audit_path, read_entries
from llm_stub import StubOptions, StubServer
from tests.dashboard.servers import REPO, demo_workspace, plant_mismatch, release_todos, serving, wait_for

CHROMIUM = Path(os.environ.get("CODEAGENT_CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(
            f"CI is set but {CHROMIUM} is missing: .ci/run installs it (apt-get install chromium)"
        )
    pytest.skip(
        f"browser tests skipped: no Chromium at {CHROMIUM} (apt-get install chromium)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright  # noqa: E402

#: Chromium's flags: without the background-networking ones its connections are refused by a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPS = ["legacy", "async"]
TOKEN = "browser-token"
SCREENSHOT = REPO / "docs" / "dashboard.png"
ROWS = "#todos tbody tr[data-id]"
DONE = '#todos tbody tr[data-status="done"]'
#: The page's load, first byte to load event (the Navigation Timing entry of the page).
LOAD_MS = """() => {
  const n = performance.getEntriesByType("navigation")[0];
  return n.loadEventEnd - n.responseStart;
}"""


@pytest.fixture(autouse=True)
def _fail_on_slow_callbacks() -> None:
    """Off for this module: Playwright's sync API runs its asyncio loop in a greenlet on the test's thread,
    so the test's own code between two browser calls would look like one slow callback of that loop."""


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with StubServer(StubOptions(latency_ms=250)) as server:
        yield server


def _report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n{text}")


def _watch(page: Page) -> list[str]:
    """The page's script errors (a test fails on any)."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def _flags(path: Path) -> dict[str, Any]:
    components: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))["components"]
    return components


@pytest.mark.parametrize("loop", LOOPS)
def test_the_page_follows_the_demo_and_steers_the_flags(
    loop: str, tmp_path: Path, browser: Browser, stub: StubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    root = demo_workspace(tmp_path / "demo", hold_todos=True)
    flags = root / ".agent" / "flags.toml"
    with serving(loop, [root], stub.url, log=tmp_path / "serve.log") as (_proc, url):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors = _watch(page)
        page.goto(f"{url}/ui")
        cold_ms = page.evaluate(LOAD_MS)
        expect(page.locator("#connection")).to_have_text(
            "live (WebSocket)" if loop == "async" else "live (polling)"
        )
        assert page.locator(ROWS).count() == 0
        page.evaluate(
            """() => {
              window.notReloaded = true;
              window.seen = new Set();
              const note = () => document.querySelectorAll('#todos tbody tr[data-id]')
                .forEach((tr) => window.seen.add(tr.dataset.status));
              new MutationObserver(note).observe(document.querySelector('#todos'),
                {subtree: true, childList: true, attributes: true});
            }"""
        )

        # The 12 todos arrive while the page is open, appear, and reach done: no reload.
        release_todos(root)
        expect(page.locator(ROWS)).to_have_count(12, timeout=30_000)
        expect(page.locator(DONE)).to_have_count(12, timeout=90_000)
        assert page.evaluate("window.notReloaded") is True
        seen = set(page.evaluate("[...window.seen]"))
        assert "done" in seen and seen & {"pending", "running"}, seen
        expect(page.locator('#events li[data-type="todo.done"]').first).to_be_visible()
        expect(page.locator('[data-live="todos_total"]')).to_have_text("12")

        # files -> canary 10, from the page: the flag file and the audit log (source ui).
        form = page.locator("#flag-form")
        form.locator("select[name=component]").select_option("files")
        form.locator("select[name=mode]").select_option("canary")
        form.locator("input[name=percent]").fill("10")
        form.locator("input[name=reason]").fill("ten percent, from the dashboard")
        form.locator("button[type=submit]").click()
        message = page.locator("#flag-message")
        expect(message).to_contain_text("files: canary 10%")
        expect(message).to_have_class(re.compile(r"\bok\b"))
        expect(page.locator('tr[data-component="files"] [data-field="mode_text"]')).to_have_text("canary 10%")
        assert _flags(flags)["files"] == {"mode": "canary", "percent": 10}
        entry = read_entries(flags)[-1]
        assert (entry.source, entry.reason) == ("ui", "ten percent, from the dashboard")
        assert {c.key: c.new for c in entry.changes} == {
            "components.files.mode": "canary",
            "components.files.percent": 10,
        }
        expect(page.locator('#audit tr[data-source="ui"]')).to_have_count(1)  # the audit section, live

        # An invalid percent: the validation message, and nothing changed.
        flag_bytes, audit_bytes = flags.read_bytes(), audit_path(flags).read_bytes()
        form.locator("input[name=percent]").fill("150")
        form.locator("button[type=submit]").click()
        expect(message).to_contain_text("less than or equal to 100")
        expect(message).to_have_class(re.compile(r"\berror\b"))
        assert flags.read_bytes() == flag_bytes and audit_path(flags).read_bytes() == audit_bytes
        expect(page.locator('tr[data-component="files"] [data-field="mode_text"]')).to_have_text("canary 10%")

        # A planted shadow mismatch appears in the list, with its diff side by side.
        plant_mismatch(root)
        item = page.locator('#mismatches li.mismatch[data-component="files"]')
        expect(item).to_have_count(1, timeout=15_000)
        changed = item.locator("table.diff tr.d-replace")
        expect(changed.locator("td.l")).to_contain_text("return a + b")
        expect(changed.locator("td.r")).to_contain_text("return sum((a, b))")
        page.locator("#mismatch-filter select").select_option("llm")
        expect(page.locator("#mismatches .empty")).to_contain_text("No shadow mismatch recorded for llm")
        page.locator("#mismatch-filter select").select_option("files")
        expect(item).to_have_count(1)

        if loop == "async":  # the event stream resumes where it was after a reconnect
            last = page.evaluate("window.codeagentDashboard.lastSeq")
            page.evaluate("window.codeagentDashboard.ws.close()")
            page.wait_for_function("() => window.codeagentDashboard.socketUrls.length >= 2")
            urls = page.evaluate("window.codeagentDashboard.socketUrls")
            assert urls[0].endswith("/events?after=0") and urls[-1].endswith(f"/events?after={last}"), urls
            expect(page.locator("#connection")).to_have_text("live (WebSocket)")

        # A todo added through the API appears and is done, live.
        with httpx.Client(base_url=url, timeout=10) as client:
            added = client.post("/todos", json={"text": 'append a line "seen live" to file notes.txt'})
            assert added.status_code == 201
        new_row = page.locator(f'{ROWS}[data-id="{added.json()["id"]}"]')
        expect(new_row).to_have_attribute("data-status", "done", timeout=30_000)
        assert page.evaluate("window.notReloaded") is True
        assert not errors, errors

        page.reload()
        warm_ms = page.evaluate(LOAD_MS)
        expect(page.locator(DONE)).to_have_count(13)
        if loop == "async":
            page.wait_for_timeout(500)  # the live figures filled in
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        _report(
            capsys,
            f"dashboard page load ({loop} loop, demo workspace), first byte to load event:"
            f" {cold_ms:.0f} ms first visit, {warm_ms:.0f} ms reload (13 todos, 1 mismatch)",
        )
        context.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_with_a_token_the_page_asks_for_it_and_keeps_it_in_an_http_only_cookie(
    loop: str, tmp_path: Path, browser: Browser, stub: StubServer
) -> None:
    root = demo_workspace(tmp_path / "demo", token=TOKEN)
    with serving(loop, [root], stub.url, log=tmp_path / "serve.log") as (_proc, url):
        context = browser.new_context()
        page = context.new_page()
        errors = _watch(page)
        answer = page.goto(f"{url}/ui")
        assert answer is not None and answer.status == 401
        expect(page.locator("#signin input[name=token]")).to_be_visible()
        fetch_status = "async (path) => (await fetch(path)).status"
        for path in ("/ui/api/state", "/ui/part/audit", "/todos", "/flags", "/status"):
            assert page.evaluate(fetch_status, path) == 401, path
        if loop == "async":
            refused = page.evaluate(
                """() => new Promise((done) => {
                  const ws = new WebSocket(`ws://${location.host}/events`);
                  ws.onopen = () => done("open");
                  ws.onerror = () => done("refused");
                })"""
            )
            assert refused == "refused"

        page.locator("#signin input[name=token]").fill("not it")
        page.locator("#signin button").click()
        expect(page.locator("#signin-error")).to_contain_text("not the token")
        page.locator("#signin input[name=token]").fill(TOKEN)
        page.locator("#signin button").click()
        expect(page.locator(DONE)).to_have_count(12, timeout=60_000)  # signed in: the page, live
        expect(page.locator("#connection")).to_have_text(
            "live (WebSocket)" if loop == "async" else "live (polling)"
        )
        assert page.evaluate("document.cookie") == ""  # http-only: the script never sees it
        cookie = next(c for c in context.cookies() if c["name"] == SESSION_COOKIE)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
        for path in ("/ui/api/state", "/ui/part/audit", "/todos", "/flags", "/status"):
            assert page.evaluate(fetch_status, path) == 200, path

        form = page.locator("#flag-form")
        form.locator("select[name=component]").select_option("git")
        form.locator("select[name=mode]").select_option("shadow")
        form.locator("button[type=submit]").click()
        expect(page.locator("#flag-message")).to_contain_text("git: shadow (serve legacy)")
        assert read_entries(root / ".agent" / "flags.toml")[-1].source == "ui"

        page.locator("form.signout button").click()
        expect(page.locator("#signin input[name=token]")).to_be_visible()
        assert page.evaluate(fetch_status, "/ui/api/state") == 401
        assert not errors, errors
        context.close()


def test_reading_needs_no_javascript_and_fits_a_phone(
    tmp_path: Path, browser: Browser, stub: StubServer
) -> None:
    root = demo_workspace(tmp_path / "demo")
    plant_mismatch(root)
    with (
        serving("legacy", [root], stub.url, log=tmp_path / "serve.log") as (_proc, url),
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        wait_for(
            lambda: all(t["status"] == "done" for t in client.get("/todos").json()["todos"]), 60, "todos"
        )
        context = browser.new_context(java_script_enabled=False)
        page = context.new_page()
        page.goto(f"{url}/ui")
        expect(page.locator(DONE)).to_have_count(12)
        expect(page.locator("table.components tbody tr")).to_have_count(7)
        expect(page.locator("#mismatches table.diff tr.d-replace").first).to_be_visible()
        expect(page.locator("#audit pre.status-lines")).to_contain_text("format:")
        context.close()

        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        page = phone.new_page()
        page.goto(f"{url}/ui")
        expect(page.locator(DONE)).to_have_count(12)
        width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], width  # wide tables scroll inside their box, the page does not
        phone.close()
