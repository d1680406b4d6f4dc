"""Plain (unrouted) agents of each implementation, built from a workspace's config as the loops build theirs."""

from __future__ import annotations

from pathlib import Path

import core_async.components as async_components
import core_async.config as async_config
import core_sync.components as sync_components
import core_sync.config as sync_config
import legacy.components as legacy_components
import legacy.config as legacy_config
from bridge.runtime import BridgeRuntime
from bridge.wiring import (
    routed_async_components,
    routed_async_config,
    routed_sync_components,
    routed_sync_config,
)
from core_async.agent import AsyncAgent
from core_async.llm_transport import AsyncEndpointPool
from core_sync.agent import SyncAgent
from core_sync.llm_transport import SyncEndpointPool
from legacy.agent import LegacyAgent


def legacy_agent(root: Path, llm_url: str | None = None) -> LegacyAgent:
    """The legacy agent on ``root`` (``llm_url`` overrides ``llm.base_url``)."""
    config = legacy_config.load_config(root)
    url = llm_url or config.llm.base_url
    assert url, "no LLM endpoint for the test agent"
    return LegacyAgent(root, config, *legacy_components.build_components(root, config, url))


def sync_agent(root: Path, llm_url: str | None = None, *, pool: SyncEndpointPool | None = None) -> SyncAgent:
    """The generated sync twin's agent on ``root``."""
    config = sync_config.load_config(root)
    url = llm_url or config.llm.base_url
    assert url, "no LLM endpoint for the test agent"
    return SyncAgent(root, config, *sync_components.build_components(root, config, url, pool=pool))


async def async_agent(
    root: Path, llm_url: str | None = None, *, pool: AsyncEndpointPool | None = None
) -> AsyncAgent:
    """The ``core_async`` agent on ``root``."""
    config = await async_config.load_config(root)
    url = llm_url or config.llm.base_url
    assert url, "no LLM endpoint for the test agent"
    return AsyncAgent(root, config, *async_components.build_components(root, config, url, pool=pool))


def routed_legacy_agent(root: Path, runtime: BridgeRuntime, llm_url: str) -> LegacyAgent:
    """The legacy loop as ``codeagent run --loop legacy`` wires it: every component behind its facade."""
    config = routed_sync_config(runtime, root).load()
    return LegacyAgent(root, config, *routed_sync_components(runtime, root, config, llm_url))


async def routed_async_agent(
    root: Path, runtime: BridgeRuntime, llm_url: str, pool: AsyncEndpointPool
) -> AsyncAgent:
    """The async agent with every component behind its facade; ``pool`` must record (see the bridge's wiring)."""
    config = await routed_async_config(runtime, root).load()
    return AsyncAgent(root, config, *await routed_async_components(runtime, root, config, llm_url, pool))
