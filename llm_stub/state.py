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
        #: Set once ``options.hold_until_in_flight`` API requests are in flight at once.
        self.hold_open = asyncio.Event()

    def new_run(self) -> None:
        """Fresh loop-bound events for a (re)start of the server."""
        self.stopping = asyncio.Event()
        self.idle = asyncio.Event()
        if self.stats.in_flight == 0:
            self.idle.set()
        self.hold_open = asyncio.Event()

    def begin(self, method: str, path: str, http_version: str, peer: str) -> RequestRecord:
        """Count a request in (see :meth:`StubStats.begin`)."""
        self.idle.clear()
        record = self.stats.begin(method, path, http_version, peer)
        self._check_hold()
        return record

    def _check_hold(self) -> None:
        """Open the hold once enough requests are in flight together (see ``hold_until_in_flight``)."""
        wanted = self.options.hold_until_in_flight
        if wanted and self.stats.in_flight >= wanted:
            self.hold_open.set()

    def held(self) -> bool:
        """Whether a chat completion starting now must wait for the hold to open."""
        return bool(self.options.hold_until_in_flight) and not self.hold_open.is_set()

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
        if "hold_until_in_flight" in changes:  # a new hold, closed until reached
            self.hold_open.clear()
            self._check_hold()
        return new

    def reset(self) -> None:
        """Zero the counters, forget scripted faults and close the hold (see ``hold_until_in_flight``)."""
        self.stats.reset()
        self.faults.clear()
        self.hold_open.clear()
        self._check_hold()
