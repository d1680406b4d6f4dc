"""The demo workload in shadow (every component) and an automatic rollback, end to end.

Real sample workspaces, real git, the stub LLM over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.runtime import BridgeRuntime
from bridge.wiring import recording_transport
from codeagent_app.sample import create_sample_workspace
from core_async.llm_transport import AsyncEndpointPool
from feature_flags import COMPONENTS, ComponentChange, Mode, read_entries, read_flags, update_flags
from feature_flags.mismatches import read_mismatches
from llm_stub import StubServer
from tests.agents import legacy_agent as build_agent
from tests.agents import routed_async_agent as build_routed_async_agent
from tests.agents import routed_legacy_agent as build_routed_legacy_agent


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not {".git", ".agent"} & set(p.relative_to(root).parts)
    }


def _subjects(root: Path) -> list[str]:
    out = subprocess.run(
        ["git", "log", "--format=%s|%(trailers:key=Todo-Id,valueonly)"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _run(root: Path, face: str, runtime: BridgeRuntime, url: str) -> None:
    if face == "sync":
        agent = build_routed_legacy_agent(root, runtime, url)
        try:
            agent.run(until_idle=True)
        finally:
            agent.close()
        return

    async def go() -> None:
        pool = AsyncEndpointPool(wrap_transport=recording_transport)
        agent = await build_routed_async_agent(root, runtime, url, pool)
        try:
            await agent.run(until_idle=True)
            await runtime.drain()
        finally:
            await agent.aclose()
            await pool.aclose()

    asyncio.run(go(), debug=True)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory, stub: StubServer) -> Path:
    root = tmp_path_factory.mktemp("plain") / "ws"
    create_sample_workspace(root)
    agent = build_agent(root, stub.url)
    agent.run(until_idle=True)
    agent.close()
    return root


@pytest.mark.parametrize("face", ["sync", "async"])
@pytest.mark.parametrize("serve", ["legacy", "new"])
def test_demo_in_full_shadow_has_no_mismatch_and_leaves_what_a_plain_run_leaves(
    tmp_path: Path, stub: StubServer, plain_run: Path, face: str, serve: str
) -> None:
    root = tmp_path / "ws"
    create_sample_workspace(root)
    modes = {c: ComponentChange(mode=Mode.SHADOW, serve=serve) for c in COMPONENTS}
    update_flags(root / ".agent/flags.toml", components=modes, source="cli", reason="shadow test")
    runtime = BridgeRuntime(root, watch=False)
    try:
        _run(root, face, runtime, stub.url)
    finally:
        runtime.close()
    counters = runtime.counters
    assert set(counters) == set(COMPONENTS)
    assert all(c.shadow > 0 and c.legacy == 0 and c.new == 0 for c in counters.values())
    assert sum(c.mismatches for c in counters.values()) == 0
    assert read_mismatches(root / ".agent/shadow-mismatches.jsonl") == []
    assert _tree(root) == _tree(plain_run)
    assert _subjects(root) == _subjects(plain_run)
    status = json.loads((root / ".agent/status.json").read_text())
    assert {s["status"] for s in status["todos"].values()} == {"done"}


class FailingWrites:
    """A new-path files component whose writes fail: the injected fault."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def write_many(self, contents: dict[str, str]) -> None:
        raise OSError(28, "No space left on device (injected)")


def test_injected_failure_rolls_back_only_that_component(tmp_path: Path, stub: StubServer) -> None:
    root = tmp_path / "ws"
    create_sample_workspace(root, copies=2)
    flags_path = root / ".agent/flags.toml"
    flags_path.write_text(
        'version = 1\nloop = "legacy"\n\n[rollback]\nmax_error_rate = 0.2\nmin_samples = 5\nwindow = 20\n'
    )
    update_flags(
        flags_path,
        components={"files": ComponentChange(mode=Mode.NEW), "git": ComponentChange(mode=Mode.NEW)},
        source="cli",
        reason="try the new files and git",
    )
    runtime = BridgeRuntime(root, watch=False)
    events: list[tuple[str, dict[str, Any]]] = []
    runtime.listeners.append(lambda kind, data: events.append((kind, data)))
    agent = build_routed_legacy_agent(root, runtime, stub.url)
    agent.files.new = FailingWrites(agent.files.new)  # type: ignore[attr-defined]
    try:
        agent.run(until_idle=True)
    finally:
        agent.close()
        runtime.close()
    flags = read_flags(flags_path)
    assert flags.flag("files").mode is Mode.LEGACY
    assert flags.flag("git").mode is Mode.NEW
    entry = read_entries(flags_path)[-1]
    assert entry.source == "auto-rollback"
    assert [c.key for c in entry.changes] == ["components.files.mode"]
    assert "error rate" in entry.reason
    assert [kind for kind, _ in events] == ["component.rollback"]
    assert events[0][1]["component"] == "files"
    # Todos that failed before the rollback are recorded; the rest finished on the legacy path.
    status = json.loads((root / ".agent/status.json").read_text())["todos"]
    failed = [k for k, v in status.items() if v["status"] == "failed"]
    assert 1 <= len(failed) <= 5
    assert all("injected" in status[k]["error"] for k in failed)
    assert sum(v["status"] == "done" for v in status.values()) == 24 - len(failed)
    shown = subprocess.run(
        [sys.executable, "-m", "codeagent_app.cli", "flags", "show", "--json", "--workspace", str(root)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = {row["component"]: row for row in json.loads(shown.stdout)["components"]}
    assert rows["files"]["mode"] == "legacy"
    assert rows["files"]["source"] == "auto-rollback"
    assert rows["files"]["rollback"].startswith("rolled back: error rate")
    assert rows["files"]["errors"] == len(failed)
    assert rows["git"]["mode"] == "new"
    assert rows["git"]["rollback"] == "armed"
