"""The fleet benchmark's parts: the sustained rate, the queue-only figure on a real database, the report."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.fleet import queue_overhead, render, sustained_rate


def test_sustained_rate_counts_the_middle_of_the_completions() -> None:
    assert sustained_rate([1.0] * 5) == 0.0  # too few to say
    times = [float(i) for i in range(100)]  # one completion a second
    assert sustained_rate(times) == pytest.approx(1.0)
    tail = [*times, 500.0]  # a hung todo at the end does not drag the sustained rate down
    assert sustained_rate(tail) == pytest.approx(1.0, rel=0.05)


def test_the_queue_alone_costs_database_time_per_drain(pg_server: str) -> None:
    figure = queue_overhead(pg_server, 20)
    assert figure["drains"] == 20
    assert 0 < figure["db_ms_per_drain"] < 1000


def test_the_report_names_cores_profile_and_every_line() -> None:
    results: dict[str, Any] = {
        "when": "now",
        "machine": {"cpus": 2, "python": "3.11"},
        "load_before": [0.1, 0.1, 0.1],
        "load_after": [0.2, 0.2, 0.2],
        "postgres": "15",
        "commit": "abc",
        "plan": {"workspaces": 12, "todos_each": 100, "concurrency": 12},
        "lines": [
            {
                "workers": w,
                "concurrency_per_worker": 12 // w,
                "todos": 1200,
                "wall_s": 60.0,
                "todos_per_s_sustained": 30.0 * w,
                "todos_per_s_batch": 20.0,
                "db_ms_per_todo": 5.0,
                "drains_per_todo": 0.01,
                "worker_cpu_ms_per_todo": 20.0 + w,
                "machine_cpu_ms_per_todo": 40.0 + w,
                "cores_busy": 1.5,
                "done_by_worker": [1200 // w] * w,
            }
            for w in (1, 2, 4)
        ],
        "queue": {"drains": 500, "db_ms_per_drain": 1.5},
    }
    text = render(results)
    assert "2 CPUs" in text and "median 2 s, p99 10 s" in text and "commit abc" in text
    assert (
        "| 4 | 3 | 1200 | 60.0 | 120.0 | 20.0 | 60.00 | 5.0 | 0.01 | 24.0 | 44.0 | 1.5 | 300, 300, 300, 300 |"
        in text
    )
    assert "1.5 ms of database time per drain" in text
