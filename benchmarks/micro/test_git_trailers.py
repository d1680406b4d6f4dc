"""Trailer lookups: ``find_commit`` on histories of 30 and 3,000 commits, each commit carrying a trailer.

The in-process components answer from the trailer index (warm: built once before
timing), so a lookup costs the same whatever the history's length; the history
walks (legacy's ``git log --grep`` and the components' CLI path, ``native=False``)
are timed beside them for contrast. ``test_lookup_cost_is_independent_of_history``
times both sizes interleaved in one run and checks the ratio (at most 1.2).

Run with ``python -m pytest benchmarks/micro/test_git_trailers.py --benchmark-only``.
``python -m benchmarks.micro.test_git_trailers`` prints the CPU (this process's and
its children's) per commit, per lookup and per todo (a missed lookup then a commit)
for the CLI path and the in-process path.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.micro.conftest import Caller

SIZES = (30, 3000)
AUTHOR = ("Code Agent", "codeagent@localhost")


def make_history(root: Path, size: int) -> Path:
    """A repository whose ``main`` has ``size`` commits, each changing a file and carrying ``Todo-Id: t-NNNNN``."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    stream = bytearray()
    for n in range(1, size + 1):
        message = f"task {n}\n\nTodo-Id: t-{n:05d}\n".encode()
        content = f"line {n}\n".encode()
        stream += b"commit refs/heads/main\n"
        stream += b"committer Code Agent <codeagent@localhost> %d +0000\n" % (1_700_000_000 + n)
        stream += b"data %d\n%s" % (len(message), message)
        stream += b"M 644 inline notes.txt\ndata %d\n%s\n" % (len(content), content)
    subprocess.run(["git", "fast-import", "--quiet"], cwd=root, input=bytes(stream), check=True)
    subprocess.run(["git", "reset", "-q", "--hard"], cwd=root, check=True)
    return root


