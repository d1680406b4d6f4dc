"""The ``codeagent`` command line: run, serve, demo, todo, status, flags, migrate, bench, llm-stub.

Heavy modules are imported inside each command so that ``codeagent --help``
stays fast and one broken component cannot stop the others' commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="Code Agent: an AI coding agent, and the shim that migrates it from a sync loop to asyncio.",
)


def _register_subcommands() -> None:
    from codeagent_app.chaos.command import chaos
    from codeagent_app.flags_cli import flags_app
    from codeagent_app.fleet_cli import queue_app, worker
    from codeagent_app.status_cli import status
    from codeagent_app.todo_cli import todo_app
    from migration.cli import migrate_app

    app.add_typer(todo_app, name="todo")
    app.command("status")(status)
    app.add_typer(flags_app, name="flags")
    app.add_typer(migrate_app, name="migrate")
    app.add_typer(queue_app, name="queue")
    app.command("worker")(worker)
    app.command("chaos")(chaos)


_register_subcommands()

LLMUrlOpt = Annotated[
    str | None,
    typer.Option("--llm-url", help="Base URL of an OpenAI-compatible API (e.g. http://host:port/v1)."),
]


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"codeagent: error: {message}", err=True)
    raise typer.Exit(code)


LoopOpt = Annotated[
    str | None,
    typer.Option(
        "--loop", help="legacy (the while-True loop) or async (the async core); default: the flag file's."
    ),
]
WorkspacesOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--workspace", "-w", help="A git workspace (repeatable with --loop async).", file_okay=False
    ),
]
FlagsFileOpt = Annotated[
    Path | None, typer.Option("--flags", help="The flag file (default: WORKSPACE/.agent/flags.toml).")
]
NoUvloopOpt = Annotated[
    bool, typer.Option("--no-uvloop", help="Use the default asyncio loop even if uvloop imports.")
]


def _check_loop(loop: str | None) -> None:
    if loop not in (None, "legacy", "async"):
        _fail(f"--loop must be 'legacy' or 'async', got {loop!r}")


def _limit(flag: str, what: str) -> Any:
    return typer.Option(flag, min=1, help=f"{what} (async loop; default: the config's, else the built-in).")


MaxConcurrencyOpt = Annotated[int | None, _limit("--max-concurrency", "Todos in progress at once, overall")]
PerWorkspaceOpt = Annotated[
    int | None, _limit("--per-workspace", "Todos in progress at once in one workspace")
]
LLMSlotsOpt = Annotated[int | None, _limit("--llm-slots", "LLM requests in flight at once")]
FileSlotsOpt = Annotated[int | None, _limit("--file-slots", "File operations holding handles at once")]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Worker processes of the async loop, each driving whole workspaces"
        " (default: the usable CPUs, at most one per workspace; 1: one process).",
    ),
]


def _limits(**given: int | None) -> dict[str, int]:
    return {name: value for name, value in given.items() if value is not None}


def _drive(request: Any) -> int:
    from codeagent.errors import AgentError
    from codeagent_app.runner import drive

    try:
        return drive(request)
    except AgentError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")  # pragma: no cover


@app.command()
def run(
    workspace: WorkspacesOpt = None,
    llm_url: LLMUrlOpt = None,
    until_idle: Annotated[bool, typer.Option("--until-idle", help="Exit 0 once no todo is pending.")] = False,
    loop: LoopOpt = None,
    flags: FlagsFileOpt = None,
    no_uvloop: NoUvloopOpt = False,
    max_concurrency: MaxConcurrencyOpt = None,
    per_workspace: PerWorkspaceOpt = None,
    llm_slots: LLMSlotsOpt = None,
    file_slots: FileSlotsOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Run the agent loop on a workspace (or several, with --loop async)."""
    from codeagent_app.runner import LoopRequest

    _check_loop(loop)
    processed = _drive(
        LoopRequest(
            workspace or [Path(".")],
            llm_url=llm_url,
            loop=loop,
            flags=flags,
            use_uvloop=not no_uvloop,
            until_idle=until_idle,
            workers=workers,
            limits=_limits(
                max_concurrency=max_concurrency,
                per_workspace=per_workspace,
                llm_slots=llm_slots,
                file_slots=file_slots,
            ),
        )
    )
    typer.echo(f"processed {processed} todo(s)")


