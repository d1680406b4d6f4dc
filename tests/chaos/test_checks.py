"""The campaign's invariant checkers, its target list and its report, on hand-made workspaces."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from codeagent.models import StatusFile, TodoState, TodoStatus, dump_json
from codeagent_app.chaos import checks, procs, report, runner
from codeagent_app.chaos.llm_faults import reason_of
from codeagent_app.chaos.migrate_kills import classify
from codeagent_app.chaos.soak import bounded, rest_bounded
from codeagent_app.chaos.workload import Workload, git, make_workspace


@pytest.fixture
def ws(tmp_path: Path) -> tuple[Path, Workload]:
    load = Workload(3)
    root = tmp_path / "ws"
    make_workspace(root, [load])
    return root, load


def _done(root: Path, load: Workload, *, commit_twice: str | None = None) -> None:
    """Finish the workload by hand: contents, one commit per todo (one twice, if asked), status done."""
    status = StatusFile()
    for i in load.indexes():
        (root / load.path(i)).write_text(load.after(i))
        git(root, "add", load.path(i))
        todo = load.todo_id(i)
        for _ in range(2 if todo == commit_twice else 1):
            git(root, "commit", "-q", "--allow-empty", "-m", f"todo {i}\n\nTodo-Id: {todo}")
        sha = git(root, "rev-parse", "HEAD").strip()
        status.todos[todo] = TodoState(status=TodoStatus.DONE, commit=sha, attempts=1)
    (root / ".agent" / "status.json").write_text(dump_json(status))


def test_a_fresh_workspace_passes_the_quick_check_and_fails_the_final_one(ws: tuple[Path, Workload]) -> None:
    root, load = ws
    assert checks.quick_check(root, [load]) == []
    final = checks.final_check(root, [load])
    assert any("status.json" in p for p in final)  # nothing ran yet: no status document


def test_a_finished_workspace_passes_every_check(ws: tuple[Path, Workload]) -> None:
    root, load = ws
    _done(root, load)
    assert checks.quick_check(root, [load]) == []
    assert checks.final_check(root, [load]) == []
    assert checks.status_counts(root) == {"done": 3}


def test_a_todo_committed_twice_is_found(ws: tuple[Path, Workload]) -> None:
    root, load = ws
    _done(root, load, commit_twice="t-00002")
    assert checks.doubled(root) == ["t-00002"]
    assert "t-00002: committed more than once" in checks.quick_check(root, [load])
    assert any("t-00002: 2 commits" in p for p in checks.final_check(root, [load]))


def test_a_doubled_line_a_lost_todo_and_a_torn_state_file_are_found(ws: tuple[Path, Workload]) -> None:
    root, load = ws
    _done(root, load)
    (root / "f1.txt").write_text("file 1\nline 1\nline 1\n")
    status = StatusFile.model_validate_json((root / ".agent/status.json").read_text())
    del status.todos["t-00003"]
    (root / ".agent/status.json").write_text(dump_json(status))
    final = checks.final_check(root, [load])
    assert any(p.startswith("f1.txt: holds") for p in final)
    assert "t-00003: lost (no status)" in final
    (root / ".agent/checkpoints").mkdir()
    (root / ".agent/checkpoints/t-00001.json").write_text('{"todo_id": "t-00001", "stage": ')
    assert any(p.startswith(".agent/checkpoints/t-00001.json") for p in checks.state_file_problems(root))
    (root / ".agent/checkpoints/.t-00001.json.0123abcd.tmp").write_text("half")
    assert checks.leftover_temp_files(root) == [".agent/checkpoints/.t-00001.json.0123abcd.tmp"]


def test_a_failed_todo_may_end_failed_only_with_a_reason_and_its_file_untouched(
    ws: tuple[Path, Workload],
) -> None:
    root, load = ws
    _done(root, load)
    status = StatusFile.model_validate_json((root / ".agent/status.json").read_text())
    status.todos["t-00001"] = TodoState(status=TodoStatus.FAILED, error=None, attempts=1)
    (root / ".agent/status.json").write_text(dump_json(status))
    problems = checks.final_check(root, [load], allow_failed=True)
    assert "t-00001: failed without a reason" in problems
    assert any(p.startswith("f0.txt: holds") for p in problems)  # its edit is there, yet it failed


def test_the_migration_state_is_classified_before_after_or_mix() -> None:
    legacy = {
        ".agent/todos.json": b"{}",
        ".agent/checkpoints/a.json": json.dumps({"todo_id": "a", "stage": "started"}).encode(),
        ".agent/checkpoints/b.json": json.dumps({"todo_id": "b", "stage": "edited"}).encode(),
    }

    def v2(rel: str) -> bytes:
        return json.dumps({"schema_version": 2, "seq": 1, **json.loads(legacy[rel])}).encode()

    after = {
        **legacy,
        ".agent/checkpoints/a.json": v2(".agent/checkpoints/a.json"),
        ".agent/checkpoints/b.json": v2(".agent/checkpoints/b.json"),
    }
    assert classify(legacy, legacy) == "before"
    assert classify(after, legacy) == "after"
    assert (
        classify({**legacy, ".agent/checkpoints/a.json": after[".agent/checkpoints/a.json"]}, legacy) == "mix"
    )
    assert classify({**after, ".agent/todos.json": b"[]"}, legacy) == "mix"
    assert classify({k: v for k, v in legacy.items() if not k.endswith("b.json")}, legacy) == "mix"


def test_small_helpers() -> None:
    assert (
        reason_of("edit block 1 for f12.txt: missing '>>>>>>> REPLACE'")
        == "edit block # for # missing '>>>>>>> REPLACE'"
    )
    flat = {
        "rss_kb": {"first_half_max": 100, "second_half_max": 110},
        "fds": {"first_half_median": 40, "second_half_median": 45},
    }
    assert bounded(flat) == []
    grown = {
        "rss_kb": {"first_half_max": 100, "second_half_max": 200},
        "fds": {"first_half_median": 40, "second_half_median": 90},
    }
    assert len(bounded(grown)) == 2
    assert runner.expand(["crash", "fuzz"]) == [
        "crash-legacy",
        "crash-async",
        "crash-worker",
        "crash-migrate",
        "fuzz",
    ]
    assert runner.expand(None) == list(runner.TARGETS)
    with pytest.raises(ValueError, match="unknown target"):
        runner.expand(["everything"])


# Recorded by the soak (``soak(ctx, "async", 300, 3, ...)``: the quick run's 300 todos over 3
# workspaces, 20 batches of 15): open fds of the loop at rest, one sample per batch done.
PLATEAU_AT_REST = [39, 39, 35, 40, 40, 40, 39, 38, 34, 33, 32, 35, 38, 38, 36, 37, 36, 37, 37, 34]
# The same run with a deliberate leak in the loop (a sitecustomize keeping /dev/null open on
# every LLM request: about one descriptor per todo) ...
LEAK_EVERY_REQUEST_AT_REST = [53, 68, 83, 100, 115, 130, 145, 159, 174, 190]
LEAK_EVERY_REQUEST_AT_REST += [205, 222, 235, 248, 261, 278, 295, 308, 323, 337]
# ... and on every fifth request.
LEAK_EVERY_5TH_AT_REST = [36, 45, 48, 49, 50, 53, 55, 58, 66, 69, 72, 70, 74, 78, 82, 85, 88, 91, 94, 95]
# The tiny campaign's soak (18 todos, 6 batches of 3), which failed with "fds grew: median
# 3 -> 28": its half-second curve (t, RSS KiB, fds, threads), 3 fds for the first 5 s while
# the interpreter imports, and the same run at rest.
TINY_CURVE = [
    (0.52, 14028, 3, 1), (1.02, 16528, 3, 1), (1.52, 25196, 3, 1), (2.03, 33172, 3, 1),
    (2.61, 40732, 3, 1), (3.11, 42948, 3, 1), (3.64, 44780, 3, 1), (4.15, 46304, 3, 1),
    (4.66, 46768, 3, 1), (5.16, 49868, 6, 1), (5.69, 62288, 6, 1), (6.19, 66036, 6, 1),
    (6.7, 66528, 7, 1), (7.2, 67652, 6, 1), (7.71, 71540, 24, 11), (8.21, 73996, 25, 14),
    (8.72, 75832, 26, 14), (9.23, 75968, 28, 14), (9.73, 76108, 28, 14), (10.24, 76188, 28, 14),
    (10.79, 76292, 32, 15), (11.29, 76420, 42, 16), (11.8, 76476, 30, 16),
]  # fmt: skip
TINY_AT_REST = [(3, 75968, 28, 14), (6, 76108, 28, 14), (9, 76188, 28, 14)]
TINY_AT_REST += [(12, 76292, 28, 15), (15, 76440, 28, 16), (18, 76496, 28, 16)]


def _rest(
    fds: Sequence[int], *, threads: Sequence[int] = (), rss_kb: Sequence[int] = (), per_batch: int = 15
) -> list[tuple[int, procs.Sample]]:
    """Rest samples, one per batch of ``per_batch`` todos (threads 27 and 80 MiB unless given)."""
    return [
        (
            (i + 1) * per_batch,
            procs.Sample(
                t=float(i),
                rss_kb=rss_kb[i] if rss_kb else 80_000,
                fds=n,
                threads=threads[i] if threads else 27,
            ),
        )
        for i, n in enumerate(fds)
    ]


def test_a_short_soak_is_judged_at_rest_not_by_its_start_up() -> None:
    # The running curve's first half is the interpreter importing (3 fds) before the loop opens
    # its locks, watches and pools: the old judgement of the whole curve calls that growth.
    curve = procs.Curve([procs.Sample(t, rss, fds, th) for t, rss, fds, th in TINY_CURVE])
    assert bounded(curve.summary()) == ["fds grew: median 3 -> 28"]
    rest = [(n, procs.Sample(float(n), rss, fds, th)) for n, rss, fds, th in TINY_AT_REST]
    assert rest_bounded(rest) == []


def test_a_leak_raises_the_loop_at_rest_a_plateau_does_not() -> None:
    assert rest_bounded(_rest(PLATEAU_AT_REST)) == []
    assert rest_bounded(_rest(LEAK_EVERY_REQUEST_AT_REST)) == ["fds grew: median 130 -> 278"]
    assert rest_bounded(_rest(LEAK_EVERY_5TH_AT_REST)) == ["fds grew: median 53 -> 85"]


@pytest.mark.parametrize("seed", range(40))
def test_linear_growth_is_flagged_and_a_filling_pool_is_not(seed: int) -> None:
    rng = random.Random(seed)
    batches, per_batch = 20, 15  # the quick run's shape

    def noise(width: int) -> int:
        return rng.randint(-width, width)

    # A plateau: pools filling over the first batches (connections, threads), then noise.
    filled = [min(i + 1, 3) / 3 for i in range(batches)]
    fds = [31 + round(24 * f) + noise(8) for f in filled]
    threads = [14 + round(50 * f) + noise(2) for f in filled]
    rss = [76_000 + 300 * i + 50 * noise(20) for i in range(batches)]  # the status history grows
    assert rest_bounded(_rest(fds, threads=threads, rss_kb=rss)) == []
    # A leak of one descriptor per 6 todos, of 3 threads per batch, RSS doubling: each is found.
    leaking = [n + (i + 1) * per_batch // 6 for i, n in enumerate(fds)]
    assert [p.split(":")[0] for p in rest_bounded(_rest(leaking, threads=threads, rss_kb=rss))] == [
        "fds grew"
    ]
    more_threads = [n + 3 * i for i, n in enumerate(threads)]
    assert [p.split(":")[0] for p in rest_bounded(_rest(fds, threads=more_threads))] == ["threads grew"]
    fatter = [n + 4_000 * i for i, n in enumerate(rss)]
    assert [p.split(":")[0] for p in rest_bounded(_rest(fds, rss_kb=fatter))] == ["RSS grew"]


def test_the_report_merges_runs_and_renders_every_section(tmp_path: Path) -> None:
    run = {
        "campaign": "full",
        "started_at": "2026-01-01T00:00:00+00:00",
        "commit": "abc",
        "dirty": False,
        "machine": {"usable_cores": 2, "python": "3.11"},
        "load_during_run": {"mean": 1.0, "max": 2.0},
        "seconds": 10,
        "ok": True,
        "targets": {
            "crash-legacy": {
                "ok": True,
                "landed": 5,
                "landed_working": 4,
                "kills_planned": 5,
                "todos": 80,
                "unreadable_state": 0,
                "lost": 0,
                "doubled": 0,
                "wrong_content": 0,
            }
        },
    }
    written = report.update_report(run, tmp_path)
    second = {
        **run,
        "targets": {"fuzz": {"ok": True, "examples": {"config": 10}, "examples_total": 10, "failures": {}}},
    }
    report.update_report(second, tmp_path)
    record = json.loads((tmp_path / "reliability.json").read_text())
    assert sorted(record["targets"]) == ["crash-legacy", "fuzz"] and len(record["runs"]) == 2
    page = written[0].read_text()
    for heading in (
        "## 1. Crashes",
        "## 2. LLM faults",
        "## 3. Disk",
        "## 4. Hot reloads",
        "## 5. Hostile input",
        "## 6. The API",
        "## Defects the campaign found",
    ):
        assert heading in page
    assert "4 SIGKILLs while it worked" in page


def test_the_api_fuzzer_accepts_a_load_shedding_503_and_nothing_else_of_5xx() -> None:
    # Found in the full campaign on a loaded machine: the async server shed a request (its loop ran late) and
    # the fuzzer reported the clean 503 as a failure.
    from codeagent_app.chaos.fuzz_api import check_answer

    shed = b'{"error": {"code": "overloaded", "message": "too many requests in flight; retry in a second"}}'
    assert check_answer(503, shed, "application/json", "x") is None
    assert check_answer(503, b'{"error": {"code": "internal", "message": "boom"}}', "application/json", "x")
    assert check_answer(500, shed, "application/json", "x")
    assert check_answer(503, b"Service Unavailable", "text/plain", "x")