@pytest.fixture(scope="module")
def histories(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    base = tmp_path_factory.mktemp("histories")
    return {size: make_history(base / f"h{size}", size) for size in SIZES}


def _indexed_lookup(caller: Caller, root: Path, size: int) -> tuple[Callable[[], Any], Any]:
    git = caller.make("git", root, *AUTHOR)
    find = caller.bind(git.find_commit, f"t-{size // 2:05d}")
    assert find() is not None  # builds the index: the timed lookups find it warm
    return find, git


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", ["core_sync", "core_async"])
def test_find_commit_indexed(
    benchmark: Any, runner: asyncio.Runner, histories: dict[int, Path], variant: str, size: int
) -> None:
    find, git = _indexed_lookup(Caller(variant, runner), histories[size], size)
    builds = git.native.index.builds
    benchmark(find)
    assert git.native.index.builds == builds  # never walked again


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", ["legacy", "core_async_cli"])
def test_find_commit_history_walk(
    benchmark: Any, runner: asyncio.Runner, histories: dict[int, Path], variant: str, size: int
) -> None:
    if variant == "legacy":
        caller = Caller("legacy", runner)
        git = caller.make("git", histories[size], *AUTHOR)
    else:
        caller = Caller("core_async", runner)
        git = caller.make("git", histories[size], *AUTHOR, native=False)
    find = caller.bind(git.find_commit, f"t-{size // 2:05d}")
    assert find() is not None
    benchmark.pedantic(find, rounds=30, warmup_rounds=2)


def _best_batch(find: Callable[[], Any], lookups: int) -> float:
    started = time.perf_counter()
    for _ in range(lookups):
        find()
    return (time.perf_counter() - started) / lookups


@pytest.mark.parametrize("variant", ["core_sync", "core_async"])
def test_lookup_cost_is_independent_of_history(
    benchmark: Any, runner: asyncio.Runner, histories: dict[int, Path], variant: str
) -> None:
    """Both sizes timed in alternating batches in this one run: 3,000 commits within 1.2x of 30."""
    caller = Caller(variant, runner)
    small, _ = _indexed_lookup(caller, histories[30], 30)
    large, _ = _indexed_lookup(caller, histories[3000], 3000)
    best = {30: float("inf"), 3000: float("inf")}
    for _ in range(7):
        best[30] = min(best[30], _best_batch(small, 300))
        best[3000] = min(best[3000], _best_batch(large, 300))
    ratio = best[3000] / best[30]
    benchmark.extra_info.update(
        {"best_us_30": best[30] * 1e6, "best_us_3000": best[3000] * 1e6, "ratio_3000_vs_30": ratio}
    )
    benchmark(large)
    assert ratio <= 1.2, best


# --- CPU per operation: python -m benchmarks.micro.test_git_trailers ---------------------------------


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _variants(runner: asyncio.Runner) -> Iterator[tuple[str, Caller, dict[str, Any]]]:
    yield "legacy (CLI)", Caller("legacy", runner), {}
    for family in ("core_sync", "core_async"):
        yield f"{family} CLI path", Caller(family, runner), {"native": False}
        yield f"{family} in-process", Caller(family, runner), {}


def _commit(caller: Caller, git: Any, root: Path, todo_id: str) -> None:
    """What an agent's todo commits: one changed file, a subject and the trailer."""
    (root / "notes.txt").write_text(f"{todo_id}\n")
    caller.bind(git.commit, f"task {todo_id}\n\nTodo-Id: {todo_id}\n", ["notes.txt"])()


def measure_cpu(operations: int, history: int, rounds: int) -> list[dict[str, Any]]:
    """CPU ms per commit, per (hit) lookup and per todo (missed lookup + commit) for each path.

    The paths take turns within each round (so a busy moment of the machine falls on
    all of them), each on a fresh repository; the best round of each is reported.
    """
    best: dict[str, dict[str, float]] = {}
    with asyncio.Runner() as runner, tempfile.TemporaryDirectory(prefix="git-cpu-") as tmp:
        for r in range(rounds):
            for label, caller, kwargs in _variants(runner):
                root = make_history(Path(tmp) / f"{len(best)}-{r}-{label.replace(' ', '_')}", history)
                git = caller.make("git", root, *AUTHOR, **kwargs)
                caller.bind(git.find_commit, "t-00001")()  # warm (the index, the loop, imports)
                figures = {}
                start = _cpu()
                for n in range(operations):
                    _commit(caller, git, root, f"x-{n:05d}")
                figures["commit"] = (_cpu() - start) / operations
                start = _cpu()
                for n in range(operations):
                    caller.bind(git.find_commit, f"x-{n:05d}")()
                figures["find_commit (hit)"] = (_cpu() - start) / operations
                start = _cpu()
                for n in range(operations):
                    assert caller.bind(git.find_commit, f"y-{n:05d}")() is None
                    _commit(caller, git, root, f"y-{n:05d}")
                figures["todo (miss + commit)"] = (_cpu() - start) / operations
                mine = best.setdefault(label, {})
                for key, value in figures.items():
                    mine[key] = min(mine.get(key, float("inf")), value)
    return [{"variant": label, **{k: v * 1e3 for k, v in figures.items()}} for label, figures in best.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro.test_git_trailers")
    parser.add_argument("--operations", type=int, default=200)
    parser.add_argument("--history", type=int, default=30, help="commits in the repository before timing")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions; the best is reported")
    args = parser.parse_args(argv)
    rows = measure_cpu(args.operations, args.history, args.rounds)
    keys = [k for k in rows[0] if k != "variant"]
    print(f"CPU ms per operation (process + children), {args.operations} ops, history {args.history}")
    print(f"{'variant':<24}" + "".join(f"{k:>24}" for k in keys))
    for row in rows:
        print(f"{row['variant']:<24}" + "".join(f"{row[k]:>24.3f}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
