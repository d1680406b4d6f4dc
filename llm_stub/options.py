"""The stub LLM's knobs: latency (fixed with jitter, or lognormal), injected faults, seed, rules file."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

#: Fault kinds the stub can inject, by the name used in options, queues and stats.
#: ``cut``: a 200 whose body (or stream) breaks off half-way; ``broken_edit``: a well-formed 200
#: whose edit blocks are broken (what a model sometimes answers; not a transport fault).
FAULT_KINDS: tuple[str, ...] = ("500", "429", "quota", "hang", "reset", "malformed", "cut", "broken_edit")

#: Faults served on top of the real answer (the stub computes it first).
ANSWER_FAULTS: frozenset[str] = frozenset({"cut", "broken_edit"})

#: Faults drawn at random by default (``quota`` is fatal to a client, so it is opt-in).
DEFAULT_FAULTS: tuple[str, ...] = ("500", "429", "hang", "reset", "malformed")

#: A queued "fault" that lets one request through untouched (for scripts like 429, ok, 500).
NO_FAULT = "ok"

#: How the random draws (latency, fault) are assigned to requests.
#: ``sequence``: one seeded stream, in the order the requests arrive.
#: ``prompt``: each request's draws come from its own generator, seeded by the seed, the request's
#: messages and how many times the stub has seen those messages since the last reset; the same
#: workload gets the same latencies and faults whatever order its requests arrive in.
DRAW_MODES: tuple[str, ...] = ("sequence", "prompt")

#: The standard normal's 99th percentile: a lognormal's p99 is ``median * exp(Z99 * sigma)``.
Z99 = 2.3263478740408408


@dataclass
class StubOptions:
    """Behaviour of the stub LLM server.

    ``latency_ms`` is added before every chat completion, plus a uniform draw in
    ``[-jitter_ms, +jitter_ms]`` (never below zero). With ``latency_p99_ms``
    set, the latency is drawn instead from a lognormal whose median is
    ``latency_ms`` and whose 99th percentile is ``latency_p99_ms`` (jitter must
    then be 0). ``fault_rates`` gives a probability per fault kind (e.g.
    ``{"429": 0.03, "hang": 0.005}``); a request that draws none of them may
    still get a fault with probability ``fail_rate``, its kind drawn uniformly
    from ``faults``. ``seed`` makes every draw reproducible; ``draws`` says how
    draws are assigned to requests (see :data:`DRAW_MODES`). ``rules_path``
    names a TOML rules file (``None``: the bundled ``rules.toml``). A 429 tells
    the client to retry after ``retry_after_s``; a ``hang`` lasts ``hang_s``
    unless the client gives up or the server stops first.

    ``hold_until_in_flight`` (0: off) holds every chat completion, before its
    latency, until that many API requests have been in flight at once: what a
    test of concurrency waits for, instead of a latency it hopes is long
    enough for every request to arrive on a loaded machine. Once reached, the
    hold is open for the held requests and every later one, until the option
    is set again or the counters are reset. A request held ``hold_timeout_s``
    goes on anyway (``max_in_flight`` then shows how far short the clients fell).
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
    latency_p99_ms: float | None = None
    fault_rates: dict[str, float] = field(default_factory=dict)
    draws: str = "sequence"
    hold_until_in_flight: int = 0
    hold_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self.faults = tuple(self.faults)
        self.fault_rates = dict(self.fault_rates)
        validate_options(self)

    @property
    def lognormal_sigma(self) -> float | None:
        """The lognormal's sigma (``None``: fixed latency with jitter)."""
        if self.latency_p99_ms is None:
            return None
        return math.log(self.latency_p99_ms / self.latency_ms) / Z99

    @property
    def mean_latency_ms(self) -> float:
        """The expected latency per answer (the lognormal's mean, or ``latency_ms``)."""
        sigma = self.lognormal_sigma
        if sigma is None:
            return float(self.latency_ms)
        return float(self.latency_ms) * math.exp(sigma * sigma / 2)


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
    if options.latency_p99_ms is not None:
        if options.latency_ms <= 0:
            raise ValueError("a lognormal latency (latency_p99_ms) needs latency_ms (its median) > 0")
        if options.latency_p99_ms < options.latency_ms:
            raise ValueError(
                f"latency_p99_ms must be >= latency_ms (the median), got {options.latency_p99_ms}"
            )
        if options.jitter_ms:
            raise ValueError("jitter_ms must be 0 with a lognormal latency (latency_p99_ms)")
    for kind, rate in options.fault_rates.items():
        check_fault_kind(kind)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate of {kind} must be between 0 and 1, got {rate}")
    if sum(options.fault_rates.values()) > 1.0:
        raise ValueError(f"fault rates add up to more than 1: {options.fault_rates}")
    if options.draws not in DRAW_MODES:
        raise ValueError(f"draws must be one of {', '.join(DRAW_MODES)}, got {options.draws!r}")
    if options.hold_until_in_flight < 0:
        raise ValueError(f"hold_until_in_flight must be >= 0, got {options.hold_until_in_flight}")
    if options.hold_timeout_s < 0:
        raise ValueError(f"hold_timeout_s must be >= 0, got {options.hold_timeout_s}")


def check_fault_kind(kind: str, *, allow_ok: bool = False) -> str:
    """Return ``kind`` if it names a fault (or ``ok`` when allowed), else raise ValueError."""
    if kind in FAULT_KINDS or (allow_ok and kind == NO_FAULT):
        return kind
    allowed = ", ".join(FAULT_KINDS + ((NO_FAULT,) if allow_ok else ()))
    raise ValueError(f"unknown fault kind {kind!r} (expected one of: {allowed})")


def parse_fault_list(text: str) -> tuple[str, ...]:
    """Parse a comma-separated list such as ``500,429,hang`` (blank items are ignored)."""
    return tuple(check_fault_kind(item.strip()) for item in text.split(",") if item.strip())


def parse_fault_rates(text: str) -> dict[str, float]:
    """Parse per-kind fault rates such as ``429=0.03,hang=0.005`` (blank items are ignored)."""
    rates: dict[str, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        kind, sep, rate = item.partition("=")
        if not sep:
            raise ValueError(f"expected KIND=RATE in fault rates, got {item.strip()!r}")
        try:
            rates[check_fault_kind(kind.strip())] = float(rate)
        except ValueError as exc:
            raise ValueError(f"bad fault rate {item.strip()!r}: {exc}") from None
    return rates


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


def _optional_number(value: Any) -> float | None:
    return None if value is None else _number(value)


def _fault_rates(value: Any) -> dict[str, float]:
    if isinstance(value, str):
        return parse_fault_rates(value)
    if not isinstance(value, dict):
        raise TypeError("expected an object of fault kinds and rates or a string like 429=0.03,hang=0.005")
    return {check_fault_kind(str(kind)): _number(rate) for kind, rate in value.items()}


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
    "latency_p99_ms": _optional_number,
    "fault_rates": _fault_rates,
    "draws": str,
    "hold_until_in_flight": _integer,
    "hold_timeout_s": _number,
}


def options_view(options: StubOptions) -> dict[str, Any]:
    """The options as a JSON-ready dict."""
    data = dataclasses.asdict(options)
    data["faults"] = list(options.faults)
    data["fault_rates"] = dict(options.fault_rates)
    return data
