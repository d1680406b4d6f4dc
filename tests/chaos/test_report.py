"""The campaign's record: shards of one crash target run side by side add up to one run."""

from __future__ import annotations

from typing import Any

import pytest

from codeagent_app.chaos import render
from codeagent_app.chaos.report import combine_shards, merge


def _shard(
    seed: int, landed: int, seconds: float, *, commit: str = "c" * 40, problems: Any = ()
) -> dict[str, Any]:
    counts = {
        "target": "migrate-apply",
        "kills": landed + 2,
        "landed": landed,
        "landed_working": landed - 1,
        "lost": 0,
        "seconds": seconds,
        "calibration_s": 1.5 + seed,
        "problems": list(problems),
        "extra": {"startup_s": 0.4},
        "ok": not problems,
    }
    return {
        "campaign": "full",
        "started_at": f"2026-12-02T03:0{seed}:00+00:00",
        "commit": commit,
        "dirty": False,
        "seed": seed,
        "machine": {"usable_cores": 2, "python": "3.11.7"},
        "load_during_run": {"mean": 1.0 + seed, "max": 2.0 + seed},
        "seconds": seconds + 5,
        "ok": not problems,
        "targets": {
            "crash-migrate": {
                "ok": not problems,
                "checkpoints": 200,
                "kills_planned": 400,
                "apply": counts,
                "rollback": {**counts, "target": "migrate-rollback"},
                "seconds": seconds + 1,
            }
        },
    }


def test_shards_add_their_counts_and_keep_their_calibration() -> None:
    combined = combine_shards([_shard(2, 401, 1800.0), _shard(3, 410, 1900.0)])
    target = combined["targets"]["crash-migrate"]
    assert target["kills_planned"] == 800 and target["checkpoints"] == 200
    apply = target["apply"]
    assert (apply["landed"], apply["landed_working"], apply["kills"], apply["lost"]) == (811, 809, 815, 0)
    assert (
        apply["seconds"] == 1900.0 and apply["calibration_s"] == 3.5 and apply["extra"] == {"startup_s": 0.4}
    )
    assert target["ok"] and combined["ok"]
    assert (combined["seed"], combined["shards"], combined["seconds"]) == ([2, 3], 2, 1905.0)
    assert combined["started_at"] == "2026-12-02T03:02:00+00:00"
    assert combined["load_during_run"] == {"mean": 3.5, "max": 5.0}


def test_a_problem_in_one_shard_fails_the_whole() -> None:
    combined = combine_shards(
        [_shard(2, 401, 1800.0), _shard(3, 410, 1900.0, problems=["round 7: lost t-0001"])]
    )
    target = combined["targets"]["crash-migrate"]
    assert not combined["ok"] and not target["ok"] and not target["apply"]["ok"]
    assert target["apply"]["problems"] == ["round 7: lost t-0001"]


def test_shards_of_other_commits_or_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="different commits"):
        combine_shards([_shard(2, 1, 1.0), _shard(3, 1, 1.0, commit="d" * 40)])
    other = _shard(3, 1, 1.0)
    other["targets"] = {"crash-worker": other["targets"]["crash-migrate"]}
    with pytest.raises(ValueError, match="different targets"):
        combine_shards([_shard(2, 1, 1.0), other])
    with pytest.raises(ValueError, match="no shard"):
        combine_shards([])


def test_the_page_says_the_run_was_sharded() -> None:
    record = merge(
        {"runs": [], "targets": {}}, combine_shards([_shard(2, 401, 1800.0), _shard(3, 410, 1900.0)])
    )
    page = render.page(record)
    assert "2 shards side by side (seeds [2, 3])" in page
    assert "| `migrate apply` | 811 / 800 | 809 |" in page
