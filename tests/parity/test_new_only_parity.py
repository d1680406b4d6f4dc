"""What only the new implementations offer, checked on both: the async client and its generated twin.

Batches (``complete_many``), streaming, deadlines, a shared endpoint pool, a
shared token bucket, git time limits and the plain wiring behave the same
whether awaited or called synchronously.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import core_async.components
import core_async.config
import core_async.fsops
import core_async.llm_transport
import core_async.ratelimit
import core_sync.components
import core_sync.config
import core_sync.fsops
import core_sync.llm_transport
import core_sync.ratelimit
from codeagent.errors import GitError, LLMError, LLMRateLimited, LLMTimeout
from tests.parity._support import Driver, Impl, chat_messages, make_repo

NEW = ("core_sync", "core_async")
MODULES = {
    "core_sync": (core_sync.llm_transport, core_sync.ratelimit, core_sync.components, core_sync.fsops),
    "core_async": (core_async.llm_transport, core_async.ratelimit, core_async.components, core_async.fsops),
}


@pytest.fixture(params=NEW)
def new(request: pytest.FixtureRequest, runner: asyncio.Runner) -> Impl:
    return Impl(request.param, runner)


def _stream(new: Impl, llm: Driver, **kwargs: Any) -> list[str]:
    if new.is_async:

        async def collect() -> list[str]:
            return [part async for part in llm.target.stream_chat(chat_messages(), **kwargs)]

        return list(new.runner.run(collect()))
    return list(llm.target.stream_chat(chat_messages(), **kwargs))


def test_complete_many_results_in_order_with_typed_errors(new: Impl, stub: Any) -> None:
    stub.queue_faults(["ok", "quota", "ok"])
    llm = new.llm(stub.url, batch_concurrency=1)
    try:
        results = llm.complete_many(
            [chat_messages(f'append a line "{n}" to file f{n}.txt') for n in range(4)], 5, 10
        )
    finally:
        new.close_llm(llm)
    assert "f0.txt" in results[0]
    assert isinstance(results[1], LLMError)
    assert "HTTP 429" in str(results[1])
    assert "f2.txt" in results[2]
    assert "f3.txt" in results[3]


def test_complete_many_hang_becomes_a_timeout(new: Impl, stub: Any) -> None:
    stub.queue_faults(["hang"])
    llm = new.llm(stub.url, max_retries=0, http_version="http1")  # one connection per request
    try:
        started = time.monotonic()
        results = llm.complete_many([chat_messages(), chat_messages()], per_request_timeout=1.0)
        assert time.monotonic() - started < 4
    finally:
        new.close_llm(llm)
    assert sum(isinstance(r, LLMTimeout) for r in results) == 1
    assert sum(isinstance(r, str) for r in results) == 1


def test_streaming_matches_the_whole_answer(new: Impl, stub: Any) -> None:
    llm = new.llm(stub.url)
    try:
        whole = llm.chat(chat_messages())
        stub.queue_faults(["reset"])
        parts = _stream(new, llm)
    finally:
        new.close_llm(llm)
    assert "".join(parts) == whole
    assert len(parts) > 1


def test_deadline_cuts_a_server_wait_short(new: Impl, stub: Any) -> None:
    stub.set_options(retry_after_s=5)
    stub.queue_faults(["429"])
    llm = new.llm(stub.url)
    try:
        started = time.monotonic()
        with pytest.raises(LLMRateLimited):
            llm.chat(chat_messages(), deadline=time.monotonic() + 2)
        assert time.monotonic() - started < 2
        with pytest.raises(LLMTimeout):
            llm.chat(chat_messages(), deadline=time.monotonic() - 0.1)
    finally:
        new.close_llm(llm)


def test_one_pool_one_connection_for_every_client(new: Impl, stub: Any) -> None:
    transport, *_ = MODULES[new.name]
    pool_cls = transport.AsyncEndpointPool if new.is_async else transport.SyncEndpointPool
    pool = new.wrap(pool_cls(http_version="auto"))
    first, second = new.llm(stub.url, pool=pool.target), new.llm(stub.url, pool=pool.target)
    first.chat(chat_messages())
    second.chat(chat_messages())
    new.close_llm(first)
    second.chat(chat_messages())
    assert [e.connections_opened for e in pool.endpoints()] == [1]
    assert [e.http_version for e in pool.endpoints()] == ["HTTP/1.1"]
    new.run(
        pool.target.__aexit__(None, None, None) if new.is_async else pool.target.__exit__(None, None, None)
    )
    with pytest.raises(RuntimeError, match="closed"):
        pool.endpoint(stub.url)


def test_shared_token_bucket(new: Impl, stub: Any) -> None:
    _, ratelimit, *_ = MODULES[new.name]
    bucket_cls = ratelimit.AsyncTokenBucket if new.is_async else ratelimit.SyncTokenBucket
    bucket = bucket_cls(rate=25, burst=1)
    first, second = new.llm(stub.url, rate_limiter=bucket), new.llm(stub.url, rate_limiter=bucket)
    try:
        started = time.monotonic()
        for _ in range(3):
            first.chat(chat_messages())
            second.chat(chat_messages())
        assert time.monotonic() - started >= 5 / 25 * 0.9
    finally:
        new.close_llm(first)
        new.close_llm(second)
    assert new.run(bucket.acquire()) >= 0.0


def test_git_time_limit(new: Impl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A git that never finishes is killed at the time limit (a stand-in ``git`` that sleeps).

    The CLI path (``native=False``): in process, ``head`` runs no git at all.
    """
    make_repo(tmp_path / "repo")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text("#!/bin/sh\nexec sleep 30\n")
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    repo = new.wrap(new.cls("git")(tmp_path / "repo", "A", "a@b", timeout=0.3, native=False))
    started = time.monotonic()
    with pytest.raises(GitError, match=r"no exit within 0\.3s"):
        repo.head()
    assert time.monotonic() - started < 5


