"""MetricsCollector: counters and latency histograms per component and per todo step.

Each collector owns its :class:`prometheus_client.CollectorRegistry` (never the
process-global one), so several kernels, or tests, never share counters. The
exposition (:meth:`MetricsCollector.render`) is the Prometheus text format
served at ``GET /metrics``.

Several worker processes behind one port (``--workers N``) use
prometheus_client's multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` set
before ``prometheus_client`` is imported, every process writes its values to
files there, and :meth:`MetricsCollector.render` of the process that serves
the API aggregates them (counters and histograms summed; gauges summed over
live processes).

Families:

* ``codeagent_component_operations_total{component, operation, outcome}``
* ``codeagent_component_latency_seconds{component, operation}`` (histogram)
* ``codeagent_todo_step_seconds{step}`` (histogram: plan, edit, commit, total)
* ``codeagent_todos_total{workspace, outcome}`` (done, failed, interrupted)
* ``codeagent_todos_in_flight`` / ``codeagent_todos_queued`` (gauges)
* ``codeagent_resource_in_use{resource}`` (gauge: llm_slots, todo_slots ...)
* ``codeagent_http_requests_total{method, route, status}`` and
  ``codeagent_http_request_seconds{route}`` (histogram)
* ``codeagent_events_published_total``, ``codeagent_config_reloads_total{outcome}``
* ``codeagent_event_loop{loop}`` (1 for the loop in use: uvloop or asyncio)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

#: Where every process of a worker set writes its metrics (prometheus_client reads it at import).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The multiprocess directory of this process, or ``None`` when it runs alone."""
    return os.environ.get(MULTIPROC_ENV) or None


def forget_process(pid: int) -> None:
    """Drop a dead worker's live gauges from the aggregate (its counters stay counted)."""
    directory = multiprocess_dir()
    if directory is not None:
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


#: Buckets from 1 ms to 2 min: a state write sits at the low end, an LLM call at the high one.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)


class MetricsCollector:
    """Counters, gauges and latency histograms of one kernel, in their own registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.operations = Counter(
            "codeagent_component_operations",
            "Component operations by outcome.",
            ["component", "operation", "outcome"],
            registry=reg,
        )
        self.latency = Histogram(
            "codeagent_component_latency_seconds",
            "Latency of component operations.",
            ["component", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.todo_steps = Histogram(
            "codeagent_todo_step_seconds",
            "Time spent in each step of a todo (plan, edit, commit) and in the whole todo (total).",
            ["step"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.todos = Counter(
            "codeagent_todos", "Todos finished by outcome.", ["workspace", "outcome"], registry=reg
        )
        self.in_flight = Gauge(
            "codeagent_todos_in_flight", "Todos being worked on.", registry=reg, multiprocess_mode="livesum"
        )
        self.queued = Gauge(
            "codeagent_todos_queued", "Todos waiting for a slot.", registry=reg, multiprocess_mode="livesum"
        )
        self.resources = Gauge(
            "codeagent_resource_in_use",
            "Slots in use per limited resource.",
            ["resource"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.limits = Gauge(
            "codeagent_resource_limit",
            "Slots available per limited resource: the ceiling of one worker process.",
            ["resource"],
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.http_requests = Counter(
            "codeagent_http_requests",
            "API requests by route and status.",
            ["method", "route", "status"],
            registry=reg,
        )
        self.http_latency = Histogram(
            "codeagent_http_request_seconds",
            "API request latency by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.events = Counter("codeagent_events_published", "Events published on the bus.", registry=reg)
        self.event_loop = Gauge(
            "codeagent_event_loop",
            "Kernels running on each event loop (1 per process: uvloop or asyncio).",
            ["loop"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.config_reloads = Counter(
            "codeagent_config_reloads", "Configuration reloads by outcome.", ["outcome"], registry=reg
        )

    def observe(self, component: str, operation: str, seconds: float, outcome: str = "ok") -> None:
        """Record one finished operation of a component."""
        self.latency.labels(component, operation).observe(seconds)
        self.operations.labels(component, operation, outcome).inc()

    @contextmanager
    def timed(self, component: str, operation: str) -> Iterator[None]:
        """Time the block as one operation; the outcome is ``error`` when it raises, ``cancelled`` when cancelled.

        A plain (non-async) context manager: it does no I/O, so it is safe around an ``await``.
        """
        start = time.perf_counter()
        outcome = "ok"
        try:
            yield
        except Exception:
            outcome = "error"
            raise
        except BaseException:
            outcome = "cancelled"
            raise
        finally:
            self.observe(component, operation, time.perf_counter() - start, outcome)

    def todo_step(self, step: str, seconds: float) -> None:
        """Record the duration of one step of a todo."""
        self.todo_steps.labels(step).observe(seconds)

    def todo_finished(self, workspace: str, outcome: str) -> None:
        """Count one todo that ended ``done``, ``failed`` or ``interrupted``."""
        self.todos.labels(workspace, outcome).inc()

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one API request."""
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of every worker process, in multiprocess mode)."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        aggregate = CollectorRegistry()
        MultiProcessCollector(aggregate, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(aggregate)
