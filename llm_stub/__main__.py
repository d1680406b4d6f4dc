"""``python -m llm_stub``: serve the stub LLM in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from llm_stub.options import DEFAULT_FAULTS, DRAW_MODES, StubOptions, parse_fault_list, parse_fault_rates
from llm_stub.rules import RulesError
from llm_stub.server import serve_forever


def build_parser() -> argparse.ArgumentParser:
    """The command-line options (the same as ``codeagent llm-stub``)."""
    parser = argparse.ArgumentParser(
        prog="python -m llm_stub",
        description="OpenAI-compatible stub LLM with scripted answers and faults.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free port, shown when ready)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added before each completion")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +/- jitter on the latency")
    parser.add_argument(
        "--latency-p99-ms",
        type=float,
        default=None,
        help="draw each latency from a lognormal: median --latency-ms, this 99th percentile",
    )
    parser.add_argument(
        "--fail-rate", type=float, default=0.0, help="probability of a fault per request (0..1)"
    )
    parser.add_argument(
        "--faults",
        default=",".join(DEFAULT_FAULTS),
        help="fault kinds to draw from: 500,429,quota,hang,reset,malformed (default %(default)s)",
    )
    parser.add_argument(
        "--fault-rates",
        default="",
        metavar="KIND=P,...",
        help="probability per fault kind, e.g. 429=0.03,hang=0.005 (before --fail-rate's draw)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault and latency draws")
    parser.add_argument(
        "--draws",
        choices=DRAW_MODES,
        default="sequence",
        help="sequence: one seeded stream in arrival order; prompt: each request's draws seeded by"
        " its messages and their count, whatever the arrival order (default %(default)s)",
    )
    parser.add_argument("--rules", default=None, metavar="PATH", help="TOML rules file (default: bundled)")
    parser.add_argument(
        "--retry-after", type=float, default=1.0, help="seconds a 429 asks to wait (default 1)"
    )
    parser.add_argument("--hang-s", type=float, default=3600.0, help="how long a 'hang' fault lasts")
    parser.add_argument("--model", default="stub-coder", help="model name listed by /v1/models")
    parser.add_argument(
        "--hold-until-in-flight",
        type=int,
        default=0,
        metavar="N",
        help="hold every completion until N requests are in flight at once (default 0: off)",
    )
    parser.add_argument(
        "--hold-timeout-s", type=float, default=30.0, help="longest hold of one request (default 30)"
    )
    parser.add_argument("--log-level", default="WARNING", help="log level on stderr (default WARNING)")
    parser.add_argument("--quiet-stdout", action="store_true", help=argparse.SUPPRESS)
    return parser


def options_from_args(args: argparse.Namespace) -> StubOptions:
    """StubOptions from parsed arguments (ValueError on a bad value)."""
    return StubOptions(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        fail_rate=args.fail_rate,
        faults=parse_fault_list(args.faults),
        seed=args.seed,
        rules_path=args.rules,
        retry_after_s=args.retry_after,
        hang_s=args.hang_s,
        model=args.model,
        latency_p99_ms=args.latency_p99_ms,
        fault_rates=parse_fault_rates(args.fault_rates),
        draws=args.draws,
        hold_until_in_flight=args.hold_until_in_flight,
        hold_timeout_s=args.hold_timeout_s,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        options = options_from_args(args)
        ready = _print_then_quiet if args.quiet_stdout else None
        serve_forever(options, args.host, args.port, ready=ready)
    except (ValueError, RulesError, OSError) as exc:
        print(f"codeagent llm-stub: {exc}", file=sys.stderr)
        return 2
    return 0


def _print_then_quiet(line: str) -> None:
    """Print the ready line, then send stdout to /dev/null (the parent closes its end of the pipe)."""
    print(line, flush=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
