"""Per-call routing decisions from the in-memory flag snapshot (no I/O on this path).

``canary`` is sticky per todo id and monotonic as the percentage grows: each
(component, todo id) pair hashes to a fixed point in [0, 100); the call goes
to the new path when that point is below the percentage, so raising the
percentage only ever moves todos from legacy to new.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from enum import Enum

from codeagent.context import current_todo
from feature_flags import FlagSet, FlagStore, Mode


class Route(Enum):
    """Where one call goes."""

    LEGACY = "legacy"
    NEW = "new"
    SHADOW = "shadow"


@dataclass(frozen=True, slots=True)
class Decision:
    """A routing decision; for shadow, ``serve`` says which path's result is returned."""

    route: Route
    serve: str = "legacy"


_LEGACY = Decision(Route.LEGACY)
_NEW = Decision(Route.NEW)


def canary_point(component: str, todo_id: str) -> float:
    """The fixed point in [0, 100) of a (component, todo) pair."""
    digest = hashlib.blake2b(f"{component}\x00{todo_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 / 100


class Router:
    """Decides, per call, which implementation of a component runs."""

    def __init__(self, store: FlagStore, rng: random.Random | None = None) -> None:
        self.store = store
        self._rng = rng or random.Random()
        self._seen: FlagSet | None = None
        self._fixed: dict[str, Decision] = {}

    def decide(self, component: str, todo_id: str | None = None) -> Decision:
        """Route one call of ``component`` (``todo_id`` defaults to the current todo's)."""
        flags = self.store.flags
        if flags is not self._seen:
            # A new snapshot: forget the decisions that only depended on the old one.
            self._fixed = {}
            self._seen = flags
        fixed = self._fixed.get(component)
        if fixed is not None:
            return fixed
        flag = flags.flag(component)
        mode = flag.mode
        if mode is Mode.LEGACY:
            self._fixed[component] = _LEGACY
            return _LEGACY
        if mode is Mode.NEW:
            self._fixed[component] = _NEW
            return _NEW
        if mode is Mode.CANARY:
            todo = todo_id if todo_id is not None else current_todo.get()
            if todo is None:
                # Calls outside any todo (start-up, API reads) stay on the proven path.
                return _LEGACY
            return _NEW if canary_point(component, todo) < flag.percent else _LEGACY
        if flag.sample < 1.0 and self._rng.random() >= flag.sample:
            return _NEW if flag.serve == "new" else _LEGACY
        return Decision(Route.SHADOW, flag.serve)
