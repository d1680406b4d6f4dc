"""PNG charts of a results document: throughput vs concurrency per profile, LLM overhead, idle cost.

Each chart's title names the targets it answers and this run's verdicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.report import IDLE_LABELS, T_IDLE_CPU, T_IDLE_WAKEUPS, T_LATENCY
from benchmarks.scenarios import CONTENDERS, REFERENCE, SHORT

#: The files :func:`draw` writes.
NAMES = ["throughput.png", "latency.png", "idle_cpu.png"]


def _verdict_text(results: dict[str, Any], *lines: str) -> str:
    marks = [v["pass"] for v in results["verdicts"] if v["line"] in lines and v.get("measured", True)]
    if not marks:
        return "not measured"
    return "PASS" if all(marks) else "FAIL" if not any(marks) else f"{sum(marks)}/{len(marks)} PASS"


def throughput_chart(results: dict[str, Any], path: Path) -> Path:
    """Todos per second against concurrency, one panel per profile, one line per contender, and the limit."""
    profiles = results["profiles"]
    fig, axes = plt.subplots(1, len(profiles), figsize=(6.5 * len(profiles), 5), squeeze=False)
    for ax, (name, prof) in zip(axes[0], profiles.items(), strict=True):
        levels = sorted(prof["levels"], key=int)
        for contender in CONTENDERS:
            points = [
                (int(lv), prof["levels"][lv][contender]) for lv in levels if contender in prof["levels"][lv]
            ]
            if not points:
                continue
            style = ":" if contender in REFERENCE else "-"
            ax.plot(
                [x for x, _ in points],
                [run["todos_per_s"] for _, run in points],
                style,
                marker="o",
                label=SHORT[contender],
            )
        limits = [
            (int(lv), min(r["limit_todos_per_s"] for r in prof["levels"][lv].values())) for lv in levels
        ]
        ax.plot(
            [x for x, _ in limits], [y for _, y in limits], "k--", marker="_", markersize=14, label="limit"
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("concurrency c")
        ax.set_ylabel("todos / s (sustained)")
        verdicts = [v for v in results["verdicts"] if f"{name} profile" in v["line"]]
        passed = sum(v["pass"] for v in verdicts if v.get("measured", True))
        measured = sum(1 for v in verdicts if v.get("measured", True))
        ax.set_title(f"{name} profile\nthroughput targets: {passed}/{measured} pass", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_chart(results: dict[str, Any], path: Path) -> Path:
    """Distribution (CDF) of the LLM request overhead of both clients at each in-flight level."""
    fig, ax = plt.subplots(figsize=(8, 5))
    for level, lat in sorted(results.get("latency", {}).items(), key=lambda kv: int(kv[0])):
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
    ax.set_title(f"{T_LATENCY}\nverdict: {_verdict_text(results, T_LATENCY)}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def idle_chart(results: dict[str, Any], path: Path) -> Path:
    """Idle CPU and wake-ups per contender."""
    idle = results.get("idle_cpu", {})
    names = list(idle)
    labels = [IDLE_LABELS.get(n, n).replace(", ", "\n") for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.bar(labels, [idle[n]["cpu_ms_per_s"] for n in names])
    left.set_ylabel("CPU ms per second while idle")
    right.bar(labels, [idle[n]["wakeups_per_s"] for n in names], color="tab:orange")
    right.set_ylabel("wake-ups per second while idle")
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize=6)
    fig.suptitle(
        f"{T_IDLE_WAKEUPS}; {T_IDLE_CPU}\nverdicts: {_verdict_text(results, T_IDLE_WAKEUPS, T_IDLE_CPU)}",
        fontsize=9,
    )
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
