"""The agent's configuration model and its parser (sans-I/O).

The legacy file is ``.agent/config.json`` in the workspace. Every key is
optional; unknown keys are refused so that a typo is reported instead of being
silently ignored.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from codeagent.errors import ConfigError
from codeagent.jsondoc import parse_document
from codeagent.paths import CONFIG_RELPATH

__all__ = [
    "CONFIG_RELPATH",
    "APIConfig",
    "AgentConfig",
    "GitConfig",
    "LLMConfig",
    "LimitsConfig",
    "parse_config",
    "render_config",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: The transports an endpoint may be spoken to with (see ``core_async/llm_transport.py``).
LLMTransport = Literal["auto", "aiohttp", "http1", "http2", "probe"]


class LLMConfig(_Model):
    """Where the OpenAI-compatible endpoint is and how to talk to it.

    The keys after ``temperature`` steer the async client (and its generated
    sync twin); the legacy client ignores them and keeps its behaviour:

    * ``transport``: ``auto`` (the client's default: HTTP/1.1 on aiohttp for the
      async client, on httpcore for the sync twin), ``aiohttp``, ``http1``
      (httpcore), ``http2`` (httpcore, prior knowledge on ``http://``) or
      ``probe`` (HTTP/2 if the endpoint speaks it, else ``http1``);
    * ``hedge``: send one copy of a request that has no first byte by the
      endpoint's observed p95 (at most 5% of requests; async only);
    * ``stream``: ask for the answer as server-sent events and join them;
    * ``stream_idle_timeout``: seconds an answer may go without a byte once it
      has started (then it is retried); ``null`` turns it off (async only);
    * ``pace_retry_after``: during a burst of 429s every request to the
      endpoint waits for the latest ``Retry-After``.
    """

    base_url: str | None = None
    api_key: str = "sk-local"
    model: str = "stub-coder"
    timeout: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    temperature: float = Field(default=0.0, ge=0, le=2)
    transport: LLMTransport = "auto"
    hedge: bool = True
    stream: bool = False
    stream_idle_timeout: float | None = Field(default=10.0, gt=0)
    pace_retry_after: bool = True


class APIConfig(_Model):
    """The agent's own HTTP API."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    token: str | None = None


class GitConfig(_Model):
    """Identity used for the agent's commits."""

    author_name: str = "Code Agent"
    author_email: str = "codeagent@localhost"


class LimitsConfig(_Model):
    """How much the async loop does at once (each unset key keeps the loop's default).

    Read by the async loop only (the legacy loop does one thing at a time);
    ``per_workspace`` applies to every workspace of the process, the others to
    the whole process. Hot-reloaded: a larger limit takes effect at once, a
    smaller one as running work finishes.
    """

    max_concurrency: int | None = Field(default=None, ge=1)
    per_workspace: int | None = Field(default=None, ge=1)
    llm_slots: int | None = Field(default=None, ge=1)
    file_slots: int | None = Field(default=None, ge=1)

    def given(self) -> dict[str, int]:
        """The keys the file sets."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class AgentConfig(_Model):
    """The whole configuration document."""

    llm: LLMConfig = Field(default_factory=LLMConfig)
    api: APIConfig = Field(default_factory=APIConfig)
    git: GitConfig = Field(default_factory=GitConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    poll_interval: float = Field(default=1.0, gt=0)
    max_file_bytes: int = Field(default=1_000_000, gt=0)


def parse_config(text: str, source: str = CONFIG_RELPATH) -> AgentConfig:
    """Parse and validate a JSON config document; errors name the file, field and line."""
    if not text.strip():
        return AgentConfig()
    return parse_document(text, AgentConfig, source, ConfigError)


def render_config(config: AgentConfig) -> str:
    """The JSON text of a config, omitting nothing (used by ``init`` and migration)."""
    return json.dumps(config.model_dump(mode="json"), indent=2) + "\n"
