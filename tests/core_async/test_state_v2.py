"""The v2 (versioned) checkpoint document: parsing both formats, errors, the cheap sequence read."""

from __future__ import annotations

import json

import pytest

from codeagent.errors import StateFileError
from codeagent.models import Checkpoint, Stage, dump_json
from codeagent.state_v2 import CheckpointV2, downgrade, last_seq, parse_checkpoint


def test_round_trip_and_downgrade() -> None:
    checkpoint = Checkpoint(todo_id="t-1", stage=Stage.EDITED, writes={"a": "b"}, commit=None)
    record = CheckpointV2.from_checkpoint(checkpoint, seq=3)
    parsed = parse_checkpoint(dump_json(record), "x.json")
    assert parsed == record
    assert parsed.to_checkpoint() == checkpoint
    assert downgrade(parsed) == checkpoint
    assert list(json.loads(dump_json(record)))[:3] == ["schema_version", "seq", "todo_id"]


def test_legacy_documents_come_back_as_seq_zero() -> None:
    checkpoint = Checkpoint(todo_id="t-1", stage=Stage.STARTED)
    parsed = parse_checkpoint(dump_json(checkpoint), "x.json")
    assert (parsed.seq, parsed.to_checkpoint()) == (0, checkpoint)


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        ('{\n "schema_version": 2,\n "seq": -1,\n "todo_id": "t", "stage": "started"}', "seq", 3),
        ('{"schema_version": 3, "seq": 1, "todo_id": "t", "stage": "started"}', "schema_version", 1),
        ('{"todo_id": "t",\n "stage": "later"}', "stage", 2),
    ],
)
def test_invalid_documents_name_field_and_line(text: str, field: str, line: int) -> None:
    with pytest.raises(StateFileError) as caught:
        parse_checkpoint(text, "cp.json")
    assert (caught.value.field, caught.value.line) == (field, line)


def test_a_legacy_document_that_mentions_schema_version_is_still_legacy() -> None:
    checkpoint = Checkpoint(todo_id="t-1", stage=Stage.ANSWERED, writes={"schema_version": "x"})
    assert parse_checkpoint(dump_json(checkpoint), "x.json").to_checkpoint() == checkpoint


def test_not_json() -> None:
    with pytest.raises(StateFileError, match="not valid JSON"):
        parse_checkpoint("{oops", "cp.json")


@pytest.mark.parametrize(
    ("text", "seq"),
    [
        (None, 0),
        ("{oops", 0),
        ("[1]", 0),
        ('{"seq": "7"}', 0),
        ('{"seq": -2}', 0),
        ('{"todo_id": "t"}', 0),
        ('{"seq": 7}', 7),
    ],
)
def test_last_seq(text: str | None, seq: int) -> None:
    assert last_seq(text) == seq


def test_a_document_nested_too_deeply_is_a_state_file_error() -> None:
    """Chaos campaign finding: ``[[[[...`` thousands deep raised RecursionError out of the reader."""
    for text in (
        "[" * 100_000 + "]" * 100_000,
        '{"schema_version": 2, "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ):
        with pytest.raises(StateFileError, match="nested too deeply"):
            parse_checkpoint(text, ".agent/checkpoints/t-1.json")
    assert last_seq("[" * 100_000) == 0
