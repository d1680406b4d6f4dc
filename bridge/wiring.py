"""Build either loop with every component behind its facade.

``build_routed_legacy_agent`` gives the legacy ``while True`` loop sync
facades whose new path is the generated ``core_sync`` twin;
``build_routed_async_agent`` gives the async core async facades whose legacy
path runs off the event loop. The config component is routed once, at build
time (it is read at start-up; hot reload belongs to the kernel).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

import core_async.checkpoints as a_checkpoints
import core_async.config as a_config
import core_async.files as a_files
import core_async.git as a_git
import core_async.llm as a_llm
import core_async.llm_transport as a_transport
import core_async.status as a_status
import core_async.todos as a_todos
import core_sync.checkpoints as s_checkpoints
import core_sync.config as s_config
import core_sync.files as s_files
import core_sync.git as s_git
import core_sync.llm as s_llm
import core_sync.llm_transport as s_transport
import core_sync.status as s_status
import core_sync.todos as s_todos
import legacy.checkpoints as l_checkpoints
import legacy.config as l_config
import legacy.files as l_files
import legacy.git as l_git
import legacy.llm as l_llm
import legacy.status as l_status
import legacy.todos as l_todos
from bridge.facades import (
    AsyncCheckpointsFacade,
    AsyncFilesFacade,
    AsyncGitFacade,
    AsyncStatusFacade,
    AsyncTodosFacade,
    SyncCheckpointsFacade,
    SyncFilesFacade,
    SyncGitFacade,
    SyncStatusFacade,
    SyncTodosFacade,
)
from bridge.llm_facade import AsyncLLMFacade, SyncLLMFacade
from bridge.llm_replay import (
    AsyncRecordingTransport,
    AsyncReplayTransport,
    RecordingTransport,
    ReplayTransport,
)
from bridge.runtime import BridgeRuntime
from codeagent.config import CONFIG_RELPATH, AgentConfig
from codeagent.errors import ConfigError
from core_async.agent import AsyncAgent
from legacy.agent import LegacyAgent

_NO_BACKOFF: dict[str, Any] = {"backoff_base": 0.0, "backoff_max": 0.0, "max_retry_after": 0.0}


def _base_url(config: AgentConfig, llm_url: str | None) -> str:
    base_url = llm_url or config.llm.base_url
    if not base_url:
        raise ConfigError(
            CONFIG_RELPATH, "no LLM endpoint: set llm.base_url or pass an LLM URL", field="llm.base_url"
        )
    return base_url


def _llm_args(config: AgentConfig, base_url: str) -> dict[str, Any]:
    c = config.llm
    return {
        "base_url": base_url,
        "api_key": c.api_key,
        "model": c.model,
        "timeout": c.timeout,
        "max_retries": c.max_retries,
        "temperature": c.temperature,
    }


def build_routed_legacy_agent(root: Path, runtime: BridgeRuntime, llm_url: str | None = None) -> LegacyAgent:
    """The legacy loop with every component routed (new path: the generated sync twins)."""
    d = runtime.dispatcher
    config: AgentConfig = d.call(
        "config", "load", lambda: l_config.load_config(root), lambda: s_config.load_config(root)
    )
    args = _llm_args(config, _base_url(config, llm_url))
    name, email, max_bytes = config.git.author_name, config.git.author_email, config.max_file_bytes
    served_pool = s_transport.SyncEndpointPool(wrap_transport=RecordingTransport)
    replay_pool = s_transport.SyncEndpointPool(wrap_transport=lambda _t: ReplayTransport())
    llm = SyncLLMFacade(
        d,
        l_llm.LLMClient(**args, transport=RecordingTransport(httpx.HTTPTransport())),
        s_llm.SyncLLMClient(**args, pool=served_pool),
        l_llm.LLMClient(**args, **_NO_BACKOFF, transport=ReplayTransport()),
        s_llm.SyncLLMClient(**args, **_NO_BACKOFF, pool=replay_pool),
        pools=[served_pool, replay_pool],
    )
    return LegacyAgent(
        root,
        config,
        todos=SyncTodosFacade(
            d,
            root,
            l_todos.TodoStore(root),
            s_todos.SyncTodoJsonStore(root),
            l_todos.TodoStore,
            s_todos.SyncTodoJsonStore,
        ),
        status=SyncStatusFacade(
            d,
            root,
            l_status.StatusStore(root),
            s_status.SyncStatusJsonStore(root),
            l_status.StatusStore,
            s_status.SyncStatusJsonStore,
        ),
        checkpoints=SyncCheckpointsFacade(
            d,
            root,
            l_checkpoints.CheckpointStore(root),
            s_checkpoints.SyncCheckpointJsonStore(root),
            l_checkpoints.CheckpointStore,
            s_checkpoints.SyncCheckpointJsonStore,
        ),
        files=SyncFilesFacade(
            d,
            root,
            l_files.Files(root, max_bytes),
            s_files.SyncWorkspaceFiles(root, max_bytes),
            lambda r: l_files.Files(r, max_bytes),
            lambda r: s_files.SyncWorkspaceFiles(r, max_bytes),
        ),
        git=SyncGitFacade(
            d,
            root,
            l_git.GitRepo(root, name, email),
            s_git.SyncGitRepo(root, name, email),
            lambda r: l_git.GitRepo(r, name, email),
            lambda r: s_git.SyncGitRepo(r, name, email),
        ),
        llm=llm,
    )


def routed_async_stores(
    runtime: BridgeRuntime, root: Path
) -> tuple[AsyncTodosFacade, AsyncStatusFacade, AsyncCheckpointsFacade]:
    """The async core's state stores, routed."""
    d = runtime.dispatcher
    return (
        AsyncTodosFacade(
            d,
            root,
            l_todos.TodoStore(root),
            a_todos.AsyncTodoJsonStore(root),
            l_todos.TodoStore,
            a_todos.AsyncTodoJsonStore,
        ),
        AsyncStatusFacade(
            d,
            root,
            l_status.StatusStore(root),
            a_status.AsyncStatusJsonStore(root),
            l_status.StatusStore,
            a_status.AsyncStatusJsonStore,
        ),
        AsyncCheckpointsFacade(
            d,
            root,
            l_checkpoints.CheckpointStore(root),
            a_checkpoints.AsyncCheckpointJsonStore(root),
            l_checkpoints.CheckpointStore,
            a_checkpoints.AsyncCheckpointJsonStore,
        ),
    )


