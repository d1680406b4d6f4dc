"""New-format (v2) state documents, sans-I/O: the versioned checkpoint.

The legacy checkpoint (:class:`codeagent.models.Checkpoint`) carries no version,
so a reader cannot tell an old document from a newer one, nor which of two
saves came last. :class:`CheckpointV2` adds ``schema_version`` (always 2) and
``seq`` (1 for the first save of a todo, +1 for every save after it) and keeps
every legacy field with the same meaning. It lives at the same path,
``.agent/checkpoints/<todo-id>.json``. :func:`parse_checkpoint` reads both
formats (a legacy document comes back with ``seq`` 0), so the async core
resumes work a legacy run left behind; the legacy reader refuses v2 documents
(unknown keys), which is why migration has a way back (:func:`downgrade`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from codeagent.errors import StateFileError
from codeagent.jsondoc import parse_document
from codeagent.models import Checkpoint, Stage, utcnow

CHECKPOINT_SCHEMA_VERSION: Literal[2] = 2


class CheckpointV2(BaseModel):
    """A checkpoint with a schema version and a per-todo sequence number."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[2] = CHECKPOINT_SCHEMA_VERSION
    seq: int = Field(ge=0)
    todo_id: str
    stage: Stage
    reply: str | None = None
    writes: dict[str, str] = Field(default_factory=dict)
    commit: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, seq: int) -> CheckpointV2:
        """Wrap a domain checkpoint as save number ``seq``."""
        return cls(seq=seq, **checkpoint.model_dump())

    def to_checkpoint(self) -> Checkpoint:
        """The domain checkpoint (what every loop works with)."""
        return Checkpoint.model_validate(self.model_dump(exclude={"schema_version", "seq"}))


def parse_checkpoint(text: str, source: str) -> CheckpointV2:
    """Parse a checkpoint document of either format; errors name the file, field and line."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        data = None  # parse_document reports the syntax error with its line
    if isinstance(data, dict) and "schema_version" in data:
        return parse_document(text, CheckpointV2, source, StateFileError)
    legacy = parse_document(text, Checkpoint, source, StateFileError)
    return CheckpointV2.from_checkpoint(legacy, seq=0)


def downgrade(record: CheckpointV2) -> Checkpoint:
    """The legacy document for a v2 checkpoint (used to roll a workspace back)."""
    return record.to_checkpoint()