def test_commits_leave_maintenance_to_a_periodic_gc(
    new: Impl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No commit starts git's auto maintenance; every ``maintenance_every`` commits one ``gc --auto`` does.

    git's trace2 log (switched on in a global config: the components drop inherited ``GIT_*``
    variables) lists every git process, also the ones git itself starts.
    """
    root = make_repo(tmp_path / "repo")
    home = tmp_path / "home"
    home.mkdir()
    trace = tmp_path / "trace.log"
    (home / ".gitconfig").write_text(f"[trace2]\n\tnormalTarget = {trace}\n")
    monkeypatch.setenv("HOME", str(home))

    def started() -> list[str]:
        lines = trace.read_text().splitlines() if trace.exists() else []
        return [line.split(" start ", 1)[1] for line in lines if " start " in line]

    # The log does show what a plain commit starts behind its caller's back.
    subprocess.run(
        ["git", "-c", "user.name=A", "-c", "user.email=a@b", "commit", "-q", "--allow-empty", "-m", "x"],
        cwd=root,
        check=True,
    )
    assert any("maintenance run --auto" in line for line in started())
    trace.unlink()

    raw = new.cls("git")(root, "A", "a@b")
    raw.maintenance_every = 3
    repo = new.wrap(raw)
    for i in range(2):
        (root / f"f{i}.txt").write_text(f"{i}\n")
        repo.commit(f"c{i}\n\nTodo-Id: t-000{i}\n", [f"f{i}.txt"])
    assert [line for line in started() if "maintenance run" in line or " gc " in f" {line} "] == []
    (root / "f2.txt").write_text("2\n")
    sha = repo.commit("c2\n\nTodo-Id: t-0002\n", ["f2.txt"])
    gcs = [line for line in started() if " gc " in f" {line} "]
    assert len(gcs) == 1 and gcs[0].endswith("gc --auto --quiet"), started()
    assert not [line for line in started() if "maintenance run" in line]
    assert repo.find_commit("t-0002") == sha


def test_component_builder_follows_the_config(new: Impl, tmp_path: Path, stub: Any) -> None:
    *_, components, _ = MODULES[new.name]
    loader = core_async.config if new.is_async else core_sync.config
    (tmp_path / ".agent").mkdir()
    (tmp_path / ".agent/config.json").write_text(
        json.dumps({"llm": {"max_retries": 5}, "git": {"author_name": "Builder"}, "max_file_bytes": 99})
    )
    config = new.run(loader.load_config(tmp_path))
    built = components.build_components(tmp_path, config, stub.url)
    try:
        assert built.files.max_bytes == 99
        assert built.git._env["GIT_AUTHOR_NAME"] == "Builder"
        assert built.llm.base_url == stub.url
        assert built.llm.policy.max_retries == 5
        assert built.llm.pool.http_version.value == ("auto" if new.is_async else "http1")
        replay = components.build_llm(config, stub.url, replay=True)
        assert (replay.policy.backoff_base, replay.policy.max_retry_after) == (0.0, 0.0)
        new.run(replay.aclose() if new.is_async else replay.close())
    finally:
        new.run(built.llm.aclose() if new.is_async else built.llm.close())


def test_failed_atomic_write_leaves_nothing_behind(new: Impl, tmp_path: Path) -> None:
    *_, fsops = MODULES[new.name]
    (tmp_path / "taken" / "inner").mkdir(parents=True)
    with pytest.raises(OSError):
        fsops.atomic_write_text(tmp_path / "taken", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_atomic_write_creates_missing_parents_keeps_the_mode_and_names_the_version(
    new: Impl, tmp_path: Path
) -> None:
    *_, fsops = MODULES[new.name]
    target = tmp_path / "a" / "b" / "state.json"
    first = fsops.atomic_write_text(target, "one")
    assert target.read_text(encoding="utf-8") == "one"
    assert (first.st_ino, first.st_size) == (target.stat().st_ino, 3)
    target.chmod(0o600)
    second = fsops.atomic_write_text(target, "three")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert (second.st_ino, second.st_size, stat.S_IMODE(second.st_mode)) == (target.stat().st_ino, 5, 0o600)
    assert second.st_ino != first.st_ino
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]
