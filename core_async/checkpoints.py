"""Per-todo checkpoints, async, in the NEW versioned format (:class:`codeagent.state_v2.CheckpointV2`).

Differs from legacy on purpose: each save writes ``schema_version`` 2 and a
sequence number one above the previous save's, atomically and durably (temp
file, fsync, rename, fsync of the directory). Loading accepts both formats, so
work a legacy run checkpointed resumes here. Each operation is one thread hop.

A save needs the previous save's sequence number. The store remembers the
number and the file version (inode, size, modification time) of each of its own
saves, so the next save of that todo reads it from memory after one ``stat``
instead of reading and parsing the previous document; a file another process
wrote since (a different version) is read as before.
"""

from __future__ import annotations

import os
from pathlib import Path

from codeagent.errors import StateFileError
from codeagent.models import TODO_ID_RE, Checkpoint, Stage, dump_json
from codeagent.paths import CHECKPOINTS_RELDIR
from codeagent.state_v2 import CheckpointV2, last_seq, parse_checkpoint
from core_async._compat import ato_thread
from core_async.fsops import atomic_write_text, read_text

SAVED_MAX = 4096  # todos whose last save the store remembers


def _version(status: os.stat_result) -> tuple[int, int, int]:
    """What tells one version of a file from another: every save replaces the file (a new inode)."""
    return (status.st_ino, status.st_size, status.st_mtime_ns)


class AsyncCheckpointJsonStore:
    """Saves the last stage each todo reached, so a crashed run resumes after it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / CHECKPOINTS_RELDIR
        # todo id -> (version of the file this store last wrote, its seq)
        self._saved: dict[str, tuple[tuple[int, int, int], int]] = {}

    def _read(self, todo_id: str) -> CheckpointV2 | None:
        if not TODO_ID_RE.match(todo_id):
            return None
        source = f"{CHECKPOINTS_RELDIR}/{todo_id}.json"
        text = read_text(self.dir / f"{todo_id}.json", source)
        if text is None:
            return None
        record = parse_checkpoint(text, source)
        if record.todo_id != todo_id:
            raise StateFileError(source, f"belongs to todo {record.todo_id!r}", field="todo_id")
        return record

    def _previous_seq(self, todo_id: str, path: Path) -> int:
        saved = self._saved.get(todo_id)
        if saved is not None:
            try:
                if _version(os.stat(path)) == saved[0]:
                    return saved[1]
            except OSError:
                pass  # gone or unreadable: read it as a stranger's file below
        try:
            previous = read_text(path, str(path))
        except StateFileError:
            previous = None  # an unreadable checkpoint is superseded by this save
        return last_seq(previous)

    def _write(self, checkpoint: Checkpoint) -> None:
        if not TODO_ID_RE.match(checkpoint.todo_id):
            raise ValueError(f"invalid todo id {checkpoint.todo_id!r}")
        path = self.dir / f"{checkpoint.todo_id}.json"
        seq = self._previous_seq(checkpoint.todo_id, path) + 1
        record = CheckpointV2.from_checkpoint(checkpoint, seq)
        try:
            written = atomic_write_text(path, dump_json(record))
        except OSError as exc:  # a full disk, a read-only file system: the previous checkpoint stays
            self._saved.pop(checkpoint.todo_id, None)
            source = f"{CHECKPOINTS_RELDIR}/{checkpoint.todo_id}.json"
            raise StateFileError(source, f"cannot write: {exc.strerror or exc}") from exc
        if checkpoint.stage is Stage.COMMITTED:  # its last save: forget it, so the memory stays bounded
            self._saved.pop(checkpoint.todo_id, None)
            return
        if len(self._saved) >= SAVED_MAX:  # todos that failed mid-way and never came back
            self._saved.clear()
        self._saved[checkpoint.todo_id] = (_version(written), seq)

    def _ids(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if TODO_ID_RE.match(p.stem))

    async def load(self, todo_id: str) -> Checkpoint | None:
        """The checkpoint of one todo (either format), or ``None`` (also for an impossible id).

        Raises :class:`StateFileError` naming the file for a corrupt checkpoint.
        """
        record = await ato_thread(self._read, todo_id)
        return None if record is None else record.to_checkpoint()

    async def load_versioned(self, todo_id: str) -> CheckpointV2 | None:
        """The checkpoint with its format version and sequence number (``seq`` 0: a legacy file)."""
        return await ato_thread(self._read, todo_id)

    async def save(self, checkpoint: Checkpoint) -> None:
        """Write (replace) the checkpoint of ``checkpoint.todo_id`` as the next sequence number."""
        await ato_thread(self._write, checkpoint)

    async def list_ids(self) -> list[str]:
        """Ids of every todo with a checkpoint, sorted."""
        return await ato_thread(self._ids)
