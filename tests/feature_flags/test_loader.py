"""The flag file parser: good files load, every malformed file is refused naming key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_flags import FlagFileError, Mode, parse_flags, read_flags

GOOD = """\
version = 1
loop = "async"
fallback_to_legacy = false

[rollback]
max_error_rate = 0.1
min_samples = 5
window = 50

[components.llm]
mode = "canary"
percent = 25

[components.git]
mode = "shadow"
serve = "new"
"""

# (name, text, expected key, expected line, words in the message)
CORPUS: list[tuple[str, str, str | None, int | None, str]] = [
    ("bad toml", 'version = 1\nloop = "legacy\n', None, 2, "not valid TOML"),
    ("unknown component", 'version = 1\nloop = "legacy"\n[components.cache]\nmode = "new"\n', "components.cache", 3, "unknown component"),
    ("unknown mode", 'version = 1\nloop = "legacy"\n[components.llm]\nmode = "turbo"\n', "components.llm.mode", 4, "'canary'"),
    ("percent 150", 'version = 1\nloop = "legacy"\n[components.llm]\nmode = "canary"\npercent = 150\n', "components.llm.percent", 5, "less than or equal to 100"),
    ("missing loop", "version = 1\n", "loop", None, "required key is missing"),
    ("missing mode", 'version = 1\nloop = "legacy"\n[components.files]\npercent = 5\n', "components.files.mode", 3, "required"),
    ("unknown key", 'version = 1\nloop = "legacy"\ncolour = "blue"\n', "colour", 3, "Extra inputs"),
    ("wrong loop", 'version = 1\nloop = "turbo"\n', "loop", 2, "'legacy' or 'async'"),
    ("percent outside canary", 'version = 1\nloop = "legacy"\n[components.llm]\nmode = "new"\npercent = 5\n', "components.llm", 3, "only meaningful"),
    ("window below samples", 'version = 1\nloop = "legacy"\n[rollback]\nmin_samples = 50\nwindow = 10\n', "rollback", 3, "window"),
    ("empty", "", None, None, "empty"),
    ("whitespace", "   \n\n", None, None, "empty"),
]  # fmt: skip


def test_good_file_loads_every_field() -> None:
    flags = parse_flags(GOOD)
    assert flags.loop == "async"
    assert flags.fallback_to_legacy is False
    assert flags.rollback.max_error_rate == 0.1
    assert flags.flag("llm").mode is Mode.CANARY
    assert flags.flag("llm").percent == 25
    assert flags.flag("git").serve == "new"
    # components the file does not name run legacy
    assert flags.flag("files").mode is Mode.LEGACY


@pytest.mark.parametrize(("name", "text", "key", "line", "words"), CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_flag_files_are_refused_with_key_and_line(
    name: str, text: str, key: str | None, line: int | None, words: str
) -> None:
    with pytest.raises(FlagFileError) as info:
        parse_flags(text, "flags.toml")
    err = info.value
    assert err.key == key
    assert err.line == line
    assert words in str(err)
    assert str(err).startswith("flags.toml")


def test_binary_junk_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "flags.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    with pytest.raises(FlagFileError, match="not UTF-8"):
        read_flags(path)
    path.write_bytes(b'version = 1\nloop = "legacy"\x00\n')
    with pytest.raises(FlagFileError, match="NUL"):
        read_flags(path)


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(FlagFileError, match="does not exist") as info:
        read_flags(tmp_path / "nope.toml")
    assert info.value.path.endswith("nope.toml")


def test_a_file_nested_too_deeply_is_refused_not_a_recursion_error() -> None:
    """Chaos campaign finding: arrays thousands deep raised RecursionError out of the loader."""
    with pytest.raises(FlagFileError, match="nested too deeply"):
        parse_flags("version = 1\nx = " + "[" * 100_000 + "]" * 100_000)
