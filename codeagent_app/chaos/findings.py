"""What the campaign found (each defect fixed with a regression test) and what it does not cover yet.

Kept by hand: ``docs/reliability.md`` lists them under its figures.
"""

from __future__ import annotations

DEFECTS: list[str] = [
    "**A symlink swapped in between the jail's check and the write was followed out of the workspace** "
    "(`escapes`, the check-then-write race): in 2 s of writes to `sub/f.txt` while a thread flipped `sub` to a "
    "symlink pointing out, the old code wrote 10 (legacy), 13 (sync twin) and 10 (async) files outside; reads "
    "followed it too. The checked path is now reached from the workspace's root one directory at a time with "
    "`O_NOFOLLOW` (`legacy/files.py`, `core_async/fsops.py` `write_beneath`/`read_beneath`, `core_async/files.py`, "
    "twins regenerated): 0 outside. Test: `tests/parity/test_files_parity.py::"
    "test_a_directory_swapped_for_a_symlink_after_the_check_is_refused` (all three implementations).",
    "**A FIFO named by a todo blocked the loop forever** (`escapes`, hostile reads): reads now open with "
    "`O_NONBLOCK` and refuse anything but a regular file. Test: `test_files_parity.py::"
    "test_a_fifo_is_refused_without_blocking_the_reader`.",
    "**A SIGKILL mid-write left temp files behind for good** (`crash-worker`): `?? .f2.txt.d4d10426.tmp` in the "
    "work tree (it showed in `git status`), and up to 9 `.status.json.*.tmp`/checkpoint temps per round in "
    "`.agent/`. The next write of a file removes its temps older than the process (files components); whoever "
    "takes the workspace sweeps the state files' temps, under their locks (`legacy/workspace_lock.py`). Tests: "
    "`test_files_parity.py::test_temp_files_a_crashed_writer_left_are_removed_on_the_next_write`, "
    "`tests/legacy/test_workspace_lock.py::test_taking_the_workspace_removes_temp_files_of_interrupted_state_writes`.",
    "**A write that failed part-way (EFBIG under `RLIMIT_FSIZE`, ENOSPC on a full tmpfs, EROFS) killed the legacy "
    'loop with a traceback, and made the async `run --until-idle` exit 0** ("processed 3 todo(s)") with 37 of 40 '
    "todos unrecorded, 20 of them left `running` (`disk`). The state stores now turn the `OSError` into a "
    "`StateFileError` naming the file (`cannot write: No space left on device`), the file components into a "
    "refusal with the reason, and the kernel ends an `--until-idle` run with that error: both loops stop with one "
    "line and exit 2, the last good state stays readable, and the next run finishes every todo. Tests: "
    "`tests/parity/test_status_parity.py::test_a_write_the_disk_refuses_names_the_file_and_keeps_the_old_document`, "
    "`test_checkpoints_parity.py::test_a_save_the_disk_refuses_names_the_file_and_keeps_the_previous_checkpoint`, "
    "`test_files_parity.py::test_a_write_the_disk_refuses_is_refused_with_the_reason_and_keeps_the_old_content`, "
    "`tests/kernel/test_server_core.py::test_until_idle_ends_with_the_error_when_a_todo_cannot_be_recorded`.",
    "**After a bad edit of `flags.toml`, `GET /flags` (and the dashboard) reported the defaults, all `legacy`**, "
    "while the running loop kept routing by the last good flags (`reload`). The serving process now reports the "
    "store it routes by (`codeagent_app/flags_cli.py` `register_in_force`). Test: "
    "`tests/feature_flags/test_flags_api.py::test_after_a_bad_edit_the_api_reports_the_last_good_flags_in_force` "
    "(both servers).",
    "**JSON or TOML nested thousands of levels deep raised `RecursionError`** out of every parser (config, flags, "
    "todos, status, checkpoints) and made both APIs answer 500 (`POST /todos`, retry/cancel bodies, "
    '`PUT /flags/...`) (`fuzz`). Now the parsers\' own errors ("nested too deeply") and 400s. Tests: '
    "`tests/domain/test_paths_prompts_config.py::test_documents_nested_too_deeply_are_refused_with_the_parsers_error`, "
    "`tests/feature_flags/test_loader.py`, `tests/core_async/test_state_v2.py`, "
    "`tests/api/test_rest_api.py::test_a_body_nested_too_deeply_is_a_400_not_a_500` (both servers), "
    "`tests/feature_flags/test_flags_api.py::test_a_body_nested_too_deeply_is_a_400`.",
    "**Hostile paths were accepted** (`escapes`): a nested repository's `.git/` (`vendor/x/.git/hooks/...`: code "
    "that runs on that repository's next git command), newline, CR and other control characters in names, names "
    "starting with `-`, names that are not UTF-8. `codeagent/paths.py` refuses each with a reason. Test: "
    "`tests/domain/test_paths_prompts_config.py::test_refused_paths` (new cases) and `test_check_resolved`.",
    "**Content that is not UTF-8** (an answer's JSON `\\ud800` escape decodes to a lone surrogate) raised "
    "`UnicodeEncodeError` from the checkpoint's save or the write: a traceback, not a reason (`escapes`). The "
    "edit parser and the file components refuse it. Tests: `tests/domain/test_edits.py::"
    "test_an_answer_that_is_not_utf8_text_is_refused`, `test_files_parity.py::"
    "test_content_that_is_not_utf8_text_is_refused_with_a_reason`.",
    "**The legacy server parsed a body it had not read as the connection's next request** (`fuzz`, over real "
    "HTTP): a GET's body (or any body a route answered before reading) stayed in the stream, so a body holding "
    "`GET /health HTTP/1.1...` got its own answer (request smuggling), and one too long for a request line made "
    "the standard library print a traceback on stderr when the client had gone. Every body is now read (or the "
    "connection closed), and a client that went away is a debug line. Test: `tests/legacy/test_api.py::"
    "test_a_body_the_route_does_not_read_is_never_parsed_as_the_next_request`.",
    "**Neither server shed load** (`api`): at 10x its service rate the legacy server's listen backlog of 5 (the "
    "standard library's) left clients waiting out TCP's retransmits (155 of 4,733 requests timed out after 30 s), "
    "and the async server queued 2,000 requests in its listen backlog (p99 22 s). Now a JSON 503 `overloaded` "
    "(`Retry-After: 1`) at once past 64 requests in flight, past 64 connections waiting to be accepted "
    "(`TCP_INFO`), or with the event loop 0.5 s late; the legacy backlog holds 1,024 and an idle connection is "
    "closed after 30 s. Tests: `tests/legacy/test_api.py` (`..._gets_503s_not_a_queue`, `..._listen_backlog_...`, "
    "`test_an_idle_connection_is_closed_after_the_idle_timeout`), `tests/kernel/test_load_shedding.py`.",
    "**A 200 whose JSON nests thousands of levels deep made both LLM clients raise a bare `RecursionError`** "
    "(not an `LLMError`, not retried): the todo failed at once with a traceback. Such a body is now retried "
    "like a cut-short one, then `LLMMalformedResponse` (`legacy/llm.py`, `core_async/llm_wire.py`, twin "
    "regenerated). Test: `tests/parity/test_llm_nested_body.py` (legacy, async and sync twin).",
    "**On a full disk the async loop's automatic rollback failed todos with a traceback** (`disk`, ENOSPC, the "
    "async loop with every component new): the failed checkpoint writes tripped the bridge's error-rate "
    "rollback, whose write of `flags.toml` raised a bare `OSError` inside the routed call (only "
    "`FlagFileError` was caught). `update_flags` now turns a refused write into a `FlagFileError` naming the "
    "file (`cannot write: ...`), which the rollback logs; the old flag file stays. Test: "
    "`tests/feature_flags/test_writer.py::test_a_write_the_disk_refuses_is_a_flag_file_error_and_keeps_the_old_file`.",
    "**A SIGKILL during a git write left `.git/index.lock` behind, and the next life failed every todo of the "
    'workspace** (`crash-async` with every component new: 30 todos of 2,080 ended `failed` with "index.lock: '
    "File exists\" in 150 kills; libgit2 writes the index inside the loop's own process). Whoever takes the "
    "workspace now removes a stale git lock file when no `git` process works in the workspace "
    "(`legacy/workspace_lock.py` `remove_stale_git_locks`). Tests: `tests/legacy/test_workspace_lock.py::"
    "test_taking_the_workspace_removes_an_index_lock_a_killed_git_write_left` and "
    "`test_an_index_lock_is_kept_while_a_git_process_works_in_the_workspace`.",
    "**The same for ref locks, and for young ones** (`crash-async`, the 1,000-kill run: 132 todos of 11,960 "
    "ended `failed` with \"failed to lock file '.git/refs/heads/main.lock'\" or \"cannot lock ref 'HEAD'\"): a "
    "kill during libgit2's ref update left `refs/heads/main.lock`, only `index.lock` was looked for, and a lock "
    "younger than 5 s was kept, while the next life starts within a second. Now every lock file of `.git` and "
    "`.git/refs` is looked for, and when the last holder died holding the workspace (its holder record was "
    "never cleared) its locks go at once, whatever their age. Test: `tests/legacy/test_workspace_lock.py::"
    "test_a_holder_killed_mid_write_leaves_ref_locks_the_next_holder_removes_at_once`.",
    "**Asking who holds a workspace made it look busy to a loop or migration starting in that instant** "
    '(`crash-migrate`, shard of seed 3): `migrate apply` exited 3, "refused: workspace ... is held by pid N '
    '(migrate loop)", N being a process killed before it. flock has no test operation, so `workspace_holder` '
    "(used by `codeagent status`, `todo retry`, the migration's own check, the campaign's probe) takes the lock "
    "for an instant; whoever tried to take the workspace then saw it taken and read the dead holder's record. A "
    "lock found taken is now tried again for 50 ms (`PROBE_GRACE_S`) before the workspace is called busy. Test: "
    "`tests/legacy/test_workspace_lock.py::test_someone_asking_who_holds_the_workspace_does_not_make_it_busy` "
    "(18 of 300 refused before, 0 after).",
]

