"""Configuration loading: the same results and the same errors from every implementation."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeagent.config import AgentConfig
from codeagent.errors import ConfigError
from tests.parity._support import Impl


def _write(root: Path, text: str | bytes) -> None:
    path = root / ".agent" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")


def test_missing_file_gives_defaults(impl: Impl, tmp_path: Path) -> None:
    assert impl.load_config(tmp_path) == AgentConfig()


def test_empty_file_gives_defaults(impl: Impl, tmp_path: Path) -> None:
    _write(tmp_path, "  \n")
    assert impl.load_config(tmp_path) == AgentConfig()


def test_legacy_file_is_read(impl: Impl, tmp_path: Path) -> None:
    _write(
        tmp_path, '{"llm": {"base_url": "http://x/v1", "timeout": 5, "max_retries": 1}, "poll_interval": 0.5}'
    )
    config = impl.load_config(tmp_path)
    assert config.llm.base_url == "http://x/v1"
    assert config.llm.timeout == 5
    assert config.llm.max_retries == 1
    assert config.poll_interval == 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"llm": {\n  "timeout": -1\n}}', ".agent/config.json:2: llm.timeout:"),
        ('{"llm": {"tiemout": 3}}', ".agent/config.json:1: llm.tiemout:"),
        ("{not json", ".agent/config.json:1: not valid JSON"),
        ("[1, 2]", ".agent/config.json: the document must be a JSON object"),
    ],
)
def test_invalid_file_names_file_field_and_line(impl: Impl, tmp_path: Path, text: str, expected: str) -> None:
    _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        impl.load_config(tmp_path)
    assert str(caught.value).startswith(expected)


def test_not_utf8(impl: Impl, tmp_path: Path) -> None:
    _write(tmp_path, b'{"x": "\xff"}')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        impl.load_config(tmp_path)


def test_unreadable_path(impl: Impl, tmp_path: Path) -> None:
    (tmp_path / ".agent" / "config.json").mkdir(parents=True)
    with pytest.raises(ConfigError, match="cannot read"):
        impl.load_config(tmp_path)
