"""Build a legacy agent from a workspace: load the config, construct the plain components."""

from __future__ import annotations

from pathlib import Path

from codeagent.config import CONFIG_RELPATH
from codeagent.errors import ConfigError
from legacy.agent import LegacyAgent
from legacy.checkpoints import CheckpointStore
from legacy.config import load_config
from legacy.files import Files
from legacy.git import GitRepo
from legacy.llm import LLMClient
from legacy.status import StatusStore
from legacy.todos import TodoStore


def build_agent(workspace: Path, llm_url: str | None = None) -> LegacyAgent:
    """A :class:`LegacyAgent` on ``workspace`` with the legacy components.

    ``llm_url`` overrides ``llm.base_url`` of the config. With neither, raises
    :class:`ConfigError` (the CLI starts the embedded stub before calling this).
    """
    root = Path(workspace)
    config = load_config(root)
    base_url = llm_url or config.llm.base_url
    if not base_url:
        raise ConfigError(
            CONFIG_RELPATH, "no LLM endpoint: set llm.base_url or pass an LLM URL", field="llm.base_url"
        )
    llm = LLMClient(
        base_url,
        config.llm.api_key,
        config.llm.model,
        timeout=config.llm.timeout,
        max_retries=config.llm.max_retries,
        temperature=config.llm.temperature,
    )
    return LegacyAgent(
        root,
        config,
        todos=TodoStore(root),
        status=StatusStore(root),
        checkpoints=CheckpointStore(root),
        files=Files(root, max_bytes=config.max_file_bytes),
        git=GitRepo(root, config.git.author_name, config.git.author_email),
        llm=llm,
    )
