"""The bare legacy agent (no bridge, no flag watcher): the benchmarks' reference contender."""

from __future__ import annotations

from pathlib import Path

import legacy.components as components
from legacy.agent import LegacyAgent
from legacy.config import load_config


def legacy_agent(root: Path, llm_url: str) -> LegacyAgent:
    """The legacy agent on ``root`` with its own components, talking to ``llm_url``."""
    config = load_config(root)
    return LegacyAgent(root, config, *components.build_components(root, config, llm_url))
