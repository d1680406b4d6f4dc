"""Shadow-run records: what both paths returned when they disagreed, as JSON lines.

The bridge writes them; the flags CLI, the migration's rollout gates and the
dashboard read them, which is why the format lives here with the flags.

Recording never blocks the caller: entries go onto a queue and a daemon
thread appends them to ``.agent/shadow-mismatches.jsonl``. Values larger than
a few kilobytes are kept as a digest and a size.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

MAX_INLINE = 4096


def describe(value: Any) -> Any:
    """A JSON-able view of a value for the record: itself when small, else its digest."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
        value = [v.model_dump(mode="json") for v in value]
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) <= MAX_INLINE:
        return json.loads(text) if text[:1] in '{["0123456789-tfn' else text
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "size": len(text)}


@dataclass(slots=True)
class Mismatch:
    """One disagreement between the legacy and the new path."""

    component: str
    operation: str
    todo_id: str | None
    served: str
    legacy: Any
    new: Any
    legacy_ms: float
    new_ms: float
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))


class MismatchLog:
    """Appends mismatches to a JSON-lines file from a background thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._queue: queue.SimpleQueue[Mismatch | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name="mismatch-log", daemon=True)
        self._thread.start()

    def record(self, mismatch: Mismatch) -> None:
        """Queue one record (returns at once)."""
        self.count += 1
        self._queue.put(mismatch)

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            line = json.dumps(asdict(item), default=str, ensure_ascii=False) + "\n"
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())

    def close(self) -> None:
        """Write what is queued and stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=10)


def read_mismatches(path: Path) -> list[dict[str, Any]]:
    """Every record in a mismatch file (oldest first)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]
