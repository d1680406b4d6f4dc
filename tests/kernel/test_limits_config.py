"""The kernel's limits: built-in, then the ``limits`` config (hot-reloaded), then the command line's."""

from __future__ import annotations

from pathlib import Path

import httpx

from core_async.kernel.limits import ResourceLimits
from tests.kernel.workspaces import make_workspace, running_kernel, wait_for_events


async def test_config_limits_apply_reload_and_yield_to_the_command_line(
    tmp_path: Path, stub_url: str
) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 1, config='{"limits": {"llm_slots": 3, "max_concurrency": 9}}')
    async with running_kernel([root], stub_url, port=0, limit_overrides={"max_concurrency": 5}) as core:
        assert core.orchestrator.limits == ResourceLimits(
            max_concurrency=5, per_workspace=64, llm_slots=3, file_slots=64
        )
        assert core.orchestrator.resources.llm.capacity == 3
        async with httpx.AsyncClient(base_url=str(core.api_url)) as client:
            view = (await client.get("/v1/limits")).json()
        assert view["limits"] == {"max_concurrency": 5, "per_workspace": 64, "llm_slots": 3, "file_slots": 64}
        assert set(view["in_use"]) >= {"todos", "llm_slots", "file_slots"}
        after = core.events.last_seq
        (root / ".agent/config.json").write_text('{"limits": {"llm_slots": 7, "max_concurrency": 1}}\n')
        events = await wait_for_events(
            core, lambda seen: any(e.type == "limits.changed" for e in seen), after=after
        )
        changed = next(e for e in events if e.type == "limits.changed")
        assert (
            changed.data["llm_slots"] == 7 and changed.data["max_concurrency"] == 5
        )  # the command line wins
        assert core.orchestrator.resources.llm.capacity == 7
        (root / ".agent/config.json").write_text(
            '{"limits": {"llm_slots": 0}}\n'
        )  # invalid: kept the last good
        after = core.events.last_seq
        await wait_for_events(core, lambda seen: any(e.type == "config.rejected" for e in seen), after=after)
        assert core.orchestrator.resources.llm.capacity == 7
    metrics_text = core.metrics.render().decode()
    assert 'codeagent_resource_limit{resource="llm_slots"} 7.0' in metrics_text