@app.command()
def serve(
    workspace: WorkspacesOpt = None,
    port: Annotated[int, typer.Option("--port", help="Port of the HTTP API (0 picks a free one).")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Interface of the HTTP API.")] = "127.0.0.1",
    llm_url: LLMUrlOpt = None,
    loop: LoopOpt = None,
    flags: FlagsFileOpt = None,
    grace: Annotated[
        float, typer.Option("--grace", help="Seconds running todos get to finish on SIGTERM.")
    ] = 10.0,
    no_uvloop: NoUvloopOpt = False,
    max_concurrency: MaxConcurrencyOpt = None,
    per_workspace: PerWorkspaceOpt = None,
    llm_slots: LLMSlotsOpt = None,
    file_slots: FileSlotsOpt = None,
    workers: WorkersOpt = None,
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue",
            help="Serve a fleet instead: the API over every workspace of this PostgreSQL DSN"
            " (workers run elsewhere: codeagent worker --queue DSN).",
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help="Bearer token of the fleet's API (with --queue).")
    ] = None,
) -> None:
    """Run the agent loop with its HTTP API (several workspaces with --loop async)."""
    from codeagent_app.runner import LoopRequest

    if queue is not None:
        _serve_fleet(queue, host, port, token)
        return
    _check_loop(loop)
    _drive(
        LoopRequest(
            workspace or [Path(".")],
            llm_url=llm_url,
            loop=loop,
            flags=flags,
            use_uvloop=not no_uvloop,
            api=(host, port),
            grace_seconds=grace,
            workers=workers,
            limits=_limits(
                max_concurrency=max_concurrency,
                per_workspace=per_workspace,
                llm_slots=llm_slots,
                file_slots=file_slots,
            ),
        )
    )


def _serve_fleet(dsn: str, host: str, port: int, token: str | None) -> None:
    import asyncio

    import psycopg

    from codeagent.errors import AgentError
    from codeagent_app.fleet import serve_fleet

    try:
        asyncio.run(serve_fleet(dsn, host, port, token, []))
    except (AgentError, psycopg.Error, OSError) as exc:
        _fail(str(exc))


@app.command()
def demo(
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", "-w", help="Where to create the sample workspace (new or empty)."),
    ] = None,
    loop: Annotated[str, typer.Option("--loop", help="legacy or async.")] = "legacy",
) -> None:
    """Copy the sample workspace, start the stub LLM, run every todo, print a summary."""
    from codeagent_app.demo import run_demo

    _check_loop(loop)
    code = run_demo(workspace, loop=loop)
    raise typer.Exit(code)


@app.command("bench")
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="The smaller run (under 2 minutes).")] = False,
    smoke: Annotated[bool, typer.Option("--smoke", help="The smallest end-to-end run (seconds).")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output directory (default bench-results/<ts>/).")
    ] = None,
    compare: Annotated[
        Path | None, typer.Option("--compare", help="An earlier results.json to compare with.")
    ] = None,
    concurrency: Annotated[
        list[int] | None, typer.Option("--concurrency", "-c", help="Concurrency levels (repeatable).")
    ] = None,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", help="Stub LLM latency of the cpu profile.")
    ] = 200.0,
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            help="LLM profile: cpu (fixed latency, no faults), realistic (lognormal latency, median 2 s,"
            " p99 10 s, 3% 429s with Retry-After, 0.5% hangs) or both.",
        ),
    ] = "both",
    fleet: Annotated[
        bool,
        typer.Option(
            "--fleet",
            help="The fleet benchmark instead: 1, 2 and 4 `codeagent worker --queue` processes through"
            " PostgreSQL (CODEAGENT_TEST_PG or the local server) on the realistic profile.",
        ),
    ] = False,
    micro_json: Annotated[
        Path | None, typer.Option("--micro-json", help="pytest-benchmark JSON to include in the report.")
    ] = None,
    from_results: Annotated[
        Path | None,
        typer.Option(
            "--from-results",
            help="Write report, table and charts again from an earlier results.json (runs nothing;"
            " --micro-json adds its micro-benchmark figures).",
        ),
    ] = None,
) -> None:
    """The A/B suite: legacy vs async as shipped, cpu and realistic LLM profiles; report.md, results.json, charts."""
    if fleet:
        from benchmarks.fleet import main as fleet_main

        raise typer.Exit(fleet_main([*(["--quick"] if quick else []), *(["--out", str(out)] if out else [])]))
    from benchmarks.ab import render_again, run_bench  # matplotlib and friends: only when benchmarking

    if from_results is not None:
        raise typer.Exit(render_again(from_results, out, micro_json=micro_json, compare=compare))
    code = run_bench(
        quick,
        out,
        compare,
        concurrency or None,
        latency_ms,
        smoke=smoke,
        profile=profile,
        micro_json=micro_json,
    )
    raise typer.Exit(code)


