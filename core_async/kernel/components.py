"""Where a served workspace's components come from: the kernel's one injection point.

By default every workspace gets the plain ``core_async`` components. The
application may hand the kernel another :class:`ComponentProvider` (the
bridge's routed facades); the kernel then meters and schedules whatever it was
given, knowing nothing of how the calls are routed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import core_async.components as build
from codeagent.config import AgentConfig
from codeagent.protocols import (
    AsyncCheckpointStore,
    AsyncConfigSource,
    AsyncFiles,
    AsyncGit,
    AsyncLLM,
    AsyncStatusStore,
    AsyncTodoStore,
)
from core_async.config import load_config
from core_async.llm_transport import AsyncEndpointPool


class ComponentProvider(Protocol):
    """Builds the components of one workspace."""

    def config_source(self, root: Path) -> AsyncConfigSource:
        """Where the workspace's configuration is read from (at start and on every change)."""
        ...

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


class ConfigFile:
    """The workspace's ``.agent/config.json``, read by the ``core_async`` loader."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def load(self) -> AgentConfig:
        """Read and validate the file (defaults when it is missing)."""
        return await load_config(self.root)


class PlainComponents:
    """The ``core_async`` components, unrouted."""

    def config_source(self, root: Path) -> AsyncConfigSource:
        """The configuration file, read by ``core_async``."""
        return ConfigFile(root)

    def stores(self, root: Path) -> tuple[AsyncTodoStore, AsyncStatusStore, AsyncCheckpointStore]:
        """JSON stores in ``root/.agent``."""
        return build.build_stores(root)

    async def workers(
        self, root: Path, config: AgentConfig, base_url: str, pool: AsyncEndpointPool
    ) -> tuple[AsyncFiles, AsyncGit, AsyncLLM]:
        """Files, git and an LLM client on the kernel's shared connection pool."""
        return (
            build.build_files(root, config),
            build.build_git(root, config),
            build.build_llm(config, base_url, pool=pool),
        )

    async def aclose(self) -> None:
        """Nothing to release."""
