"""``codeagent flags`` from the command line, as a person runs it (real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from feature_flags import read_entries, read_flags


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codeagent_app.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_set_show_rollback_round_trip(tmp_path: Path) -> None:
    r = _cli("flags", "set", "llm=canary", "--percent", "10", "git=shadow", "loop=async", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    flags_file = tmp_path / ".agent" / "flags.toml"
    flags = read_flags(flags_file)
    assert flags.loop == "async"
    assert flags.flag("llm").percent == 10
    shown = json.loads(_cli("flags", "show", "--json", cwd=tmp_path).stdout)
    modes = {row["component"]: row["mode"] for row in shown["components"]}
    assert modes["llm"] == "canary" and modes["git"] == "shadow" and modes["files"] == "legacy"
    assert {row["component"]: row["source"] for row in shown["components"]}["llm"] == "cli"

    r = _cli("flags", "rollback", "llm", "--reason", "p99 too high", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert read_flags(flags_file).flag("llm").mode == "legacy"
    assert read_entries(flags_file)[-1].reason == "rollback: p99 too high"
    table = _cli("flags", "show", cwd=tmp_path)
    assert table.returncode == 0 and "shadow" in table.stdout


def test_bad_requests_exit_non_zero_with_a_clear_message(tmp_path: Path) -> None:
    for args, words in [
        (("flags", "set", "cache=new"), "unknown component 'cache'"),
        (("flags", "set", "llm=turbo"), "unknown mode 'turbo'"),
        (("flags", "set", "llm=canary"), "needs --percent"),
        (("flags", "set", "llm"), "expected COMPONENT=MODE"),
        (("flags", "rollback", "llm"), "--reason"),
        (("flags", "rollback", "--reason", "x"), "--all"),
    ]:
        r = _cli(*args, cwd=tmp_path)
        assert r.returncode == 2, args
        assert words in r.stderr, (args, r.stderr)
    assert not (tmp_path / ".agent" / "flags.toml").exists()


def test_validate_and_show_report_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / ".agent" / "flags.toml"
    bad.parent.mkdir()
    bad.write_text('version = 1\nloop = "legacy"\n[components.llm]\nmode = "canary"\npercent = 150\n')
    r = _cli("flags", "validate", str(bad), cwd=tmp_path)
    assert r.returncode == 2
    assert "flags.toml:5: components.llm.percent" in r.stderr
    shown = _cli("flags", "show", cwd=tmp_path)
    assert shown.returncode == 1
    assert "invalid" in shown.stdout
    good = tmp_path / "good.toml"
    good.write_text('version = 1\nloop = "async"\n')
    ok = _cli("flags", "validate", str(good), cwd=tmp_path)
    assert ok.returncode == 0 and "ok (loop async" in ok.stdout


def test_a_missing_workspace_is_refused_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for verb in (["set", "llm=new"], ["show"], ["rollback", "llm"]):
        done = _cli("flags", *verb, "-w", str(missing), cwd=tmp_path)
        assert done.returncode == 2, (verb, done.stdout, done.stderr)
        assert (
            done.stderr.count("\n") == 1 and "--workspace" in done.stderr and "does not exist" in done.stderr
        )
    assert not missing.exists()
