"""The A/B benchmark suite end to end at its smallest size, and its pure helpers.

The smoke run checks that every figure is a measurement of this run: each
throughput, idle, latency and in-flight figure carries the monotonic instants
its child processes recorded, they fall inside this test's own run, and the
rates and percentiles are recomputed here from those raw samples. The shipped
contenders run as real ``codeagent run`` child processes, under both profiles.
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from rich.console import Console
from typer.testing import CliRunner

from benchmarks import report
from benchmarks.ab import bench_app, run_bench
from benchmarks.measure import percentiles, scratch_filesystem, sustained_rate
from benchmarks.scenarios import ASYNC_SHIPPED, CONTENDERS, REFERENCE, make_plan
from benchmarks.shipped import async_command, async_limits, short_command, supports_workers


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
    assert "Verdicts" in text and "CPUs" in text and "Python" in text and "load average" in text
    for words in ("cpu profile", "realistic profile", "todos/s per core", "workers", "limits", "os.wait4"):
        assert words in text, words
    lines = {v["line"] for v in results["verdicts"]}
    assert lines >= {
        report.T_CPU_LOOP,
        report.T_CPU_THREADS,
        report.T_REAL_THREADS,
        report.T_REAL_LOOP,
        report.T_REAL_LIMIT,
        report.T_IDLE_WAKEUPS,
        report.T_IDLE_CPU,
        report.T_LATENCY,
    }
    assert not any(line.startswith("A2") for line in lines)
    for verdict in results["verdicts"]:
        assert isinstance(verdict["pass"], bool) and isinstance(verdict["measured"], bool)
        assert verdict["contender"] not in REFERENCE  # no verdict reads the bare kernel
        assert verdict["measured"] or not verdict["pass"]
    # the smoke levels are not the targets' levels: those verdicts say so instead of passing or failing
    unmeasured = {v["line"] for v in results["verdicts"] if not v["measured"]}
    assert report.T_CPU_LOOP in unmeasured and report.T_REAL_THREADS in unmeasured


@pytest.mark.slow
@pytest.mark.slow
def test_smoke_run_names_the_workspaces_file_system(
    smoke_run: tuple[Path, dict[str, Any], float, float],
) -> None:
    out, results, _, _ = smoke_run
    fs = results["meta"]["scratch_fs"]
    assert fs == scratch_filesystem(Path(fs["path"]).parent) | {"path": fs["path"]}
    assert f"Workspaces: on {fs['fstype']}" in (out / "report.md").read_text(encoding="utf-8")
    assert not Path(fs["path"]).exists()  # every line's workspaces, deleted once at the end


def test_scratch_filesystem_finds_the_mount_of_a_path(tmp_path: Path) -> None:
    fs = scratch_filesystem(tmp_path)
    mounts = {p.mountpoint: p for p in psutil.disk_partitions(all=True)}
    assert fs["mountpoint"] in mounts and fs["fstype"] == mounts[fs["mountpoint"]].fstype
    assert str(tmp_path.resolve()).startswith(fs["mountpoint"].rstrip("/") + "/")
    assert ("journal" in fs) == (fs["fstype"] == "ext4")
    if Path("/dev/shm").is_dir():
        assert scratch_filesystem(Path("/dev/shm"))["mountpoint"] == "/dev/shm"


def test_the_report_explains_an_ext4_without_a_journal() -> None:
    meta = {
        "scratch_fs": {
            "fstype": "ext4",
            "journal": False,
            "device": "/dev/vda",
            "mountpoint": "/",
            "options": "rw",
        }
    }
    [text, _] = report._scratch_fs(meta)
    assert text.startswith("Workspaces: on ext4 without a journal (/dev/vda at /, rw).")
    assert "freed in the last minute" in text
    meta["scratch_fs"] = {"fstype": "tmpfs", "device": "tmpfs", "mountpoint": "/dev/shm", "options": "rw"}
    assert "freed" not in report._scratch_fs(meta)[0]
    assert report._scratch_fs({}) == []


def test_smoke_figures_are_measured_in_this_run(smoke_run: tuple[Path, dict[str, Any], float, float]) -> None:
    _, results, before, after = smoke_run
    meta = results["meta"]
    assert before <= meta["run_started_monotonic"] < meta["run_ended_monotonic"] <= after

    def inside(t0: float, t1: float) -> None:
        assert meta["run_started_monotonic"] < t0 < t1 < meta["run_ended_monotonic"]

    seen_rates = set()
    assert set(results["profiles"]) == {"cpu", "realistic"}
    for profile, prof in results["profiles"].items():
        for level, runs in prof["levels"].items():
            expected = set(prof["profile"]["contenders"][level])
            assert set(runs) == expected and expected <= set(CONTENDERS)
            for name, run in runs.items():
                inside(run["started"], run["ended"])
                assert run["done"] == run["todos"] > 0 and run["failed"] == 0, (profile, level, name)
                assert math.isclose(run["batch_todos_per_s"], run["done"] / (run["ended"] - run["started"]))
                assert run["todos_per_s"] == run["sustained_todos_per_s"] > 0
                assert run["cpu_s"] > 0 and run["stub_cpu_s"] > 0
                assert run["stub"]["requests"] >= run["done"] and run["stub"]["max_in_flight"] >= 1
                assert run["stub"]["latency_draws"] >= run["done"]
                assert all(p["exit_code"] == 0 for p in run["per_process"])
                assert math.isclose(run["cpu_s"], sum(p["cpu_s"] for p in run["per_process"]))
                key = f"throughput.{profile}.c{level}.{name}.todos_per_s"
                assert results["figures"][key] == run["todos_per_s"]
                assert run["workers"] >= 1 and run["limits"]
                seen_rates.add(run["todos_per_s"])
                # the shipped contenders are the real commands, in child processes of their own
                if name == "legacy_loop":
                    assert run["command"].startswith("codeagent run --loop legacy -w ")
                    assert run["processes"] == run["todos"] // int(
                        prof["profile"]["legacy_loop_todos_per_workspace"][level]
                    )
                    assert run["processed_reported"] == run["done"]
                elif name in ASYNC_SHIPPED:
                    assert run["command"].startswith("codeagent run --loop async")
                    assert "--until-idle" in run["command"] and "--max-concurrency" in run["command"]
                    if supports_workers():
                        assert f"--workers {run['workers']}" in run["command"]
                    assert run["processes"] == 1 and run["processed_reported"] == run["done"]
    assert results["profiles"]["realistic"]["stub_options"]["draws"] == "prompt"
    real = results["profiles"]["realistic"]["levels"]["4"]
    # every line of the realistic profile met the same latencies (draws keyed by prompt): the same
    # drawn mean for the same todos
    means = {n: r["stub"]["latency_mean_ms"] for n, r in real.items() if n != "legacy_loop"}
    assert len({round(m, 3) for m in means.values()}) == 1, means
    assert len(seen_rates) > 1  # measured, not one constant
    assert set(results["idle_cpu"]) == {"legacy_loop", "async_default", "async_w1", "bare_kernel"}
    for idle in results["idle_cpu"].values():
        inside(idle["window_started"], idle["window_started"] + idle["window_s"])
        assert idle["cpu_ms_per_s"] >= 0 and idle["processes"] >= 1
    assert results["idle_cpu"]["legacy_loop"]["cpu_ms_per_s"] > 0  # the legacy loop polls
    assert results["idle_cpu"]["legacy_loop"]["command"] == "codeagent run --loop legacy -w ws00"
    for name, startup in results["startup"].items():
        assert startup["cpu_s"] > 0 and startup["wall_s"] > 0, name
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
    assert [p.name for p in full.profiles] == ["cpu", "realistic"] == [p.name for p in quick.profiles]
    assert full.profile("cpu").levels == (1, 10, 100, 1000) and full.profile("realistic").levels == (
        100,
        1000,
    )
    assert quick.profile("cpu").levels == (100,) == quick.profile("realistic").levels
    assert smoke.inflight_target < quick.inflight_target < full.inflight_target == 10_000
    # every target's contenders run at its level in the full run
    cpu, real = full.profile("cpu"), full.profile("realistic")
    assert {"legacy_loop", "legacy_threads", "async_wn"} <= set(cpu.contenders[100])
    assert quick.profile("realistic").contenders[100] == ("async_wn",)
    assert {"legacy_loop", "async_w1", "async_wn"} <= set(real.contenders[100])
    assert {"legacy_threads", "async_w1", "async_wn"} <= set(real.contenders[1000])
    assert "bare_kernel" not in real.contenders[100] + real.contenders[1000]
    # the legacy loop is not run where its deployment (min(c, W) processes) repeats a lower level's
    assert "legacy_loop" not in cpu.contenders[1000] and "legacy_loop" in cpu.skipped[1000]
    assert cpu.todos_per_workspace[100] * full.workspaces >= 10 * 100  # about 10 rounds at c = 100
    assert real.todos_each("legacy_loop", 100) < real.todos_each("async_wn", 100)
    assert real.stub["latency_ms"] == 2000 and real.stub["latency_p99_ms"] == 10000
    assert real.stub["fault_rates"] == {"429": 0.03, "hang": 0.005}
    assert real.config("http://x/v1") == cpu.config("http://x/v1")  # the same client config for every line
    assert make_plan("quick", concurrency=[5]).profile("cpu").levels == (5,)
    assert [p.name for p in make_plan("full", profile="cpu").profiles] == ["cpu"]
    with pytest.raises(ValueError, match="unknown mode"):
        make_plan("huge")
    with pytest.raises(ValueError, match="unknown profile"):
        make_plan("quick", profile="fast")


def test_async_command_lines() -> None:
    limits = async_limits(100, 10)
    assert limits == {"max_concurrency": 100, "per_workspace": 10, "llm_slots": 100, "file_slots": 100}
    assert async_limits(1000, 10)["per_workspace"] == 100 and async_limits(1, 10)["per_workspace"] == 1
    command = async_command([Path("/w/ws00"), Path("/w/ws01")], workers=2, limits=limits)
    text = short_command(command)
    assert text.startswith("codeagent run --loop async --workers 2 -w ws00 -w ws01 --until-idle")
    assert "--per-workspace 10" in text and "--file-slots 100" in text
    default = short_command(async_command([Path("/w/a")], workers=None, until_idle=False))
    assert default == "codeagent run --loop async -w a"


def test_sustained_rate_leaves_out_start_and_drain() -> None:
    # 100 completions one per 0.1 s, after a 5 s start-up, and a last one 30 s later (a hang's timeout)
    instants = [5 + 0.1 * i for i in range(100)] + [45.0]
    rate, window = sustained_rate(instants) or (0.0, 0.0)
    assert rate == pytest.approx(10.0) and window == pytest.approx(8.0)
    assert sustained_rate([1.0, 2.0]) is None


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
    assert rendered["profiles"] == results["profiles"]
    assert [v["value"] for v in rendered["verdicts"]] == [v["value"] for v in results["verdicts"]]
    assert (again / "throughput.png").stat().st_size > 0
    missing = CliRunner().invoke(bench_app, ["--from-results", str(tmp_path / "none.json")])
    assert missing.exit_code == 2
    (tmp_path / "old.json").write_text(json.dumps({"meta": {}, "throughput": {}}), encoding="utf-8")
    older = CliRunner().invoke(bench_app, ["--from-results", str(tmp_path / "old.json")])
    assert older.exit_code == 2


def test_client_verdicts_read_the_micro_tails_and_the_one_in_flight_overhead() -> None:
    """The LLM client's lines: p50 overhead at 1 in flight from the suite, tails and hedges from the micro JSON."""

    def tails(p50: float, p99: float, **more: Any) -> dict[str, Any]:
        return {
            "wall_p50_ms": p50,
            "wall_p99_ms": p99,
            "requests": 2000,
            "in_flight": 50,
            "errors": 0,
            **more,
        }

    results: dict[str, Any] = {
        "profiles": {},
        "latency": {
            "1": {"legacy": {"overhead_ms": {"p50": 1.5}}, "async": {"overhead_ms": {"p50": 1.2}}},
        },
        "micro": {
            "extra": {
                report.TAILS_TEST.format(client="legacy"): tails(208.0, 1500.0),
                report.TAILS_TEST.format(client="async"): tails(
                    201.0, 1100.0, hedges=100, hedge_wins=60, hedge_share=0.05
                ),
            }
        },
    }
    by_line = {v["line"]: v for v in report._client_verdicts(results)}
    assert by_line[report.T_OVERHEAD_1]["pass"] and by_line[report.T_OVERHEAD_1]["value"] == pytest.approx(
        0.8
    )
    assert by_line[report.T_TAILS_P50]["pass"]
    assert not by_line[report.T_TAILS_P99]["pass"]  # 1100 / 1500 = 0.73 > 0.7
    assert by_line[report.T_TAILS_P99]["value"] == pytest.approx(1100 / 1500)
    assert by_line[report.T_HEDGES]["pass"]
    del results["micro"]
    unmeasured = {v["line"] for v in report._client_verdicts(results) if not v["measured"]}
    assert unmeasured == {report.T_TAILS_P99, report.T_TAILS_P50, report.T_HEDGES}


def test_codeagent_bench_has_the_profile_option(tmp_path: Path) -> None:
    from codeagent_app.cli import app

    runner = CliRunner()
    assert "--profile" in runner.invoke(app, ["bench", "--help"]).output
    bad = runner.invoke(app, ["bench", "--smoke", "--profile", "fast", "--out", str(tmp_path)])
    assert bad.exit_code == 2
