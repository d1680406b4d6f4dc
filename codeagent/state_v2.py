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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
        """Wrap a (validated) domain checkpoint as save number ``seq``."""
        return cls.model_construct(
            schema_version=CHECKPOINT_SCHEMA_VERSION,
            seq=seq,
            todo_id=checkpoint.todo_id,
            stage=checkpoint.stage,
            reply=checkpoint.reply,
            writes=checkpoint.writes,
            commit=checkpoint.commit,
            updated_at=checkpoint.updated_at,
        )

    def to_checkpoint(self) -> Checkpoint:
        """The domain checkpoint (what every loop works with); the fields are already validated."""
        return Checkpoint.model_construct(
            todo_id=self.todo_id,
            stage=self.stage,
            reply=self.reply,
            writes=self.writes,
            commit=self.commit,
            updated_at=self.updated_at,
        )


def parse_checkpoint(text: str, source: str) -> CheckpointV2:
    """Parse a checkpoint document of either format; errors name the file, field and line.

    The common case is one pass of pydantic's own JSON parser; only a document
    that fails is parsed again, by :func:`codeagent.jsondoc.parse_document`,
    for an error message with the field and the line.
    """
    try:
        if '"schema_version"' in text:  # a hint only: the slow path decides by the top-level keys
            return CheckpointV2.model_validate_json(text)
        return CheckpointV2.from_checkpoint(Checkpoint.model_validate_json(text), seq=0)
    except ValidationError:
        pass
    try:
        data: Any = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        data = None  # parse_document reports the syntax error with its line
    if isinstance(data, dict) and "schema_version" in data:
        return parse_document(text, CheckpointV2, source, StateFileError)
    return CheckpointV2.from_checkpoint(parse_document(text, Checkpoint, source, StateFileError), seq=0)


def last_seq(text: str | None) -> int:
    """The ``seq`` of a stored checkpoint document, cheaply (0 for legacy, missing or corrupt ones)."""
    if text is None:
        return 0
    try:
        data: Any = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return 0
    seq = data.get("seq") if isinstance(data, dict) else None
    return seq if isinstance(seq, int) and seq >= 0 else 0


def downgrade(record: CheckpointV2) -> Checkpoint:
    """The legacy document for a v2 checkpoint (used to roll a workspace back)."""
    return record.to_checkpoint()
