"""Build the legacy components from a workspace's configuration: the one place that does."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import httpx

from codeagent.config import AgentConfig
from codeagent.protocols import SyncComponents
from legacy.checkpoints import CheckpointStore
from legacy.files import Files
from legacy.git import GitRepo
from legacy.llm import LLMClient
from legacy.status import StatusStore
from legacy.todos import TodoStore


class _Pacing(TypedDict, total=False):
    """The waits between retries (a replaying client has nothing to wait for)."""

    backoff_base: float
    backoff_max: float
    max_retry_after: float


def build_stores(root: Path) -> tuple[TodoStore, StatusStore, CheckpointStore]:
    """The state stores of ``root/.agent``."""
    return TodoStore(root), StatusStore(root), CheckpointStore(root)


def build_files(root: Path, config: AgentConfig) -> Files:
    """File access confined to ``root``, with the configured size cap."""
    return Files(root, max_bytes=config.max_file_bytes)


def build_git(root: Path, config: AgentConfig) -> GitRepo:
    """The repository at ``root``, committing as the configured identity."""
    return GitRepo(root, config.git.author_name, config.git.author_email)


def build_llm(
    config: AgentConfig,
    base_url: str,
    *,
    transport: httpx.BaseTransport | None = None,
    replay: bool = False,
) -> LLMClient:
    """The LLM client of ``config.llm`` on ``base_url`` (``replay``: no waits between retries)."""
    llm = config.llm
    pacing: _Pacing = {"backoff_base": 0.0, "backoff_max": 0.0, "max_retry_after": 0.0} if replay else {}
    return LLMClient(
        base_url,
        llm.api_key,
        llm.model,
        timeout=llm.timeout,
        max_retries=llm.max_retries,
        temperature=llm.temperature,
        transport=transport,
        **pacing,
    )


def build_components(root: Path, config: AgentConfig, base_url: str) -> SyncComponents:
    """Every legacy component of one workspace."""
    todos, status, checkpoints = build_stores(root)
    return SyncComponents(
        todos=todos,
        status=status,
        checkpoints=checkpoints,
        files=build_files(root, config),
        git=build_git(root, config),
        llm=build_llm(config, base_url),
    )