MISSING: list[str] = [
    "`crash-async`: the 1,000-kill run on aec32ec held every invariant (0 unreadable, 0 lost, 0 doubled, 0 "
    "wrong over 24,600 todos) but was marked failed for two *stalls* (40 lives in a row without a finished "
    "todo): with 4 todos left the kill was drawn over 4 x 34 ms while a fresh life needs about 0.34 s to its "
    "first finished todo, so every life died first (the campaign's schedule, not the loop). The horizon now "
    "starts at that measured first-todo time (`CrashRun.kill_horizon`, `tests/chaos/test_crashes.py`); the "
    "run above (commit d19c013) is the first after it: 0 stall(s).",
    "`crash-worker` ran its 1,000 kills at d7679e2, before the async path's last changes (the checkpoint "
    "store's sequence memory, status updates batched one loop turn, the collector tuned); `crash-async` and "
    "`crash-legacy` ran earlier still. `crash-migrate` ran its 1,000 kills per operation as 4 shards of 250 "
    "side by side (`combine_shards`), at cc6c271.",
    "The soak ran at 61984920c2d6, before those changes too: RSS 25 -> 150 MiB over 10,000 todos, about 3.7 KiB "
    "per todo in the second half. The status document and the trailer index grow with the history by design; "
    "what else grows has not been measured (a tracemalloc comparison between two points of a soak would say).",
    "Until this session's last runs, the async targets ran without a flag file, so the async loop routed every "
    "component to the legacy code; `crash-async`, `crash-worker`, `soak`, `llm` and `disk` now run it with every "
    "component new (`new_path_flags`). The `crash-legacy` figures were unaffected.",
    "The fleet worker (`codeagent worker --queue DSN`, drains moved after `--stalled-after`) is not a crash target "
    "yet; nor are the moves of the state to PostgreSQL and back (`migrate apply --to postgres|files`): only the "
    "file-format `apply`/`rollback` are killed.",
    "`codeagent flags show` run from another process cannot know what a running loop holds: after a bad edit it "
    "shows the defaults and the error (the API and the dashboard of the serving process show the flags in force).",
    "The async kernel as a service (no `--until-idle`) does not retry a todo whose outcome could not be recorded "
    "(a full disk) until a `todo retry` or a restart; it stays `running` in the status meanwhile.",
    "Shedding by the listen backlog reads Linux' `TCP_INFO`; elsewhere only the in-flight count and (async) the "
    "loop's lag shed. The legacy server sheds at accept, before it knows the path: under such a backlog even "
    "`/health` gets the 503.",
    "Kills land uniformly over each life's run; the figures count landings while the target worked (its pid "
    "recorded in `status.json`, or for a migration its lock or journal on disk), not the exact instruction.",
]
