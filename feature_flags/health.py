"""Per-component health as the router last saw it, for ``codeagent flags show``.

The router of a running agent writes this small JSON file beside the flag
file every few seconds (atomically); the CLI, in another process, reads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(slots=True)
class ComponentHealth:
    """Calls on the new path and what went wrong, over the rollback window."""

    calls: int = 0
    errors: int = 0
    mismatches: int = 0
    rollback: str = "armed"


def health_path(flags_path: Path) -> Path:
    """Where the health file of a flag file lives."""
    return flags_path.with_name(flags_path.stem + "-health.json")


def read_health(flags_path: Path) -> dict[str, ComponentHealth]:
    """The last health written; empty when no agent has written one (or it is unreadable)."""
    try:
        raw = json.loads(health_path(flags_path).read_text(encoding="utf-8"))
        return {name: ComponentHealth(**value) for name, value in raw.get("components", {}).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def render_health(components: dict[str, ComponentHealth]) -> str:
    """The JSON text of a health file."""
    return json.dumps({"components": {k: asdict(v) for k, v in components.items()}}, indent=2) + "\n"
