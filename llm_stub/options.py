"""The stub LLM's knobs: latency, jitter, injected faults, seed, rules file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

#: Fault kinds the stub can inject, by the name used in options, queues and stats.
FAULT_KINDS: tuple[str, ...] = ("500", "429", "quota", "hang", "reset", "malformed")

#: Faults drawn at random by default (``quota`` is fatal to a client, so it is opt-in).
DEFAULT_FAULTS: tuple[str, ...] = ("500", "429", "hang", "reset", "malformed")

#: A queued "fault" that lets one request through untouched (for scripts like 429, ok, 500).
NO_FAULT = "ok"


@dataclass
class StubOptions:
    """Behaviour of the stub LLM server.

    ``latency_ms`` is added before every chat completion, plus a uniform draw in
    ``[-jitter_ms, +jitter_ms]`` (never below zero). With probability
    ``fail_rate`` a request gets a fault drawn from ``faults``. ``seed`` makes
    every draw reproducible. ``rules_path`` names a TOML rules file (``None``:
    the bundled ``rules.toml``). A 429 tells the client to retry after
    ``retry_after_s``; a ``hang`` lasts ``hang_s`` unless the client gives up or
    the server stops first.
    """

    latency_ms: float = 0
    jitter_ms: float = 0
    fail_rate: float = 0.0
    faults: tuple[str, ...] = DEFAULT_FAULTS
    seed: int = 0
    rules_path: str | None = None
    retry_after_s: float = 1.0
    hang_s: float = 3600.0
    model: str = "stub-coder"

    def __post_init__(self) -> None:
        self.faults = tuple(self.faults)
        validate_options(self)


def validate_options(options: StubOptions) -> None:
    """Raise :class:`ValueError` naming the first knob that is out of range."""
    if options.latency_ms < 0:
        raise ValueError(f"latency_ms must be >= 0, got {options.latency_ms}")
    if options.jitter_ms < 0:
        raise ValueError(f"jitter_ms must be >= 0, got {options.jitter_ms}")
    if not 0.0 <= options.fail_rate <= 1.0:
        raise ValueError(f"fail_rate must be between 0 and 1, got {options.fail_rate}")
    if options.retry_after_s < 0:
        raise ValueError(f"retry_after_s must be >= 0, got {options.retry_after_s}")
    if options.hang_s < 0:
        raise ValueError(f"hang_s must be >= 0, got {options.hang_s}")
    for kind in options.faults:
        check_fault_kind(kind)
    if options.fail_rate > 0 and not options.faults:
        raise ValueError("fail_rate > 0 needs at least one fault kind in faults")
    if not options.model:
        raise ValueError("model must not be empty")


def check_fault_kind(kind: str, *, allow_ok: bool = False) -> str:
    """Return ``kind`` if it names a fault (or ``ok`` when allowed), else raise ValueError."""
    if kind in FAULT_KINDS or (allow_ok and kind == NO_FAULT):
        return kind
    allowed = ", ".join(FAULT_KINDS + ((NO_FAULT,) if allow_ok else ()))
    raise ValueError(f"unknown fault kind {kind!r} (expected one of: {allowed})")


def parse_fault_list(text: str) -> tuple[str, ...]:
    """Parse a comma-separated list such as ``500,429,hang`` (blank items are ignored)."""
    return tuple(check_fault_kind(item.strip()) for item in text.split(",") if item.strip())


def changed_options(options: StubOptions, changes: dict[str, Any]) -> StubOptions:
    """A validated copy of ``options`` with ``changes`` applied; unknown names raise ValueError."""
    names = {f.name for f in dataclasses.fields(StubOptions)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(f"unknown stub option(s): {', '.join(unknown)}")
    clean: dict[str, Any] = {}
    for name, value in changes.items():
        try:
            clean[name] = _COERCE.get(name, _same)(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad value for stub option {name}: {value!r} ({exc})") from None
    return dataclasses.replace(options, **clean)


def _same(value: Any) -> Any:
    return value


def _faults(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return parse_fault_list(value)
    if not isinstance(value, (list, tuple)):
        raise TypeError("expected a list of fault kinds or a comma-separated string")
    return tuple(check_fault_kind(str(kind)) for kind in value)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("expected a number")
    return float(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise TypeError("expected an integer")
    return int(value)


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


_COERCE: dict[str, Any] = {
    "latency_ms": _number,
    "jitter_ms": _number,
    "fail_rate": _number,
    "retry_after_s": _number,
    "hang_s": _number,
    "seed": _integer,
    "faults": _faults,
    "rules_path": _optional_text,
    "model": str,
}


def options_view(options: StubOptions) -> dict[str, Any]:
    """The options as a JSON-ready dict."""
    data = dataclasses.asdict(options)
    data["faults"] = list(options.faults)
    return data
