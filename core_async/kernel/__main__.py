"""``python -m core_async.kernel run|serve --workspace W [--workspace W2 ...]``: the kernel without the CLI.

Exit status 0 after a graceful stop (SIGTERM / SIGINT), 2 for a bad workspace or configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from codeagent.errors import AgentError
from core_async.kernel.entry import run_async, serve_async
from core_async.kernel.limits import ResourceLimits


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core_async.kernel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "serve"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--workspace", "-w", action="append", type=Path, required=True)
        cmd.add_argument("--llm-url", default=None)
        cmd.add_argument("--grace", type=float, default=10.0, help="seconds running todos get on SIGTERM")
        cmd.add_argument("--no-uvloop", action="store_true")
        cmd.add_argument("--max-concurrency", type=int, default=64)
        cmd.add_argument("--per-workspace", type=int, default=16)
        cmd.add_argument("--llm-slots", type=int, default=32)
    sub.choices["run"].add_argument("--until-idle", action="store_true")
    serve = sub.choices["serve"]
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--token", default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run; return the exit status."""
    args = _parser().parse_args(argv)
    limits = ResourceLimits(
        max_concurrency=args.max_concurrency, per_workspace=args.per_workspace, llm_slots=args.llm_slots
    )
    try:
        if args.command == "run":
            processed = run_async(
                args.workspace,
                llm_url=args.llm_url,
                until_idle=args.until_idle,
                use_uvloop=not args.no_uvloop,
                grace_seconds=args.grace,
                limits=limits,
            )
            print(f"processed {processed} todo(s)")
        else:
            serve_async(
                args.workspace,
                host=args.host,
                port=args.port,
                llm_url=args.llm_url,
                token=args.token,
                grace_seconds=args.grace,
                use_uvloop=not args.no_uvloop,
                limits=limits,
            )
    except AgentError as exc:
        print(f"codeagent: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
