"""The operator's verbs as a person runs them: real processes, real git, the stub LLM on loopback.

``todo add|list|show|retry|cancel`` and ``status``, while a loop runs (both loops), and every
verb of the command line given bad input: one line, naming what is wrong, non-zero exit.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from codeagent.models import TodoState, TodoStatus
from legacy.status import StatusStore
from legacy.workspace_lock import hold_workspace
from llm_stub import StubOptions, StubServer
from tests.kernel.test_retry_cancel_kernel import FLAKY, write_flaky_rules
from tests.kernel.workspaces import make_workspace, trailers

CLI = [sys.executable, "-m", "codeagent_app.cli"]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def statuses(root: Path) -> dict[str, str]:
    path = root / ".agent/status.json"
    if not path.exists():
        return {}
    todos: dict[str, dict[str, Any]] = json.loads(path.read_text())["todos"]
    return {todo_id: state["status"] for todo_id, state in todos.items()}


def wait_until(what: str, check: Callable[[], bool], proc: subprocess.Popen[str], within: float = 90) -> None:
    deadline = time.monotonic() + within
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"the loop exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def flaky_stub(tmp_path: Path) -> Iterator[StubServer]:
    """A stub LLM that fails every task naming ``flaky`` (no edit blocks) until its rules are reset."""
    rules = write_flaky_rules(tmp_path / "flaky.toml")
    with StubServer(StubOptions(latency_ms=400, rules_path=str(rules))) as stub:
        yield stub


@pytest.mark.parametrize("loop", ["legacy", "async"])
def test_retry_failed_and_cancel_while_the_loop_runs(
    loop: str, tmp_path: Path, flaky_stub: StubServer
) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 7, todos=[], config='{"poll_interval": 0.2}')
    for i in range(7):
        word = FLAKY if i in (1, 3) else "line"
        added = cli(
            "todo", "add", "-w", str(root), f'append a line "{word} {i}" to file f{i}.txt', "-f", f"f{i}.txt"
        )
        assert (added.returncode, added.stdout.strip()) == (0, f"t-{i + 1:04d}"), added.stderr
    before = cli("todo", "cancel", "-w", str(root), "t-0006")
    assert (before.returncode, before.stdout) == (0, "t-0006: pending -> cancelled\n"), before.stderr
    args = [*CLI, "run", "-w", str(root), "--loop", loop, "--llm-url", flaky_stub.url]
    if loop == "async":
        args += ["--per-workspace", "1"]  # one todo at a time, in order, as the legacy loop does
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # t-0007 is last in line behind five todos of 400 ms each: pending (queued, for the async loop)
        during = cli("todo", "cancel", "-w", str(root), "t-0007")
        assert (during.returncode, during.stdout) == (0, "t-0007: pending -> cancelled\n"), during.stderr
        first = {"t-0001": "done", "t-0002": "failed", "t-0003": "done", "t-0004": "failed", "t-0005": "done"}
        wait_until("the first pass", lambda: first.items() <= statuses(root).items(), proc)
        flaky_stub.set_options(rules_path=None)  # the LLM behaves again
        retried = cli("todo", "retry", "--failed", "-w", str(root))
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout == "t-0002: failed -> pending\nt-0004: failed -> pending\n"
        assert f"the {loop} loop (pid {proc.pid}) picks them up" in retried.stderr
        five = [f"t-{i:04d}" for i in range(1, 6)]
        wait_until("the retried todos", lambda: all(statuses(root).get(t) == "done" for t in five), proc)
        shown = cli("status", "-w", str(root), "--json")
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        on_disk = StatusStore(root).load()
        expected_counts = {s.value: 0 for s in TodoStatus}
        for state in on_disk.todos.values():
            expected_counts[state.status.value] += 1
        assert doc["counts"] == expected_counts == {**expected_counts, "done": 5, "cancelled": 2}
        assert doc["loop"] == {"running": True, "kind": loop, "pid": proc.pid, "since": doc["loop"]["since"]}
        assert doc["total"] == 7 and doc["last_error"] is None and doc["state_format"]["format"] == "legacy"
        listed = json.loads(cli("todo", "list", "-w", str(root), "--status", "cancelled", "--json").stdout)
        assert [t["id"] for t in listed["todos"]] == ["t-0006", "t-0007"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert sorted(trailers(root)) == five  # one commit each; the cancelled ones none
    for cancelled in ("t-0006", "t-0007"):
        assert not (root / f".agent/checkpoints/{cancelled}.json").exists()
        assert f"{cancelled}" not in (root / f"f{int(cancelled[-1]) - 1}.txt").read_text()
    on_disk = StatusStore(root).load()
    assert on_disk.todos["t-0002"].attempts == on_disk.todos["t-0004"].attempts == 2
    assert on_disk.todos["t-0006"].attempts == on_disk.todos["t-0007"].attempts == 0
    assert [(o.todo_id, o.action, o.previous.value, o.source) for o in on_disk.operations] == [
        ("t-0006", "cancel", "pending", "cli"),
        ("t-0007", "cancel", "pending", "cli"),
        ("t-0002", "retry", "failed", "cli"),
        ("t-0004", "retry", "failed", "cli"),
    ]
    assert on_disk.operations[2].error == "LLM answer contained no edit blocks"
    stopped = json.loads(cli("status", "-w", str(root), "--json").stdout)
    assert stopped["loop"] == {"running": False, "kind": None, "pid": None, "since": None}


def test_todo_add_with_empty_text_exits_2_with_one_line(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 1)
    before = (root / ".agent/todos.json").read_text()
    for text in ("", "   "):
        result = cli("todo", "add", "-w", str(root), text)
        assert (result.returncode, result.stdout, result.stderr) == (
            2,
            "",
            "codeagent: error: the todo text is empty\n",
        )
    assert (root / ".agent/todos.json").read_text() == before


def _workspace_with_history(root: Path) -> None:
    make_workspace(root, 4)
    store = StatusStore(root)
    store.set_todo("t-0001", TodoState(status=TodoStatus.DONE, attempts=1, commit="c" * 40))
    store.set_todo(
        "t-0002", TodoState(status=TodoStatus.FAILED, attempts=2, error="response body is not JSON")
    )


def test_list_show_status_in_text_and_json(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    _workspace_with_history(root)
    table = cli("todo", "list", "-w", str(root))
    assert table.returncode == 0, table.stderr
    for expected in ("t-0001", "done", "cccccccccccc", "t-0002", "failed", "response body is not JSON"):
        assert expected in table.stdout
    failed = json.loads(cli("todo", "list", "-w", str(root), "-s", "failed", "--json").stdout)
    assert [(t["id"], t["attempts"], t["error"]) for t in failed["todos"]] == [
        ("t-0002", 2, "response body is not JSON")
    ]
    assert cli("todo", "retry", "-w", str(root), "t-0002").stdout == "t-0002: failed -> pending\n"
    shown = cli("todo", "show", "-w", str(root), "t-0002")
    assert shown.returncode == 0, shown.stderr
    assert "status:      pending (attempts 2" in shown.stdout
    assert "retried by cli (was failed: response body is not JSON)" in shown.stdout
    body = json.loads(cli("todo", "show", "-w", str(root), "t-0002", "--json").stdout)
    assert [e["event"] for e in body["history"]] == ["added", "retried"]
    assert body["files"] == ["f1.txt"] and body["checkpoint"] is None
    text = cli("status", "-w", str(root))
    assert text.returncode == 0, text.stderr
    assert "loop:          not running" in text.stdout
    assert "todos:         4 (pending 3, running 0, done 1, failed 0" in text.stdout
    added = json.loads(cli("todo", "add", "-w", str(root), "write docs", "--json").stdout)
    assert (added["id"], added["status"]) == ("t-0005", "pending")


def test_refusals_say_why_and_exit_1(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    _workspace_with_history(root)
    done = cli("todo", "retry", "-w", str(root), "t-0001", "t-0002")
    assert done.returncode == 1
    assert done.stdout == "t-0002: failed -> pending\n"  # the others still happen
    assert "codeagent: error: t-0001: cannot retry: it is done in commit cccccccccccc" in done.stderr
    unknown = cli("todo", "cancel", "-w", str(root), "t-0003", "t-0042")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == f"codeagent: error: no todo 't-0042' in {root.resolve()}; nothing was changed\n"
    StatusStore(root).set_todo("t-0003", TodoState(status=TodoStatus.RUNNING, attempts=1))
    with hold_workspace(root.resolve(), "async"):
        running = cli("todo", "cancel", "-w", str(root), "t-0003", "--json")
        state = json.loads(cli("status", "-w", str(root), "--json").stdout)
    assert running.returncode == 1
    [change] = json.loads(running.stdout)["changes"]
    assert change["refused"].startswith("it is running") and change["after"] == "running"
    assert state["loop"]["running"] and state["loop"]["kind"] == "async" and state["current"] == ["t-0003"]
    stale = cli("todo", "cancel", "-w", str(root), "t-0003")  # no loop holds it: a crash left "running"
    assert (stale.returncode, stale.stdout) == (0, "t-0003: running -> cancelled\n")
    assert cli("todo", "retry", "--failed", "-w", str(root)).stdout == "no failed todo\n"


#: Every verb with bad input: (arguments, what the one line must say). ``WS`` is a real workspace.
BAD_INPUT: list[tuple[list[str], str]] = [
    (["run", "-w", "MISSING", "--until-idle"], "MISSING: workspace directory does not exist"),
    (["run", "--loop", "bogus"], "--loop must be 'legacy' or 'async'"),
    (["run", "--max-concurrency", "0"], "--max-concurrency: must be at least 1"),
    (["serve", "--port", "abc"], "--port: must be a whole number"),
    (["serve", "--grace", "soon"], "--grace: must be a number"),
    (["demo", "--loop", "bogus"], "--loop must be 'legacy' or 'async'"),
    (["bench", "--latency-ms", "abc"], "--latency-ms: must be a number"),
    (["llm-stub", "--fail-rate", "2"], "fail_rate must be between 0 and 1"),
    (["llm-stub", "--hold-until-in-flight", "-1"], "hold_until_in_flight must be >= 0"),
    (["flags", "show", "-w", "WS", "--bogus"], "unknown option --bogus"),
    (["flags", "set", "llm=sideways", "-w", "WS"], "unknown mode 'sideways' for llm"),
    (["flags", "rollback", "llm", "-w", "WS"], "--reason TEXT is required"),
    (["flags", "validate", "MISSING"], "the flag file does not exist"),
    (["migrate", "plan", "-w", "MISSING"], "--workspace: dir 'MISSING' does not exist"),
    (["migrate", "apply", "-w", "MISSING"], "--workspace: dir 'MISSING' does not exist"),
    (["migrate", "verify", "-w", "MISSING"], "--workspace: dir 'MISSING' does not exist"),
    (["migrate", "rollback", "-w", "MISSING"], "--workspace: dir 'MISSING' does not exist"),
    (["migrate", "status", "-w", "MISSING"], "--workspace: dir 'MISSING' does not exist"),
    (["migrate", "next", "-w", "MISSING"], "--workspace: dir 'MISSING' does not exist"),
    (["todo", "add", "-w", "WS"], "TEXT: missing"),
    (["todo", "add", "-w", "WS", "x", "--file", "../out.txt"], "--file: refused path '../out.txt'"),
    (["todo", "add", "-w", "MISSING", "x"], "--workspace: MISSING does not exist"),
    (["todo", "list", "-w", "WS", "--status", "stuck"], "--status: unknown status 'stuck'"),
    (["todo", "list", "-w", "WS", "--stat", "done"], "unknown option --stat (did you mean --status?)"),
    (["todo", "show", "-w", "WS", "../t-1"], "todo id '../t-1' is not valid"),
    (["todo", "show", "-w", "WS", "t-0404"], "no todo 't-0404'"),
    (["todo", "retry", "-w", "WS"], "ID: name the todos to retry, or give --failed"),
    (["todo", "retry", "-w", "WS", "--failed", "t-0001"], "give todo ids or --failed, not both"),
    (["todo", "cancel", "-w", "WS"], "ID: missing"),
    (["todo", "cancel", "-w", "WS", "t 1"], "todo id 't 1' is not valid"),
    (["status", "-w", "MISSING"], "--workspace: MISSING does not exist"),
    (["status", "-w", "WS", "--verbose"], "unknown option --verbose"),
    (["nonsense"], "unknown command 'nonsense'"),
]


@pytest.fixture(scope="module")
def bad_input_places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("bad-input")
    make_workspace(base / "ws", 1)
    return {"WS": str(base / "ws"), "MISSING": str(base / "missing")}


@pytest.mark.parametrize(("args", "says"), BAD_INPUT, ids=[" ".join(a[:2]) for a, _ in BAD_INPUT])
def test_every_verb_with_bad_input_says_what_is_wrong_in_one_line(
    args: list[str], says: str, bad_input_places: dict[str, str]
) -> None:
    real = [bad_input_places.get(a, a) for a in args]
    result = cli(*real)
    assert result.returncode in (1, 2), (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("codeagent: error: "), line
    expected = says.replace("MISSING", bad_input_places["MISSING"])
    assert expected in line, line
    for noise in ("Traceback", "http://", "https://", "pydantic", "\u256d", "Usage:", "[type="):
        assert noise not in result.stderr + result.stdout, noise
    assert not Path(bad_input_places["MISSING"]).exists()  # nothing was created by a bad command


def test_shell_completion_is_available() -> None:
    script = cli("--show-completion", "bash")
    assert script.returncode == 0, script.stderr
    assert "_codeagent_completion" in script.stdout and "complete " in script.stdout
