"""Every component of a workspace behind its facade, for either loop.

The legacy loop gets the sync face: the new path of each facade is the
generated ``core_sync`` twin. The async core gets the async face: the new path
is ``core_async``, the legacy path runs on the bridge's threads. Both sides of
every facade are built by their own package's ``components`` module; this
module only pairs them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

import core_async.components as new_async
import core_sync.components as new_sync
import legacy.components as old
from bridge._async.facades import (
    AsyncCheckpointsFacade,
    AsyncConfigFacade,
    AsyncFilesFacade,
    AsyncGitFacade,
    AsyncStatusFacade,
    AsyncTodosFacade,
)
from bridge._async.llm import AsyncLLMFacade, AsyncRecordingTransport, AsyncReplayTransport
from bridge._sync.facades import (
    SyncCheckpointsFacade,
    SyncConfigFacade,
    SyncFilesFacade,
    SyncGitFacade,
    SyncStatusFacade,
    SyncTodosFacade,
)
from bridge._sync.llm import SyncLLMFacade, SyncRecordingTransport, SyncReplayTransport
from bridge.runtime import BridgeRuntime
from codeagent.config import AgentConfig
from codeagent.protocols import AsyncComponents, SyncComponents
from core_async.checkpoints import AsyncCheckpointJsonStore
from core_async.llm_transport import AsyncEndpointPool
from core_async.status import AsyncStatusJsonStore
from core_async.todos import AsyncTodoJsonStore
from core_sync.checkpoints import SyncCheckpointJsonStore
from core_sync.llm_transport import SyncEndpointPool
from core_sync.status import SyncStatusJsonStore
from core_sync.todos import SyncTodoJsonStore
from legacy.checkpoints import CheckpointStore
from legacy.llm import LLMClient
from legacy.status import StatusStore
from legacy.todos import TodoStore

F = TypeVar("F")
L = TypeVar("L")
N = TypeVar("N")
D = TypeVar("D")


def _paired(
    facade: Callable[[D, Path, L, N, Callable[[Path], L], Callable[[Path], N]], F],
    dispatcher: D,
    root: Path,
    config: AgentConfig,
    build_legacy: Callable[[Path, AgentConfig], L],
    build_new: Callable[[Path, AgentConfig], N],
) -> F:
    """A configuration-dependent component's facade over both builds (and their scratch-rooted twins)."""
    return facade(
        dispatcher,
        root,
        build_legacy(root, config),
        build_new(root, config),
        lambda r: build_legacy(r, config),
        lambda r: build_new(r, config),
    )


def routed_sync_config(runtime: BridgeRuntime, root: Path) -> SyncConfigFacade:
    """The configuration loader of the legacy loop, routed."""
    return SyncConfigFacade(runtime.sync_dispatcher(), root)


def routed_sync_components(
    runtime: BridgeRuntime, root: Path, config: AgentConfig, base_url: str
) -> SyncComponents:
    """Every component of the legacy loop, routed (new path: the generated sync twins)."""
    d = runtime.sync_dispatcher()
    todos, status, checkpoints = old.build_stores(root)
    new_todos, new_status, new_checkpoints = new_sync.build_stores(root)
    served_pool = SyncEndpointPool(wrap_transport=SyncRecordingTransport)
    replay_pool = SyncEndpointPool(wrap_transport=lambda _t: SyncReplayTransport())
    llm = SyncLLMFacade(
        d,
        old.build_llm(config, base_url, transport=SyncRecordingTransport(httpx.HTTPTransport())),
        new_sync.build_llm(config, base_url, pool=served_pool),
        old.build_llm(config, base_url, transport=SyncReplayTransport(), replay=True),
        new_sync.build_llm(config, base_url, pool=replay_pool, replay=True),
        closing=[served_pool, replay_pool],
    )
    return SyncComponents(
        todos=SyncTodosFacade(d, root, todos, new_todos, TodoStore, SyncTodoJsonStore),
        status=SyncStatusFacade(d, root, status, new_status, StatusStore, SyncStatusJsonStore),
        checkpoints=SyncCheckpointsFacade(
            d, root, checkpoints, new_checkpoints, CheckpointStore, SyncCheckpointJsonStore
        ),
        files=_paired(SyncFilesFacade, d, root, config, old.build_files, new_sync.build_files),
        git=_paired(SyncGitFacade, d, root, config, old.build_git, new_sync.build_git),
        llm=llm,
    )


