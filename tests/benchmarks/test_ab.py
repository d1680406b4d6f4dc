"""The A/B benchmark suite end to end at its smallest size, and its pure helpers.

The smoke run checks that every figure is a measurement of this run: each
throughput, idle, latency and in-flight figure carries the monotonic instants
its child process recorded, they fall inside this test's own run, and the
rates and percentiles are recomputed here from those raw samples.
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from benchmarks import report
from benchmarks.ab import bench_app, run_bench
from benchmarks.measure import percentiles
from benchmarks.scenarios import CONTENDERS, make_plan


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], float, float]:
    """One smoke run of the suite (about 20 s): its output directory, results and the test's clock window."""
    out = tmp_path_factory.mktemp("bench")
    before = time.monotonic()
    code = run_bench(smoke=True, out=out, console=Console(file=io.StringIO()))
    after = time.monotonic()
    assert code == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return out, results, before, after


@pytest.mark.slow
def test_smoke_run_writes_every_report_file(smoke_run: tuple[Path, dict[str, Any], float, float]) -> None:
    out, results, _, _ = smoke_run
    for name in ("report.md", "results.json", "throughput.png", "latency.png", "idle_cpu.png"):
        assert (out / name).stat().st_size > 0, name
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "Verdicts" in text and "CPUs" in text and "Python" in text
    assert {v["line"] for v in results["verdicts"]} >= {
        report.A2_THROUGHPUT,
        report.A2_LATENCY,
        report.A2_IDLE,
        report.A2_CONCURRENT,
        report.T_LAG,
    }
    assert all(isinstance(v["pass"], bool) for v in results["verdicts"])


@pytest.mark.slow
def test_smoke_figures_are_measured_in_this_run(smoke_run: tuple[Path, dict[str, Any], float, float]) -> None:
    _, results, before, after = smoke_run
    meta = results["meta"]
    assert before <= meta["run_started_monotonic"] < meta["run_ended_monotonic"] <= after

    def inside(t0: float, t1: float) -> None:
        assert meta["run_started_monotonic"] < t0 < t1 < meta["run_ended_monotonic"]

    seen_rates = set()
    for level, runs in results["throughput"]["levels"].items():
        assert set(runs) == set(CONTENDERS)
        for name, run in runs.items():
            inside(run["started"], run["ended"])
            assert run["done"] == run["todos"] > 0 and run["failed"] == 0, (level, name)
            assert math.isclose(run["todos_per_s"], run["done"] / (run["ended"] - run["started"]))
            assert run["cpu_s"] > 0 and run["stub_cpu_s"] > 0
            assert results["figures"][f"throughput.c{level}.{name}.todos_per_s"] == run["todos_per_s"]
            seen_rates.add(run["todos_per_s"])
    assert len(seen_rates) > 1  # measured, not one constant
    for idle in results["idle_cpu"].values():
        inside(idle["window_started"], idle["window_started"] + idle["window_s"])
        assert idle["cpu_ms_per_s"] >= 0
    assert results["idle_cpu"]["legacy_loop"]["cpu_ms_per_s"] > 0  # the legacy loop polls
    for lat in results["latency"].values():
        for client in ("legacy", "async"):
            probe = lat[client]
            inside(probe["started"], probe["ended"])
            assert probe["matched"] == probe["requests"] == lat["requests"]
            samples = probe["overhead_samples_ms"]
            assert len(samples) == probe["matched"] and len(set(samples)) > 1
            assert math.isclose(percentiles(samples)["p50"], probe["overhead_ms"]["p50"], abs_tol=1e-3)
    inflight = results["inflight"]
    inside(inflight["started"], inflight["ended"])
    assert inflight["ok"] == inflight["requested"] and inflight["stub_max_in_flight"] >= 2


def test_comparison_against_an_older_run() -> None:
    old = {"meta": {"started_at": "then"}, "figures": {"a": 10.0, "b": 4.0, "gone": 1.0}}
    new: dict[str, Any] = {"figures": {"a": 15.0, "b": 2.0, "fresh": 3.0}}
    rows = {r["figure"]: r for r in report.comparison(new, old)}
    assert set(rows) == {"a", "b"}
    assert rows["a"]["change"] == pytest.approx(0.5) and rows["b"]["change"] == pytest.approx(-0.5)


def test_plans_grow_with_the_mode() -> None:
    smoke, quick, full = (make_plan(m) for m in ("smoke", "quick", "full"))
    assert quick.concurrency == (1, 10, 100) and full.concurrency == (1, 10, 100, 1000)
    assert smoke.inflight_target < quick.inflight_target < full.inflight_target == 10_000
    assert quick.todos_per_workspace[100] * quick.workspaces >= 100
    assert make_plan("quick", concurrency=[5]).concurrency == (5,)
    with pytest.raises(ValueError, match="unknown mode"):
        make_plan("huge")


def test_percentiles_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    figures = percentiles(values)
    assert figures["p50"] == 50.0 and figures["p99"] == 99.0 and figures["max"] == 100.0
    assert percentiles([]) == {}


def test_cli_help_and_bad_compare_file(tmp_path: Path) -> None:
    runner = CliRunner()
    assert "--quick" in runner.invoke(bench_app, ["--help"]).output
    result = runner.invoke(
        bench_app, ["--smoke", "--out", str(tmp_path), "--compare", str(tmp_path / "none.json")]
    )
    assert result.exit_code == 2


@pytest.mark.slow
def test_report_rendered_again_with_micro_figures(
    smoke_run: tuple[Path, dict[str, Any], float, float], tmp_path: Path
) -> None:
    """``--from-results`` runs nothing: the same measured figures, plus the micro-benchmarks given."""
    out, results, _, _ = smoke_run
    micro = {
        "benchmarks": [
            {"name": "test_direct_sync_call", "stats": {"min": 40e-6}},
            {"name": "test_routed_sync_call_mode_new", "stats": {"min": 1540e-6}},
            {"name": "test_todos_load[legacy]", "stats": {"min": 100e-6}},
            {"name": "test_todos_load[core_sync]", "stats": {"min": 110e-6}},
            {"name": "test_todos_load[async_to_sync]", "stats": {"min": 880e-6}},
        ]
    }
    (tmp_path / "micro.json").write_text(json.dumps(micro), encoding="utf-8")
    again = tmp_path / "again"
    result = CliRunner().invoke(
        bench_app,
        [
            "--from-results",
            str(out / "results.json"),
            "--micro-json",
            str(tmp_path / "micro.json"),
            "--out",
            str(again),
        ],
    )
    assert result.exit_code == 0, result.output
    text = (again / "report.md").read_text(encoding="utf-8")
    assert "bridge overhead per routed call, sync face (mode new): 1.50 µs" in text
    assert "| todos_load | 1.10x | 8.0x |" in text
    rendered = json.loads((again / "results.json").read_text(encoding="utf-8"))
    assert rendered["throughput"] == results["throughput"]
    assert [v["value"] for v in rendered["verdicts"]] == [v["value"] for v in results["verdicts"]]
    assert (again / "throughput.png").stat().st_size > 0
    missing = CliRunner().invoke(bench_app, ["--from-results", str(tmp_path / "none.json")])
    assert missing.exit_code == 2
