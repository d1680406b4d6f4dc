"""Load the legacy configuration file, ``.agent/config.json`` in the workspace."""

from __future__ import annotations

from pathlib import Path

from codeagent.config import CONFIG_RELPATH, AgentConfig, parse_config
from codeagent.errors import ConfigError


def load_config(workspace: Path) -> AgentConfig:
    """Read and validate ``<workspace>/.agent/config.json``; defaults when the file is missing.

    Raises :class:`ConfigError` naming the file, the field and the line.
    """
    path = workspace / CONFIG_RELPATH
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return AgentConfig()
    except UnicodeDecodeError as exc:
        raise ConfigError(CONFIG_RELPATH, f"not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(CONFIG_RELPATH, f"cannot read: {exc.strerror or exc}") from exc
    return parse_config(text, CONFIG_RELPATH)
