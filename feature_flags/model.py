"""The flag file's model: which loop runs, each component's mode, rollback thresholds.

The file is TOML and meant to be edited by a person::

    version = 1
    loop = "legacy"              # legacy | async
    fallback_to_legacy = true    # the async loop falls back to legacy if it cannot run

    [rollback]
    max_error_rate = 0.05
    max_mismatch_rate = 0.0
    min_samples = 20
    window = 200

    [components.llm]
    mode = "canary"              # legacy | new | shadow | canary
    percent = 10                 # canary: share of todos on the new path (sticky per todo id)

Components not named in the file run in ``legacy`` mode.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

COMPONENTS: tuple[str, ...] = ("config", "llm", "files", "todos", "status", "checkpoints", "git")


class Mode(StrEnum):
    """How a component's calls are routed."""

    LEGACY = "legacy"
    NEW = "new"
    SHADOW = "shadow"
    CANARY = "canary"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComponentFlag(_Model):
    """One component's routing."""

    mode: Mode
    percent: float = Field(default=0.0, ge=0, le=100)
    serve: Literal["legacy", "new"] = "legacy"
    sample: float = Field(default=1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _percent_only_for_canary(self) -> ComponentFlag:
        if self.mode is not Mode.CANARY and self.percent:
            raise ValueError("percent is only meaningful with mode = 'canary'")
        return self


class RollbackPolicy(_Model):
    """When the new path of a component is rolled back automatically."""

    enabled: bool = True
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_mismatch_rate: float = Field(default=0.0, ge=0, le=1)
    min_samples: int = Field(default=20, ge=1)
    window: int = Field(default=200, ge=1)

    @model_validator(mode="after")
    def _window_holds_min_samples(self) -> RollbackPolicy:
        if self.window < self.min_samples:
            raise ValueError("window must be at least min_samples")
        return self


class FlagSet(_Model):
    """The whole flag file, validated."""

    version: Literal[1]
    loop: Literal["legacy", "async"]
    fallback_to_legacy: bool = True
    rollback: RollbackPolicy = Field(default_factory=RollbackPolicy)
    components: dict[str, ComponentFlag] = Field(default_factory=dict)

    @field_validator("components")
    @classmethod
    def _known_components(cls, value: dict[str, ComponentFlag]) -> dict[str, ComponentFlag]:
        unknown = sorted(set(value) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(COMPONENTS)}")
        return value

    def flag(self, component: str) -> ComponentFlag:
        """The flag of ``component`` (``legacy`` when the file does not name it)."""
        return self.components.get(component, _DEFAULT)


_DEFAULT = ComponentFlag(mode=Mode.LEGACY)


def default_flags() -> FlagSet:
    """Everything on the legacy path: what a workspace without a flag file runs."""
    return FlagSet(version=1, loop="legacy")
