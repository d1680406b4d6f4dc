"""Load the agent's configuration, async: the legacy ``.agent/config.json``, validated with pydantic.

Reading a small file is one thread hop (see :mod:`core_async.fsops`); parsing
and validation are the domain's :func:`codeagent.config.parse_config`, so the
errors name the file, the field and the line exactly as the legacy loader's.
Watching for changes (hot reload) belongs to the async kernel's
ConfigurationManager, which calls :func:`load_config`.
"""

from __future__ import annotations

from pathlib import Path

from codeagent.config import CONFIG_RELPATH, AgentConfig, parse_config
from codeagent.errors import ConfigError
from core_async._compat import ato_thread


def read_config_text(workspace: Path) -> str | None:
    """The text of ``<workspace>/.agent/config.json`` or ``None`` when missing (blocking)."""
    path = Path(workspace) / CONFIG_RELPATH
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise ConfigError(CONFIG_RELPATH, f"not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(CONFIG_RELPATH, f"cannot read: {exc.strerror or exc}") from exc


async def load_config(workspace: Path) -> AgentConfig:
    """Read and validate ``<workspace>/.agent/config.json``; defaults when the file is missing.

    Raises :class:`ConfigError` naming the file, the field and the line.
    """
    text = await ato_thread(read_config_text, workspace)
    if text is None:
        return AgentConfig()
    return parse_config(text, CONFIG_RELPATH)
