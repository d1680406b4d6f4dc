"""Per-todo checkpoints, ``.agent/checkpoints/<todo-id>.json`` (:class:`codeagent.models.Checkpoint`)."""

from __future__ import annotations

from pathlib import Path

from codeagent.errors import StateFileError
from codeagent.models import TODO_ID_RE, Checkpoint, dump_json
from codeagent.paths import CHECKPOINTS_RELDIR
from legacy.jsonstate import atomic_write_text, read_model


class CheckpointStore:
    """Saves the last stage each todo reached, so a crashed run resumes after it.

    One file per todo, written atomically and fsynced. Only one loop works on a
    todo at a time, so no lock is needed.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / CHECKPOINTS_RELDIR

    def _source(self, todo_id: str) -> str:
        return f"{CHECKPOINTS_RELDIR}/{todo_id}.json"

    def load(self, todo_id: str) -> Checkpoint | None:
        """The checkpoint of one todo, or ``None`` (also for an id no todo can have).

        Raises :class:`StateFileError` naming the file for a corrupt checkpoint.
        """
        if not TODO_ID_RE.match(todo_id):
            return None
        source = self._source(todo_id)
        checkpoint = read_model(self.dir / f"{todo_id}.json", Checkpoint, source)
        if checkpoint is not None and checkpoint.todo_id != todo_id:
            raise StateFileError(source, f"belongs to todo {checkpoint.todo_id!r}", field="todo_id")
        return checkpoint

    def save(self, checkpoint: Checkpoint) -> None:
        """Write (replace) the checkpoint of ``checkpoint.todo_id``."""
        if not TODO_ID_RE.match(checkpoint.todo_id):
            raise ValueError(f"invalid todo id {checkpoint.todo_id!r}")
        try:
            atomic_write_text(self.dir / f"{checkpoint.todo_id}.json", dump_json(checkpoint))
        except OSError as exc:  # a full disk, a read-only file system: the previous checkpoint stays
            source = f"{CHECKPOINTS_RELDIR}/{checkpoint.todo_id}.json"
            raise StateFileError(source, f"cannot write: {exc.strerror or exc}") from exc

    def list_ids(self) -> list[str]:
        """Ids of every todo with a checkpoint, sorted."""
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if TODO_ID_RE.match(p.stem))
