"""PNG charts of a results document: throughput vs concurrency, LLM overhead distribution, idle CPU.

Each chart's title names the acceptance line it answers and the verdict of this run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.report import A2_IDLE, A2_LATENCY, A2_THROUGHPUT
from benchmarks.scenarios import CONTENDERS, LABELS


def _verdict_text(results: dict[str, Any], line: str) -> str:
    marks = [v["pass"] for v in results["verdicts"] if v["line"] == line]
    if not marks:
        return "n/a"
    return "PASS" if all(marks) else "FAIL" if not any(marks) else f"{sum(marks)}/{len(marks)} PASS"


def throughput_chart(results: dict[str, Any], path: Path) -> Path:
    """Todos per second against concurrency, one line per contender, and the physical limit."""
    through = results["throughput"]
    levels = sorted(through["levels"], key=int)
    xs = [int(level) for level in levels]
    fig, ax = plt.subplots(figsize=(8, 5))
    for name in CONTENDERS:
        ax.plot(
            xs, [through["levels"][lv][name]["todos_per_s"] for lv in levels], marker="o", label=LABELS[name]
        )
    ax.plot(xs, [through["physical_limit_todos_per_s"][lv] for lv in levels], "k--", label="physical limit")
    ax.set_xscale("log")
    ax.set_xlabel("concurrency (todos in flight allowed)")
    ax.set_ylabel("todos / s")
    ax.set_title(f"{A2_THROUGHPUT}\nverdict: {_verdict_text(results, A2_THROUGHPUT)}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_chart(results: dict[str, Any], path: Path) -> Path:
    """Distribution (CDF) of the LLM request overhead of both clients at each in-flight level."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for level, lat in sorted(results["latency"].items(), key=lambda kv: int(kv[0])):
        for client, style in (("legacy", "-"), ("async", "--"), ("async_http1", ":")):
            if client not in lat:
                continue
            samples = sorted(lat[client]["overhead_samples_ms"])
            if not samples:
                continue
            ys = [(i + 1) / len(samples) for i in range(len(samples))]
            ax.plot(samples, ys, style, label=f"{client} client, {level} in flight")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("overhead per request, ms (client-seen minus stub's own time)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"{A2_LATENCY}\nverdict: {_verdict_text(results, A2_LATENCY)}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def idle_chart(results: dict[str, Any], path: Path) -> Path:
    """Idle CPU per contender."""
    names = list(results["idle_cpu"])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar([LABELS.get(n, n) for n in names], [results["idle_cpu"][n]["cpu_ms_per_s"] for n in names])
    ax.set_ylabel("CPU ms per second while idle")
    ax.set_title(f"{A2_IDLE}\nverdict: {_verdict_text(results, A2_IDLE)}", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Every chart into ``out_dir``; return their paths."""
    return [
        throughput_chart(results, out_dir / "throughput.png"),
        latency_chart(results, out_dir / "latency.png"),
        idle_chart(results, out_dir / "idle_cpu.png"),
    ]
