"""Where a served workspace's components come from: the kernel's one injection point.

By default every workspace gets the plain ``core_async`` components. The
entry's wiring may hand the kernel another :class:`ComponentProvider` (the
bridge's routed facades, for instance); the kernel then meters and schedules
whatever it was given, knowing nothing of how the calls are routed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from codeagent.config import AgentConfig
from codeagent.protocols import (
    AsyncCheckpointStore,
    AsyncFiles,
    AsyncGit,
    AsyncLLM,
    AsyncStatusStore,
    AsyncTodoStore,
)
from core_async.checkpoints import AsyncCheckpointJsonStore
from core_async.files import AsyncWorkspaceFiles
from core_async.git import AsyncGitRepo
from core_async.llm import AsyncLLMClient
from core_async.llm_transport import AsyncEndpointPool
from core_async.status import AsyncStatusJsonStore
from core_async.todos import AsyncTodoJsonStore


class ComponentProvider(Protocol):
    """Builds the components of one workspace."""

    def stores(self, root: Path) -> tuple[AsyncTodoStore, AsyncStatusStore, AsyncCheckpointStore]:
        """The state stores (built once per workspace)."""
        ...

    async def workers(
        self, root: Path, config: AgentConfig, base_url: str, pool: AsyncEndpointPool
    ) -> tuple[AsyncFiles, AsyncGit, AsyncLLM]:
        """The configuration-dependent components (built again on every config change)."""
        ...

    async def aclose(self) -> None:
        """Release whatever the provider holds beyond the components themselves."""
        ...


class PlainComponents:
    """The ``core_async`` components, unrouted."""

    def stores(self, root: Path) -> tuple[AsyncTodoStore, AsyncStatusStore, AsyncCheckpointStore]:
        """JSON stores in ``root/.agent``."""
        return AsyncTodoJsonStore(root), AsyncStatusJsonStore(root), AsyncCheckpointJsonStore(root)

    async def workers(
        self, root: Path, config: AgentConfig, base_url: str, pool: AsyncEndpointPool
    ) -> tuple[AsyncFiles, AsyncGit, AsyncLLM]:
        """Files, git and an LLM client on the kernel's shared connection pool."""
        client = AsyncLLMClient(
            base_url,
            config.llm.api_key,
            config.llm.model,
            timeout=config.llm.timeout,
            max_retries=config.llm.max_retries,
            temperature=config.llm.temperature,
            pool=pool,
        )
        files = AsyncWorkspaceFiles(root, max_bytes=config.max_file_bytes)
        git = AsyncGitRepo(root, config.git.author_name, config.git.author_email)
        return files, git, client

    async def aclose(self) -> None:
        """Nothing to release."""
