"""Build this package's components from a workspace's configuration: the one place that does.

The kernel's default provider and the bridge's wiring both build through
these functions, so a component's construction from configuration (the LLM
client's endpoint, key, model, timeouts and retries; the git identity; the
file-size cap) is written once per implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from codeagent.config import AgentConfig
from codeagent.protocols import AsyncComponents
from core_async.checkpoints import AsyncCheckpointJsonStore
from core_async.files import AsyncWorkspaceFiles
from core_async.git import AsyncGitRepo
from core_async.llm import AsyncLLMClient, tail_policy
from core_async.llm_transport import AsyncEndpointPool
from core_async.status import AsyncStatusJsonStore
from core_async.todos import AsyncTodoJsonStore


class _Pacing(TypedDict, total=False):
    """The waits between retries (a replaying client has nothing to wait for)."""

    backoff_base: float
    backoff_max: float
    max_retry_after: float


def build_stores(root: Path) -> tuple[AsyncTodoJsonStore, AsyncStatusJsonStore, AsyncCheckpointJsonStore]:
    """The state stores of ``root/.agent`` (they need no configuration)."""
    return AsyncTodoJsonStore(root), AsyncStatusJsonStore(root), AsyncCheckpointJsonStore(root)


def build_files(root: Path, config: AgentConfig) -> AsyncWorkspaceFiles:
    """File access confined to ``root``, with the configured size cap."""
    return AsyncWorkspaceFiles(root, max_bytes=config.max_file_bytes)


def build_git(root: Path, config: AgentConfig) -> AsyncGitRepo:
    """The repository at ``root``, committing as the configured identity."""
    return AsyncGitRepo(root, config.git.author_name, config.git.author_email)


def build_llm(
    config: AgentConfig,
    base_url: str,
    *,
    pool: AsyncEndpointPool | None = None,
    replay: bool = False,
) -> AsyncLLMClient:
    """The LLM client of ``config.llm`` on ``base_url``.

    A given ``pool`` is shared (its owner closes it). ``replay`` builds the
    client a shadow run replays a recorded answer to: no waits between
    retries, since nothing is sent over the network, and no hedging or pacing
    (each request must consume exactly one recorded answer).
    """
    llm = config.llm
    pacing: _Pacing = {"backoff_base": 0.0, "backoff_max": 0.0, "max_retry_after": 0.0} if replay else {}
    return AsyncLLMClient(
        base_url,
        llm.api_key,
        llm.model,
        timeout=llm.timeout,
        max_retries=llm.max_retries,
        temperature=llm.temperature,
        pool=pool,
        transport=llm.transport,
        tail=tail_policy(llm, replay=replay),
        stream=llm.stream,
        **pacing,
    )


def build_components(
    root: Path, config: AgentConfig, base_url: str, *, pool: AsyncEndpointPool | None = None
) -> AsyncComponents:
    """Every component of one workspace, unrouted."""
    todos, status, checkpoints = build_stores(root)
    return AsyncComponents(
        todos=todos,
        status=status,
        checkpoints=checkpoints,
        files=build_files(root, config),
        git=build_git(root, config),
        llm=build_llm(config, base_url, pool=pool),
    )
