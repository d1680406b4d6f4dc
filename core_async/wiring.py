"""Build the agent from a workspace with this package's components (the plain, unrouted wiring).

The bridge builds its own facades instead; this is what runs when every
component is on its new implementation, and what the tests use.
"""

from __future__ import annotations

from pathlib import Path

from codeagent.config import CONFIG_RELPATH
from codeagent.errors import ConfigError
from core_async.agent import AsyncAgent
from core_async.checkpoints import AsyncCheckpointJsonStore
from core_async.config import load_config
from core_async.files import AsyncWorkspaceFiles
from core_async.git import AsyncGitRepo
from core_async.llm import AsyncLLMClient
from core_async.llm_transport import DEFAULT_HTTP_VERSION, AsyncEndpointPool, HTTPVersion
from core_async.status import AsyncStatusJsonStore
from core_async.todos import AsyncTodoJsonStore


async def build_agent(
    workspace: Path,
    llm_url: str | None = None,
    *,
    pool: AsyncEndpointPool | None = None,
    http_version: HTTPVersion | str = DEFAULT_HTTP_VERSION,
) -> AsyncAgent:
    """An agent on ``workspace`` with this package's components and the workspace's config.

    ``llm_url`` overrides ``llm.base_url``; with neither, raises :class:`ConfigError`.
    A given ``pool`` is shared (and stays open when the agent closes).
    """
    root = Path(workspace)
    config = await load_config(root)
    base_url = llm_url or config.llm.base_url
    if not base_url:
        raise ConfigError(
            CONFIG_RELPATH, "no LLM endpoint: set llm.base_url or pass an LLM URL", field="llm.base_url"
        )
    llm = AsyncLLMClient(
        base_url,
        config.llm.api_key,
        config.llm.model,
        timeout=config.llm.timeout,
        max_retries=config.llm.max_retries,
        temperature=config.llm.temperature,
        pool=pool,
        http_version=http_version,
    )
    return AsyncAgent(
        root,
        config,
        todos=AsyncTodoJsonStore(root),
        status=AsyncStatusJsonStore(root),
        checkpoints=AsyncCheckpointJsonStore(root),
        files=AsyncWorkspaceFiles(root, max_bytes=config.max_file_bytes),
        git=AsyncGitRepo(root, config.git.author_name, config.git.author_email),
        llm=llm,
    )
