"""Loading ``.agent/config.json``."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeagent.config import AgentConfig
from codeagent.errors import ConfigError
from legacy.config import load_config


def _write(workspace: Path, text: str) -> None:
    (workspace / ".agent").mkdir(exist_ok=True)
    (workspace / ".agent" / "config.json").write_text(text)


def test_missing_file_gives_defaults(workspace: Path) -> None:
    assert load_config(workspace) == AgentConfig()


def test_partial_file_overrides_only_what_it_names(workspace: Path) -> None:
    _write(workspace, '{"llm": {"base_url": "http://127.0.0.1:9/v1", "timeout": 5}, "poll_interval": 0.5}')
    config = load_config(workspace)
    assert config.llm.base_url == "http://127.0.0.1:9/v1"
    assert config.llm.timeout == 5
    assert config.llm.model == AgentConfig().llm.model
    assert config.poll_interval == 0.5


def test_empty_file_gives_defaults(workspace: Path) -> None:
    _write(workspace, "  \n")
    assert load_config(workspace) == AgentConfig()


def test_malformed_json_names_file_and_line(workspace: Path) -> None:
    _write(workspace, '{\n  "llm": {\n    "timeout": 5,\n  }\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(workspace)
    assert info.value.path == ".agent/config.json"
    assert info.value.line == 4
    assert "not valid JSON" in str(info.value)


def test_invalid_value_names_field_and_line(workspace: Path) -> None:
    _write(workspace, '{\n  "llm": {\n    "timeout": -1\n  }\n}\n')
    with pytest.raises(ConfigError) as info:
        load_config(workspace)
    assert info.value.field == "llm.timeout"
    assert info.value.line == 3
    assert str(info.value).startswith(".agent/config.json:3: llm.timeout:")


def test_unknown_key_is_refused(workspace: Path) -> None:
    _write(workspace, '{"poll_intervall": 2}')
    with pytest.raises(ConfigError, match="poll_intervall"):
        load_config(workspace)


def test_non_utf8_file_is_a_config_error(workspace: Path) -> None:
    (workspace / ".agent").mkdir()
    (workspace / ".agent" / "config.json").write_bytes(b'{"x": "\xff"}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(workspace)
