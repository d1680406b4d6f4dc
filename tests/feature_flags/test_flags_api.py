"""``GET /flags`` and ``PUT /flags/{component}`` on both servers, over real HTTP, as ``codeagent serve`` runs them."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from codeagent_app.sample import create_sample_workspace
from feature_flags import Mode, read_entries, read_flags
from llm_stub import StubServer

CLI = [sys.executable, "-m", "codeagent_app.cli"]


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


@pytest.fixture(params=["legacy", "async"])
def served(request: pytest.FixtureRequest, tmp_path: Path, stub: StubServer) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "ws"
    create_sample_workspace(root)
    (root / ".agent/config.json").write_text('{"api": {"token": "s3cret"}}\n')
    proc = subprocess.Popen(
        [*CLI, "serve", "--loop", request.param, "-w", str(root), "--port", "0", "--llm-url", stub.url],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    url = ""
    deadline = time.monotonic() + 30
    while not url and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "API listening on" in line:
            url = line.rsplit(" ", 1)[-1].strip()
    try:
        assert url, "serve never printed its URL"
        yield url, root
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()


def test_flags_over_the_api(served: tuple[str, Path]) -> None:
    url, root = served
    auth = {"Authorization": "Bearer s3cret"}
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/flags").status_code == 401
        doc = client.get("/flags", headers=auth).json()
        assert {row["component"] for row in doc["components"]} >= {"llm", "git", "files"}
        answer = client.put(
            "/flags/llm", json={"mode": "canary", "percent": 25, "reason": "ramp"}, headers=auth
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["mode"] == "canary"
        assert client.get("/flags/llm", headers=auth).json()["percent"] == 25
        bad = client.put("/flags/llm", json={"mode": "turbo"}, headers=auth)
        assert bad.status_code == 400
        assert "mode" in bad.json()["error"]["message"]
        missing = client.put("/flags/cache", json={"mode": "new"}, headers=auth)
        assert missing.status_code == 404
        assert client.post("/flags/llm", json={}, headers=auth).status_code == 405
    flags = read_flags(root / ".agent/flags.toml")
    assert flags.flag("llm").mode is Mode.CANARY
    entry = read_entries(root / ".agent/flags.toml")[-1]
    assert (entry.source, entry.reason) == ("api", "ramp")


def test_an_invalid_change_is_a_bad_request_and_a_broken_file_a_conflict(served: tuple[str, Path]) -> None:
    url, root = served
    auth = {"Authorization": "Bearer s3cret"}
    flags = root / ".agent/flags.toml"
    with httpx.Client(base_url=url, headers=auth, timeout=10) as client:
        bad = client.put("/flags/files", json={"mode": "canary", "percent": 150})
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_request")
        assert "100" in bad.json()["error"]["message"]
        flags.write_text('version = 1\nloop = "legacy"\n[components.files]\nmode = "sideways"\n')
        broken = client.put("/flags/files", json={"mode": "new"})
        assert (broken.status_code, broken.json()["error"]["code"]) == (409, "conflict")
        assert "must be fixed first" in broken.json()["error"]["message"]
    assert "sideways" in flags.read_text()  # nothing was written over the person's edit


def test_after_a_bad_edit_the_api_reports_the_last_good_flags_in_force(served: tuple[str, Path]) -> None:
    """Chaos campaign finding: after a bad edit GET /flags reported the defaults (all legacy) and the
    error, while the running loop kept routing by the last good flags."""
    url, root = served
    flags = root / ".agent/flags.toml"
    with httpx.Client(base_url=url, headers={"Authorization": "Bearer s3cret"}, timeout=10) as client:
        assert client.put("/flags/files", json={"mode": "new"}).status_code == 200
        flags.write_text('version = 1\nloop = "legacy"\n[components.files]\nmode = "sideways"\n')
        deadline = time.monotonic() + 10
        doc = client.get("/flags").json()
        while doc["error"] is None and time.monotonic() < deadline:
            time.sleep(0.05)
            doc = client.get("/flags").json()
    assert doc["error"] is not None and "components.files.mode" in doc["error"]
    modes = {row["component"]: row["mode"] for row in doc["components"]}
    assert modes["files"] == "new"  # what the loop still routes by, not the defaults


def test_a_body_nested_too_deeply_is_a_400(served: tuple[str, Path]) -> None:
    """Chaos campaign finding: a body thousands of arrays deep raised RecursionError: a 500."""
    url, _ = served
    deep = b"[" * 100_000 + b"]" * 100_000
    with httpx.Client(base_url=url, headers={"Authorization": "Bearer s3cret"}, timeout=10) as client:
        reply = client.put("/flags/llm", content=deep)
    assert reply.status_code == 400, reply.text
    assert "not valid JSON" in reply.json()["error"]["message"]
