"""Starting and stopping the stub: background thread, child process, CLI; clean shutdowns."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import httpx
import pytest

from llm_stub import StubOptions, StubServer, start_stub_process, stop_stub_process
from tests.stub.conftest import stub_threads
from tests.stub.helpers import chat_body, reply_text


def test_start_stop_many_times_leaves_nothing_behind() -> None:
    before = set(stub_threads())  # a session-scoped stub of another suite may be running
    for _ in range(5):
        with StubServer() as stub:
            assert stub.url.startswith("http://127.0.0.1:") and stub.url.endswith("/v1")
            assert httpx.get(f"{stub.url}/models").status_code == 200
        assert set(stub_threads()) == before
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{stub.url}/models")


def test_restart_keeps_options_and_counters() -> None:
    stub = StubServer(StubOptions(latency_ms=1))
    stub.set_options(model="before-start")
    stub.queue_faults(["500"])
    assert stub.stats()["queued_faults"] == ["500"]
    with stub:
        assert httpx.post(f"{stub.url}/chat/completions", json=chat_body("x")).status_code == 500
    with stub:
        response = httpx.post(f"{stub.url}/chat/completions", json=chat_body("x"))
        assert response.json()["model"] == "stub-coder"  # the request's own model wins
        assert httpx.get(f"{stub.url}/models").json()["data"][0]["id"] == "before-start"
    assert stub.stats()["requests_total"] == 3
    stub.stop()  # stopping a stopped server is a no-op


def test_fixed_port_and_busy_port() -> None:
    with StubServer() as first:
        port = int(first.url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(OSError):
            StubServer(port=port).start()
    with StubServer(port=port) as again:
        assert again.url == first.url


async def test_stop_ends_hanging_requests_and_drains_in_flight_ones(http2: bool) -> None:
    """Requests waiting out their latency are answered at once; hanging ones get 503; no error."""
    stub = StubServer(StubOptions(latency_ms=5000)).start()
    try:
        stub.queue_faults(["hang", "hang"])
        async with httpx.AsyncClient(http1=not http2, http2=http2, timeout=30) as client:
            requests = [
                asyncio.ensure_future(client.post(f"{stub.url}/chat/completions", json=chat_body('say "x"')))
                for _ in range(6)
            ]
            await asyncio.sleep(0.3)
            assert stub.stats()["in_flight"] == 6
            started = time.monotonic()
            await asyncio.to_thread(stub.stop)
            assert time.monotonic() - started < 3
            responses = await asyncio.gather(*requests)
    finally:
        stub.stop()
    assert sorted(r.status_code for r in responses) == [200] * 4 + [503] * 2
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 503} == {"server_shutting_down"}


@pytest.fixture(params=[False, True], ids=["http1.1", "http2"])
def http2(request: pytest.FixtureRequest) -> bool:
    flag: bool = request.param
    return flag


def test_start_stub_process_serves_until_sigterm() -> None:
    process, url = start_stub_process(StubOptions(latency_ms=5, model="proc-model"))
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        response = httpx.post(f"{url}/chat/completions", json=chat_body('say "from a process"'))
        assert reply_text(response.json()) == "from a process"
        assert httpx.get(f"{url}/models").json()["data"][0]["id"] == "proc-model"
        admin = url.removesuffix("/v1") + "/_stub"
        httpx.post(f"{admin}/faults", json={"next": ["429"]})
        assert httpx.post(f"{url}/chat/completions", json=chat_body("x")).status_code == 429
        assert httpx.get(f"{admin}/stats").json()["by_fault"] == {"429": 1}
        assert httpx.get(f"{admin}/options").json()["latency_ms"] == 5.0
    finally:
        code = stop_stub_process(process)
    assert code == 0


def test_cli_prints_the_ready_line_and_exits_cleanly_on_sigint() -> None:
    command = [
        sys.executable,
        "-m",
        "llm_stub",
        "--port",
        "0",
        "--faults",
        "500,quota",
        "--fail-rate",
        "1",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("codeagent llm-stub listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert not url.endswith(":0/v1")
        statuses = {httpx.post(f"{url}/chat/completions", json=chat_body("x")).status_code for _ in range(10)}
        assert statuses == {500, 429}
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "500,teapot"], "unknown fault kind 'teapot'"),
        (["--fail-rate", "2"], "fail_rate must be between 0 and 1"),
        (["--rules", "/nonexistent/rules.toml"], "cannot read the rules file"),
    ],
)
def test_cli_refuses_bad_options(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llm_stub", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_start_stub_process_reports_a_child_that_fails() -> None:
    with pytest.raises(RuntimeError, match="did not start"):
        start_stub_process(StubOptions(rules_path="/nonexistent/rules.toml"))


def test_cli_arguments_become_options(capsys: pytest.CaptureFixture[str]) -> None:
    from llm_stub.__main__ import build_parser, main, options_from_args

    argv = "--latency-ms 20 --jitter-ms 5 --fail-rate 0.25 --faults 429,quota --seed 9"
    argv += " --retry-after 0.5 --hang-s 2 --model m --rules r.toml"
    args = build_parser().parse_args(argv.split())
    assert options_from_args(args) == StubOptions(
        latency_ms=20,
        jitter_ms=5,
        fail_rate=0.25,
        faults=("429", "quota"),
        seed=9,
        rules_path="r.toml",
        retry_after_s=0.5,
        hang_s=2,
        model="m",
    )
    assert main(["--jitter-ms", "-1"]) == 2
    assert "jitter_ms must be >= 0" in capsys.readouterr().err
