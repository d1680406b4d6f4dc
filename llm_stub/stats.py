"""Counters of the stub LLM: requests by HTTP version and path, faults, concurrency."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

RECENT_LIMIT = 2000
PEERS_LIMIT = 1_000_000


@dataclass(slots=True)
class RequestRecord:
    """One request as the stub saw it."""

    seq: int
    method: str
    path: str
    http_version: str
    started: float
    fault: str | None = None
    status: int | None = None
    rule: str | None = None
    stream: bool = False
    #: the todo the prompt is about (chat completions whose prompt names one)
    todo_id: str | None = None
    duration_ms: float | None = None
    #: the latency the stub drew for this request (chat completions only)
    latency_ms: float | None = None

    def view(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "seq": self.seq,
            "method": self.method,
            "path": self.path,
            "http_version": self.http_version,
            "fault": self.fault,
            "status": self.status,
            "rule": self.rule,
            "stream": self.stream,
            "todo_id": self.todo_id,
            "duration_ms": self.duration_ms,
            "latency_ms": self.latency_ms,
        }


@dataclass
class StubStats:
    """Counters since start or the last reset. Only ``/v1/...`` requests are counted.

    ``status`` is ``None`` in a record while the request is in flight, and
    stays ``None`` for a request that was reset or abandoned by its client.
    ``connections_seen`` in the view counts distinct client ``host:port``
    pairs, i.e. TCP connections.
    """

    requests_total: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    by_http_version: Counter[str] = field(default_factory=Counter)
    by_path: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    by_fault: Counter[str] = field(default_factory=Counter)
    by_rule: Counter[str] = field(default_factory=Counter)
    #: chat completions per todo id (what a retry storm would show: one todo asked again and again)
    by_todo: Counter[str] = field(default_factory=Counter)
    client_disconnects: int = 0
    peers: set[str] = field(default_factory=set)
    recent: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=RECENT_LIMIT))
    #: how many latencies were drawn (one per chat completion that got past validation), and their sum
    latency_draws: int = 0
    latency_drawn_s: float = 0.0
    _seq: int = 0

    def begin(self, method: str, path: str, http_version: str, peer: str = "") -> RequestRecord:
        """Count a request that starts now (``peer``: the client's ``host:port``) and return its record."""
        self._seq += 1
        if len(self.peers) < PEERS_LIMIT:
            self.peers.add(peer)
        self.requests_total += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.by_http_version[http_version] += 1
        self.by_path[path] += 1
        record = RequestRecord(self._seq, method, path, http_version, time.monotonic())
        self.recent.append(record)
        return record

    def drew_latency(self, seconds: float) -> None:
        """Count the latency drawn for a chat completion."""
        self.latency_draws += 1
        self.latency_drawn_s += seconds

    def end(self, record: RequestRecord) -> None:
        """Count a request that has finished (answered, failed or abandoned)."""
        self.in_flight -= 1
        record.duration_ms = round((time.monotonic() - record.started) * 1000.0, 3)
        if record.status is not None:
            self.by_status[str(record.status)] += 1
        if record.fault is not None:
            self.by_fault[record.fault] += 1
        if record.rule is not None:
            self.by_rule[record.rule] += 1
        if record.todo_id is not None and (record.todo_id in self.by_todo or len(self.by_todo) < PEERS_LIMIT):
            self.by_todo[record.todo_id] += 1

    def reset(self) -> None:
        """Zero every counter; requests in flight stay counted as in flight."""
        in_flight = self.in_flight
        self.requests_total = 0
        self.max_in_flight = in_flight
        counters = (
            self.by_http_version,
            self.by_path,
            self.by_status,
            self.by_fault,
            self.by_rule,
            self.by_todo,
        )
        for counter in counters:
            counter.clear()
        self.client_disconnects = 0
        self.latency_draws = 0
        self.latency_drawn_s = 0.0
        self.peers.clear()
        self.recent.clear()

    def view(self, recent: int = 50, *, by_todo: bool = False) -> dict[str, Any]:
        """A JSON-ready snapshot with the last ``recent`` request records (and every todo's count, asked)."""
        records = list(self.recent)[-recent:] if recent > 0 else []
        per_todo = self.by_todo.values()
        extra: dict[str, Any] = {"by_todo": dict(self.by_todo)} if by_todo else {}
        return extra | {
            "requests_total": self.requests_total,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "by_http_version": dict(self.by_http_version),
            "by_path": dict(self.by_path),
            "by_status": dict(self.by_status),
            "by_fault": dict(self.by_fault),
            "by_rule": dict(self.by_rule),
            "client_disconnects": self.client_disconnects,
            "connections_seen": len(self.peers),
            "latency_draws": self.latency_draws,
            "latency_drawn_mean_ms": (
                round(1000.0 * self.latency_drawn_s / self.latency_draws, 3) if self.latency_draws else None
            ),
            "todos_seen": len(self.by_todo),
            "max_requests_per_todo": max(per_todo, default=0),
            "recent": [r.view() for r in records],
        }
