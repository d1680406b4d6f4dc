"""Checkpoints: the same behaviour, and one difference on purpose (the new versioned format).

legacy writes the legacy document; core_async and its twin write the v2
document (``schema_version`` 2 plus a per-todo ``seq``) at the same path. The
new implementations read both formats; legacy refuses v2 (its model forbids
unknown keys), which is why migration keeps a way back.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from codeagent.errors import StateFileError
from codeagent.models import Checkpoint, Stage, dump_json
from codeagent.state_v2 import CheckpointV2, downgrade, parse_checkpoint
from tests.parity._support import Impl

CHECKPOINTS = Path(".agent/checkpoints")
WHEN = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)


def _checkpoint(todo_id: str = "t-0001", stage: Stage = Stage.ANSWERED) -> Checkpoint:
    return Checkpoint(todo_id=todo_id, stage=stage, reply="r", writes={"a.txt": "new\n"}, updated_at=WHEN)


def test_round_trip(impl: Impl, tmp_path: Path) -> None:
    store = impl.checkpoints(tmp_path)
    assert store.load("t-0001") is None
    assert store.list_ids() == []
    checkpoint = _checkpoint()
    store.save(checkpoint)
    assert store.load("t-0001") == checkpoint
    later = checkpoint.model_copy(update={"stage": Stage.COMMITTED, "commit": "abc"})
    store.save(later)
    store.save(_checkpoint("t-0002", Stage.STARTED))
    assert store.load("t-0001") == later
    assert store.list_ids() == ["t-0001", "t-0002"]


def test_impossible_ids(impl: Impl, tmp_path: Path) -> None:
    store = impl.checkpoints(tmp_path)
    assert store.load("../etc") is None
    with pytest.raises(ValueError, match="invalid todo id"):
        store.save(Checkpoint.model_construct(todo_id="../x", stage=Stage.STARTED))


def test_list_ignores_foreign_files(impl: Impl, tmp_path: Path) -> None:
    store = impl.checkpoints(tmp_path)
    store.save(_checkpoint())
    (tmp_path / CHECKPOINTS / "notes.txt").write_text("x")
    (tmp_path / CHECKPOINTS / "bad id!.json").write_text("{}")
    assert store.list_ids() == ["t-0001"]


def test_a_file_of_another_todo_is_refused(impl: Impl, tmp_path: Path) -> None:
    (tmp_path / CHECKPOINTS).mkdir(parents=True)
    (tmp_path / CHECKPOINTS / "t-0002.json").write_text(dump_json(_checkpoint("t-0001")))
    with pytest.raises(StateFileError, match="belongs to todo 't-0001'"):
        impl.checkpoints(tmp_path).load("t-0002")


def test_corrupt_checkpoint_is_reported(impl: Impl, tmp_path: Path) -> None:
    (tmp_path / CHECKPOINTS).mkdir(parents=True)
    (tmp_path / CHECKPOINTS / "t-0001.json").write_text('{"todo_id": "t-0001", "stage": "flying"}')
    with pytest.raises(StateFileError, match=r"t-0001\.json:1: stage"):
        impl.checkpoints(tmp_path).load("t-0001")


def test_every_implementation_reads_legacy_checkpoints(impl: Impl, tmp_path: Path) -> None:
    """Work a legacy run checkpointed resumes on any implementation."""
    legacy_store = Impl("legacy", impl.runner).checkpoints(tmp_path)
    legacy_store.save(_checkpoint())
    assert impl.checkpoints(tmp_path).load("t-0001") == _checkpoint()


def test_format_on_disk_differs_on_purpose(impl: Impl, tmp_path: Path) -> None:
    store = impl.checkpoints(tmp_path)
    store.save(_checkpoint(stage=Stage.STARTED))
    store.save(_checkpoint(stage=Stage.ANSWERED))
    text = (tmp_path / CHECKPOINTS / "t-0001.json").read_text(encoding="utf-8")
    data = json.loads(text)
    if impl.name == "legacy":
        assert "schema_version" not in data
        assert text == dump_json(_checkpoint())
        assert Checkpoint.model_validate(data).stage is Stage.ANSWERED
    else:
        record = CheckpointV2.model_validate(data)
        assert (record.schema_version, record.seq) == (2, 2)
        assert text == dump_json(record)
        assert record.to_checkpoint() == _checkpoint()
        assert impl.run(impl.checkpoints(tmp_path).target.load_versioned("t-0001")) == record


def test_legacy_refuses_the_new_format(impl: Impl, tmp_path: Path) -> None:
    """The one-way part of the difference: legacy cannot read what the new implementations write."""
    impl.checkpoints(tmp_path).save(_checkpoint())
    legacy_store = Impl("legacy", impl.runner).checkpoints(tmp_path)
    if impl.name == "legacy":
        assert legacy_store.load("t-0001") == _checkpoint()
        return
    with pytest.raises(StateFileError, match="schema_version"):
        legacy_store.load("t-0001")
    record = parse_checkpoint((tmp_path / CHECKPOINTS / "t-0001.json").read_text(), "x")
    (tmp_path / CHECKPOINTS / "t-0001.json").write_text(dump_json(downgrade(record)))
    assert legacy_store.load("t-0001") == _checkpoint()


# Legacy checkpoints have no sequence number: this is the new format's side of the difference.
@pytest.mark.parametrize("impl", ["core_sync", "core_async"], indirect=True)
def test_sequence_continues_from_a_legacy_file_and_survives_corruption(impl: Impl, tmp_path: Path) -> None:
    Impl("legacy", impl.runner).checkpoints(tmp_path).save(_checkpoint())
    store = impl.checkpoints(tmp_path)
    assert store.target is not None
    assert impl.run(store.target.load_versioned("t-0001")).seq == 0
    store.save(_checkpoint())
    assert impl.run(store.target.load_versioned("t-0001")).seq == 1
    (tmp_path / CHECKPOINTS / "t-0001.json").write_text("{broken")
    store.save(_checkpoint())
    assert impl.run(store.target.load_versioned("t-0001")).seq == 1
    (tmp_path / CHECKPOINTS / "t-0001.json").write_bytes(b"\xff\xfe")
    store.save(_checkpoint())
    assert impl.run(store.target.load_versioned("t-0001")).seq == 1


def test_a_save_the_disk_refuses_names_the_file_and_keeps_the_previous_checkpoint(
    impl: Impl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chaos campaign finding: a full disk surfaced as a bare OSError from the checkpoint store."""
    import errno
    import os

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    store = impl.checkpoints(tmp_path)
    store.save(Checkpoint(todo_id="t-0001", stage=Stage.STARTED))
    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(StateFileError, match=r"checkpoints/t-0001\.json: cannot write: No space left"):
        store.save(Checkpoint(todo_id="t-0001", stage=Stage.ANSWERED, reply="r", writes={"a.txt": "a\n"}))
    monkeypatch.undo()
    loaded = store.load("t-0001")
    assert loaded is not None and loaded.stage is Stage.STARTED
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS).iterdir()) == ["t-0001.json"]