@app.command("llm-stub")
def llm_stub(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8000,
    latency_ms: Annotated[float, typer.Option("--latency-ms", help="Added latency per request.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option("--jitter-ms", help="Uniform jitter around the latency.")] = 0.0,
    fail_rate: Annotated[
        float, typer.Option("--fail-rate", help="Probability of a fault per request.")
    ] = 0.0,
    faults: Annotated[
        str, typer.Option("--faults", help="Fault kinds to draw from: 500,429,hang,reset,malformed,quota.")
    ] = "500,429,hang,reset,malformed",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the stub's random choices.")] = 0,
    rules: Annotated[Path | None, typer.Option("--rules", help="A rules file (TOML).")] = None,
    retry_after: Annotated[float, typer.Option("--retry-after", help="Retry-After seconds on 429.")] = 1.0,
    latency_p99_ms: Annotated[
        float | None,
        typer.Option(
            "--latency-p99-ms", help="Draw each latency from a lognormal: median --latency-ms, this p99."
        ),
    ] = None,
    fault_rates: Annotated[
        str,
        typer.Option("--fault-rates", help="Probability per fault kind, e.g. 429=0.03,hang=0.005."),
    ] = "",
    draws: Annotated[
        str,
        typer.Option(
            "--draws",
            help="sequence (one seeded stream, arrival order) or prompt (draws keyed by each request's"
            " messages: the same workload meets the same latencies and faults in any order).",
        ),
    ] = "sequence",
    hang_s: Annotated[float, typer.Option("--hang-s", help="How long a 'hang' fault lasts.")] = 3600.0,
    model: Annotated[str, typer.Option("--model", help="Model name listed by /v1/models.")] = "stub-coder",
    hold_until_in_flight: Annotated[
        int,
        typer.Option(
            "--hold-until-in-flight",
            help="Hold every completion until N requests are in flight at once (0: off): proves a client"
            " really holds N at once.",
        ),
    ] = 0,
    hold_timeout_s: Annotated[
        float, typer.Option("--hold-timeout-s", help="Longest hold of one request (seconds).")
    ] = 30.0,
) -> None:
    """Serve the OpenAI-compatible stub LLM (HTTP/1.1 and cleartext HTTP/2)."""
    from llm_stub import RulesError, StubOptions, serve_forever
    from llm_stub.options import parse_fault_rates

    kinds = tuple(k.strip() for k in faults.split(",") if k.strip())
    try:
        options = StubOptions(
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            fail_rate=fail_rate,
            faults=kinds,
            seed=seed,
            rules_path=str(rules) if rules else None,
            retry_after_s=retry_after,
            latency_p99_ms=latency_p99_ms,
            fault_rates=parse_fault_rates(fault_rates),
            draws=draws,
            hang_s=hang_s,
            model=model,
            hold_until_in_flight=hold_until_in_flight,
            hold_timeout_s=hold_timeout_s,
        )
        serve_forever(options, host, port)
    except (ValueError, RulesError, OSError) as exc:
        _fail(str(exc))


def main() -> None:
    """Console-script entry point (a bad command line is one line on stderr and exit 2)."""
    from codeagent_app.cli_errors import run as run_cli
    from core_async.kernel.loop_policy import tune_gc

    tune_gc()
    run_cli(app, "codeagent")


if __name__ == "__main__":  # pragma: no cover
    main()
