"""The new checkpoint store's sequence numbers: remembered between its own saves, read from a stranger's file.

Each save needs the previous save's ``seq``. The store keeps it, with the version
of the file it wrote, instead of reading and parsing its own last document again;
these tests hold for the async store and its generated sync twin.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import core_async.checkpoints
import core_sync.checkpoints
from codeagent.models import Checkpoint, Stage, dump_json
from tests.parity._support import Impl

MODULES = {"core_async": core_async.checkpoints, "core_sync": core_sync.checkpoints}


def _seq(root: Path, todo_id: str) -> int:
    data = json.loads((root / ".agent/checkpoints" / f"{todo_id}.json").read_text(encoding="utf-8"))
    seq = data["seq"]
    assert isinstance(seq, int)
    return seq


@pytest.fixture
def reads(twin: Impl, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file the twin's checkpoint module reads through ``read_text``."""
    module: Any = MODULES[twin.name]
    seen: list[str] = []
    original = module.read_text

    def counting(path: Path, source: str) -> str | None:
        seen.append(Path(path).name)
        return original(path, source)

    monkeypatch.setattr(module, "read_text", counting)
    return seen


def test_a_stores_own_saves_number_on_without_reading_the_last_one(
    twin: Impl, tmp_path: Path, reads: list[str]
) -> None:
    store = twin.checkpoints(tmp_path)
    store.save(Checkpoint(todo_id="t-1", stage=Stage.STARTED))
    store.save(Checkpoint(todo_id="t-1", stage=Stage.ANSWERED, reply="r", writes={"a.txt": "x\n"}))
    store.save(Checkpoint(todo_id="t-1", stage=Stage.EDITED, reply="r", writes={"a.txt": "x\n"}))
    assert _seq(tmp_path, "t-1") == 3
    assert reads == ["t-1.json"]  # the first save looked for an earlier file; the others did not
    loaded = store.load("t-1")
    assert (loaded.stage, loaded.reply, loaded.writes) == (Stage.EDITED, "r", {"a.txt": "x\n"})


def test_a_file_another_writer_replaced_is_read_again(twin: Impl, tmp_path: Path, reads: list[str]) -> None:
    mine, other = twin.checkpoints(tmp_path), twin.checkpoints(tmp_path)
    mine.save(Checkpoint(todo_id="t-1", stage=Stage.STARTED))
    other.save(Checkpoint(todo_id="t-1", stage=Stage.ANSWERED, reply="r", writes={}))
    other.save(Checkpoint(todo_id="t-1", stage=Stage.EDITED, reply="r", writes={}))
    mine.save(Checkpoint(todo_id="t-1", stage=Stage.COMMITTED, reply="r", writes={}, commit="a" * 40))
    assert _seq(tmp_path, "t-1") == 4  # not 2: the other store's saves were counted


def test_a_legacy_file_written_in_between_restarts_the_count(twin: Impl, tmp_path: Path) -> None:
    store = twin.checkpoints(tmp_path)
    store.save(Checkpoint(todo_id="t-1", stage=Stage.STARTED))
    store.save(Checkpoint(todo_id="t-1", stage=Stage.ANSWERED, reply="r", writes={}))
    path = tmp_path / ".agent/checkpoints/t-1.json"
    os.unlink(path)  # a new inode for the legacy document, whatever its size and time
    path.write_text(
        dump_json(Checkpoint(todo_id="t-1", stage=Stage.EDITED, reply="r", writes={})), encoding="utf-8"
    )
    store.save(Checkpoint(todo_id="t-1", stage=Stage.COMMITTED, reply="r", writes={}, commit="b" * 40))
    assert _seq(tmp_path, "t-1") == 1  # a legacy file counts as seq 0


def test_the_memory_forgets_committed_todos_and_stays_bounded(
    twin: Impl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module: Any = MODULES[twin.name]
    monkeypatch.setattr(module, "SAVED_MAX", 3)
    store = twin.checkpoints(tmp_path)
    saved = store.target._saved
    store.save(Checkpoint(todo_id="t-1", stage=Stage.STARTED))
    store.save(Checkpoint(todo_id="t-1", stage=Stage.COMMITTED, reply="r", writes={}, commit="c" * 40))
    assert "t-1" not in saved
    for i in range(2, 6):
        store.save(Checkpoint(todo_id=f"t-{i}", stage=Stage.STARTED))
        assert len(saved) <= 3
    store.save(Checkpoint(todo_id="t-5", stage=Stage.ANSWERED, reply="r", writes={}))
    assert _seq(tmp_path, "t-5") == 2


def test_a_failed_save_is_forgotten_and_the_next_reads_the_file(
    twin: Impl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module: Any = MODULES[twin.name]
    store = twin.checkpoints(tmp_path)
    store.save(Checkpoint(todo_id="t-1", stage=Stage.STARTED))
    original = module.atomic_write_text

    def full_disk(path: Path, text: str, **kwargs: Any) -> os.stat_result:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "atomic_write_text", full_disk)
    with pytest.raises(Exception, match="No space left on device"):
        store.save(Checkpoint(todo_id="t-1", stage=Stage.ANSWERED, reply="r", writes={}))
    monkeypatch.setattr(module, "atomic_write_text", original)
    store.save(Checkpoint(todo_id="t-1", stage=Stage.ANSWERED, reply="r", writes={}))
    assert _seq(tmp_path, "t-1") == 2
