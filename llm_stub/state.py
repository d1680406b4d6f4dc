"""What every request of one stub server shares: options, rules, faults, counters, stop flags."""

from __future__ import annotations

import asyncio
from typing import Any

from llm_stub.faults import FaultPlan
from llm_stub.options import StubOptions, changed_options
from llm_stub.rules import RuleBook
from llm_stub.stats import RequestRecord, StubStats


class StubState:
    """What every request shares: options, rules, the fault plan, counters, the stop flag.

    Only ever touched from the server's event loop.
    """

    def __init__(self, options: StubOptions) -> None:
        self.options = options
        self.rules = RuleBook.load(options.rules_path)
        self.faults = FaultPlan(options)
        self.stats = StubStats()
        self.stopping = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()

    def new_run(self) -> None:
        """Fresh loop-bound events for a (re)start of the server."""
        self.stopping = asyncio.Event()
        self.idle = asyncio.Event()
        if self.stats.in_flight == 0:
            self.idle.set()

    def begin(self, method: str, path: str, http_version: str, peer: str) -> RequestRecord:
        """Count a request in (see :meth:`StubStats.begin`)."""
        self.idle.clear()
        return self.stats.begin(method, path, http_version, peer)

    def end(self, record: RequestRecord) -> None:
        """Count a request out; the server is idle again when none is left in flight."""
        self.stats.end(record)
        if self.stats.in_flight == 0:
            self.idle.set()

    def configure(self, changes: dict[str, Any]) -> StubOptions:
        """Apply option changes (validated first; a bad rules file changes nothing)."""
        new = changed_options(self.options, changes)
        if new.rules_path != self.options.rules_path:
            self.rules = RuleBook.load(new.rules_path)
        self.options = new
        self.faults.configure(new)
        return new

    def reset(self) -> None:
        """Zero the counters and forget scripted faults."""
        self.stats.reset()
        self.faults.clear()