def routed_async_config(runtime: BridgeRuntime, root: Path) -> AsyncConfigFacade:
    """The configuration loader of the async core, routed."""
    return AsyncConfigFacade(runtime.async_dispatcher(), root)


def routed_async_stores(
    runtime: BridgeRuntime, root: Path
) -> tuple[AsyncTodosFacade, AsyncStatusFacade, AsyncCheckpointsFacade]:
    """The async core's state stores, routed."""
    d = runtime.async_dispatcher()
    todos, status, checkpoints = old.build_stores(root)
    new_todos, new_status, new_checkpoints = new_async.build_stores(root)
    return (
        AsyncTodosFacade(d, root, todos, new_todos, TodoStore, AsyncTodoJsonStore),
        AsyncStatusFacade(d, root, status, new_status, StatusStore, AsyncStatusJsonStore),
        AsyncCheckpointsFacade(
            d, root, checkpoints, new_checkpoints, CheckpointStore, AsyncCheckpointJsonStore
        ),
    )


async def routed_async_workers(
    runtime: BridgeRuntime, root: Path, config: AgentConfig, base_url: str, pool: AsyncEndpointPool
) -> tuple[AsyncFilesFacade, AsyncGitFacade, AsyncLLMFacade]:
    """The async core's configuration-dependent components (files, git, LLM), routed.

    The new-path client shares ``pool`` (the kernel's, whose transports must
    record: see :func:`recording_transport`), so every workspace shares one
    pool and its limits whatever its flags say.
    """
    d = runtime.async_dispatcher()

    def legacy_clients() -> tuple[LLMClient, LLMClient]:
        # httpx builds its TLS context in the constructor: done off the loop.
        return (
            old.build_llm(config, base_url, transport=SyncRecordingTransport(httpx.HTTPTransport())),
            old.build_llm(config, base_url, transport=SyncReplayTransport(), replay=True),
        )

    legacy_llm, legacy_replay = await d.blocking.run(legacy_clients)
    replay_pool = AsyncEndpointPool(wrap_transport=lambda _t: AsyncReplayTransport())
    llm = AsyncLLMFacade(
        d,
        legacy_llm,
        new_async.build_llm(config, base_url, pool=pool),
        legacy_replay,
        new_async.build_llm(config, base_url, pool=replay_pool, replay=True),
        closing=[replay_pool],
    )
    files = _paired(AsyncFilesFacade, d, root, config, old.build_files, new_async.build_files)
    git = _paired(AsyncGitFacade, d, root, config, old.build_git, new_async.build_git)
    return files, git, llm


async def routed_async_components(
    runtime: BridgeRuntime, root: Path, config: AgentConfig, base_url: str, pool: AsyncEndpointPool
) -> AsyncComponents:
    """Every component of the async core, routed."""
    todos, status, checkpoints = routed_async_stores(runtime, root)
    files, git, llm = await routed_async_workers(runtime, root, config, base_url, pool)
    return AsyncComponents(todos=todos, status=status, checkpoints=checkpoints, files=files, git=git, llm=llm)


def recording_transport(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
    """The transport wrapper the kernel's shared LLM pool needs for shadow runs of the LLM."""
    return AsyncRecordingTransport(inner)


class RoutedComponents:
    """The kernel's component provider for one workspace: the bridge's facades."""

    def __init__(self, runtime: BridgeRuntime) -> None:
        self.runtime = runtime

    def config_source(self, root: Path) -> AsyncConfigFacade:
        """The routed configuration loader."""
        return routed_async_config(self.runtime, root)

    def stores(self, root: Path) -> tuple[AsyncTodosFacade, AsyncStatusFacade, AsyncCheckpointsFacade]:
        """Routed state stores."""
        return routed_async_stores(self.runtime, root)

    async def workers(
        self, root: Path, config: AgentConfig, base_url: str, pool: AsyncEndpointPool
    ) -> tuple[AsyncFilesFacade, AsyncGitFacade, AsyncLLMFacade]:
        """Routed files, git and LLM, the new-path client on the kernel's shared ``pool``."""
        return await routed_async_workers(self.runtime, root, config, base_url, pool)

    async def aclose(self) -> None:
        """Let shadow judgements finish, then stop the runtime's watcher and threads."""
        await self.runtime.drain()
        await asyncio.to_thread(self.runtime.close)