async def routed_async_workers(
    runtime: BridgeRuntime, root: Path, config: AgentConfig, base_url: str
) -> tuple[AsyncFilesFacade, AsyncGitFacade, AsyncLLMFacade]:
    """The async core's configuration-dependent components (files, git, LLM), routed.

    The new-path LLM client gets its own pool whose transport records
    exchanges, so a shadow run can replay them to the legacy client.
    """
    d = runtime.dispatcher
    args = _llm_args(config, base_url)
    name, email, max_bytes = config.git.author_name, config.git.author_email, config.max_file_bytes

    def legacy_clients() -> tuple[l_llm.LLMClient, l_llm.LLMClient]:
        # httpx builds its TLS context in the constructor: done off the loop.
        return (
            l_llm.LLMClient(**args, transport=RecordingTransport(httpx.HTTPTransport())),
            l_llm.LLMClient(**args, **_NO_BACKOFF, transport=ReplayTransport()),
        )

    legacy_llm, legacy_replay = await d.off_loop(legacy_clients)
    served_pool = a_transport.AsyncEndpointPool(wrap_transport=AsyncRecordingTransport)
    replay_pool = a_transport.AsyncEndpointPool(wrap_transport=lambda _t: AsyncReplayTransport())
    llm = AsyncLLMFacade(
        d,
        legacy_llm,
        a_llm.AsyncLLMClient(**args, pool=served_pool),
        legacy_replay,
        a_llm.AsyncLLMClient(**args, **_NO_BACKOFF, pool=replay_pool),
        pools=[served_pool, replay_pool],
    )
    files = AsyncFilesFacade(
        d,
        root,
        l_files.Files(root, max_bytes),
        a_files.AsyncWorkspaceFiles(root, max_bytes),
        lambda r: l_files.Files(r, max_bytes),
        lambda r: a_files.AsyncWorkspaceFiles(r, max_bytes),
    )
    git = AsyncGitFacade(
        d,
        root,
        l_git.GitRepo(root, name, email),
        a_git.AsyncGitRepo(root, name, email),
        lambda r: l_git.GitRepo(r, name, email),
        lambda r: a_git.AsyncGitRepo(r, name, email),
    )
    return files, git, llm


async def build_routed_async_agent(
    root: Path, runtime: BridgeRuntime, llm_url: str | None = None
) -> AsyncAgent:
    """The async core's agent with every component routed (legacy path: off the event loop)."""
    d = runtime.dispatcher

    async def new_config() -> AgentConfig:
        return await a_config.load_config(root)

    config: AgentConfig = await d.acall("config", "load", lambda: l_config.load_config(root), new_config)
    todos, status, checkpoints = routed_async_stores(runtime, root)
    files, git, llm = await routed_async_workers(runtime, root, config, _base_url(config, llm_url))
    return AsyncAgent(
        root, config, todos=todos, status=status, checkpoints=checkpoints, files=files, git=git, llm=llm
    )


class RoutedComponents:
    """A kernel :class:`~core_async.kernel.components.ComponentProvider` handing out the bridge's facades."""

    def __init__(self, runtime: BridgeRuntime) -> None:
        self.runtime = runtime

    def stores(self, root: Path) -> tuple[AsyncTodosFacade, AsyncStatusFacade, AsyncCheckpointsFacade]:
        """Routed state stores."""
        return routed_async_stores(self.runtime, root)

    async def workers(
        self, root: Path, config: AgentConfig, base_url: str, pool: a_transport.AsyncEndpointPool
    ) -> tuple[AsyncFilesFacade, AsyncGitFacade, AsyncLLMFacade]:
        """Routed files, git and LLM (the kernel's shared pool is not used: shadow needs recording)."""
        return await routed_async_workers(self.runtime, root, config, base_url)

    async def aclose(self) -> None:
        """Let shadow candidates finish, then stop the runtime's watcher and threads."""
        await self.runtime.dispatcher.drain()
        await asyncio.to_thread(self.runtime.close)
