"""What the dashboard shows, read with the project's own readers and kept until the files change.

Every view here is a plain JSON-able dict formatted for display (the page's
templates and its JSON endpoints serve the same dicts, so the browser's script
only copies text). Reads go through the readers the CLI and the API use:
``flags_document`` (``flags show --json``), the flags audit log, health and
shadow-mismatch readers, the legacy stores for todos and status, the
migration's ``workspace_status`` and ``plan_next``. Each is cached against the
``stat`` of the files it reads (mtime, size, inode: an atomic replace is a
change), so a page render or a poll re-reads only what changed; the migration
status, which opens every checkpoint file, is recomputed at most every few
seconds while a loop keeps writing checkpoints.

All of it is blocking file I/O: on the async server the dashboard calls it
from a worker thread.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

from codeagent.errors import AgentError
from codeagent.models import StatusFile, Todo, TodoState, TodoStatus
from codeagent.paths import (
    BACKUPS_RELDIR,
    CHECKPOINTS_RELDIR,
    FORMAT_MARKER_RELPATH,
    MIGRATE_JOURNAL_RELPATH,
    MISMATCHES_RELPATH,
    STATUS_RELPATH,
    TODOS_RELPATH,
)
from codeagent_app.flags_cli import flags_document
from feature_flags import COMPONENTS, AuditEntry, FlagFileError, audit_path, read_entries
from feature_flags.health import health_path
from feature_flags.mismatches import read_mismatches

T = TypeVar("T")

#: Throughput chart: this many buckets of this many seconds, the newest last.
THROUGHPUT_BUCKETS = 20
THROUGHPUT_BUCKET_SECONDS = 15
#: At most this many shadow mismatches and audit entries are listed (the newest).
MISMATCHES_SHOWN = 50
AUDIT_SHOWN = 200
#: Diff lines shown per side of a mismatch.
DIFF_LINES = 400


# ----------------------------------------------------------------- the cache


def _stat_key(paths: Sequence[Path]) -> tuple[tuple[int, int, int] | None, ...]:
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class Cached(Generic[T]):
    """A value computed from files, computed again only when one of them changed.

    ``min_age`` keeps a value at least that many seconds even if the files
    changed meanwhile (for costly reads of files a loop rewrites all the time).
    """

    def __init__(self, paths: Sequence[Path], compute: Callable[[], T], *, min_age: float = 0.0) -> None:
        self.paths = list(paths)
        self.compute = compute
        self.min_age = min_age
        self._lock = threading.Lock()
        self._key: object = None
        self._at = 0.0
        self._value: T | None = None
        self._has = False

    def get(self) -> T:
        """The value for the files as they are now (or as they were less than ``min_age`` ago)."""
        with self._lock:
            now = time.monotonic()
            if self._has and self.min_age and now - self._at < self.min_age:
                return self._value  # type: ignore[return-value]
            key = _stat_key(self.paths)
            if self._has and key == self._key:
                return self._value  # type: ignore[return-value]
            value = self.compute()
            self._key, self._at, self._value, self._has = key, now, value, True
            return value


# ----------------------------------------------------------------- formatting


def _short_time(value: str | datetime | None) -> str:
    """``2026-11-26 15:49:36`` (UTC) from an ISO time or a datetime; empty for none."""
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        value = value.astimezone(UTC).isoformat()
    return str(value)[:19].replace("T", " ")


def duration_text(seconds: float | None) -> str:
    """``45 ms``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``; empty for none."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def mode_text(mode: str, percent: float, serve: str) -> str:
    """``canary 10%``, ``shadow (serve legacy)``, ``new``."""
    if mode == "canary":
        return f"canary {percent:g}%"
    if mode == "shadow":
        return f"shadow (serve {serve})"
    return mode


def serve_side(mode: str, percent: float, serve: str) -> str:
    """Which implementation answers the callers."""
    if mode == "canary":
        return f"new {percent:g}%, legacy {100 - percent:g}%"
    if mode == "shadow":
        other = "new" if serve == "legacy" else "legacy"
        return f"{serve} ({other} compared)"
    return mode


def rollback_state(text: str) -> str:
    """``armed``, ``inconclusive``, ``rolled-back`` or ``other``: the CSS class of the rollback column."""
    lowered = text.lower()
    for state in ("armed", "inconclusive"):
        if lowered.startswith(state):
            return state
    return "rolled-back" if lowered.startswith("rolled back") else "other"


# ----------------------------------------------------------------- components


def components_view(flags_path: Path) -> dict[str, Any]:
    """The rows of ``flags show --json``, each with display fields added."""
    doc = flags_document(flags_path)
    for row in doc["components"]:
        calls, errors = int(row["calls"]), int(row["errors"])
        row["mode_text"] = mode_text(row["mode"], float(row["percent"]), str(row["serve"]))
        row["percent_text"] = f"{float(row['percent']):g}%" if row["mode"] == "canary" else ""
        row["serve_text"] = serve_side(row["mode"], float(row["percent"]), str(row["serve"]))
        row["error_rate"] = errors / calls if calls else None
        row["error_rate_text"] = f"{100 * errors / calls:.1f}%" if calls else "-"
        row["rollback_state"] = rollback_state(str(row["rollback"]))
    return doc


# ----------------------------------------------------------------- todos


@dataclass(frozen=True)
class TodoSnapshot:
    """One workspace's todos and status as last read (or why they could not be read)."""

    todos: list[Todo]
    status: StatusFile
    error: str | None = None


def read_todos(root: Path) -> TodoSnapshot:
    """The todo list and the status document, with the legacy stores (as ``codeagent status`` reads them)."""
    from legacy.status import StatusStore
    from legacy.todos import TodoStore

    try:
        return TodoSnapshot(TodoStore(root).load(), StatusStore(root).load())
    except AgentError as exc:
        return TodoSnapshot([], StatusFile(), str(exc))


def _seconds(state: TodoState, now: datetime) -> float | None:
    if state.started_at is None:
        return None
    if state.finished_at is not None:
        return max(0.0, (state.finished_at - state.started_at).total_seconds())
    if state.status is TodoStatus.RUNNING:
        return max(0.0, (now - state.started_at).total_seconds())
    return None


def todo_rows(snapshot: TodoSnapshot, now: datetime) -> list[dict[str, Any]]:
    """One display row per todo, in file order."""
    rows: list[dict[str, Any]] = []
    for todo in snapshot.todos:
        state = snapshot.status.todos.get(todo.id) or TodoState()
        rows.append(
            {
                "id": todo.id,
                "text": todo.text,
                "status": state.status.value,
                "attempts": state.attempts,
                "commit": (state.commit or "")[:10],
                "commit_full": state.commit or "",
                "duration": duration_text(_seconds(state, now)),
                "error": state.error or "",
                "updated": _short_time(state.updated_at),
            }
        )
    return rows


def status_counts(snapshot: TodoSnapshot) -> dict[str, int]:
    """How many todos have each status (every status named, pending for those never started)."""
    counts = {status.value: 0 for status in TodoStatus}
    for todo in snapshot.todos:
        state = snapshot.status.todos.get(todo.id)
        counts[(state.status if state else TodoStatus.PENDING).value] += 1
    return counts


def throughput(snapshots: Sequence[TodoSnapshot], now: datetime) -> dict[str, Any]:
    """Todos finished (done or failed) per bucket over the last minutes, from the status documents."""
    span = THROUGHPUT_BUCKETS * THROUGHPUT_BUCKET_SECONDS
    buckets = [0] * THROUGHPUT_BUCKETS
    failed = 0
    for snapshot in snapshots:
        for state in snapshot.status.todos.values():
            if state.finished_at is None or state.status not in (TodoStatus.DONE, TodoStatus.FAILED):
                continue
            age = (now - state.finished_at).total_seconds()
            if 0 <= age < span:
                buckets[THROUGHPUT_BUCKETS - 1 - int(age // THROUGHPUT_BUCKET_SECONDS)] += 1
                failed += state.status is TodoStatus.FAILED
    total = sum(buckets)
    peak = max(buckets)
    return {
        "bucket_seconds": THROUGHPUT_BUCKET_SECONDS,
        "buckets": buckets,
        "heights": [max(2, round(36 * n / peak)) if n else 0 for n in buckets],
        "peak": peak,
        "finished": total,
        "failed": failed,
        "minutes": span // 60,
        "per_minute": round(total / (span / 60), 1),
        "text": f"{total} finished in the last {span // 60} min ({total / (span / 60):.1f}/min)",
    }


# ----------------------------------------------------------------- metrics


def metric_values(text: bytes) -> dict[str, float]:
    """The dashboard's figures from a Prometheus exposition (``GET /metrics``)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {"todos_in_flight": 0.0, "todos_queued": 0.0, "llm_in_flight": 0.0, "todos_total": 0.0}
    for family in text_string_to_metric_families(text.decode("utf-8", "replace")):
        for sample in family.samples:
            if sample.name == "codeagent_todos_in_flight":
                out["todos_in_flight"] += sample.value
            elif sample.name == "codeagent_todos_queued":
                out["todos_queued"] += sample.value
            elif sample.name == "codeagent_resource_in_use" and sample.labels.get("resource") == "llm_slots":
                out["llm_in_flight"] += sample.value
            elif sample.name == "codeagent_todos_total":
                out["todos_total"] += sample.value
    return out


def legacy_llm_in_flight(root: Path, snapshot: TodoSnapshot) -> int:
    """Running todos of a legacy loop still waiting for their LLM answer (checkpoint not past ``started``)."""
    from legacy.checkpoints import CheckpointStore

    store = CheckpointStore(root)
    waiting = 0
    for todo_id, state in snapshot.status.todos.items():
        if state.status is not TodoStatus.RUNNING:
            continue
        try:
            checkpoint = store.load(todo_id)
        except AgentError:
            continue
        waiting += checkpoint is None or checkpoint.stage.value == "started"
    return waiting


# ----------------------------------------------------------------- shadow mismatches


def _tolerant_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a mismatch file; unreadable lines (a torn last write) are skipped."""
    try:
        return read_mismatches(path)
    except ValueError:
        pass
    records: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return records
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def _text_of(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.splitlines() or [""]
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str).splitlines()


def side_by_side(legacy: Any, new: Any) -> list[dict[str, Any]]:
    """Rows of a side-by-side diff: ``{"kind", "left", "right", "left_no", "right_no"}``.

    ``kind`` is ``equal``, ``replace``, ``delete`` (only on the left) or ``insert`` (only on the right).
    """
    left, right = _text_of(legacy)[:DIFF_LINES], _text_of(new)[:DIFF_LINES]
    rows: list[dict[str, Any]] = []
    matcher = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    for kind, i1, i2, j1, j2 in matcher.get_opcodes():
        for k in range(max(i2 - i1, j2 - j1)):
            li, rj = i1 + k, j1 + k
            has_left, has_right = li < i2, rj < j2
            rows.append(
                {
                    "kind": kind if kind == "equal" else ("replace" if has_left and has_right else kind),
                    "left": left[li] if has_left else "",
                    "right": right[rj] if has_right else "",
                    "left_no": li + 1 if has_left else None,
                    "right_no": rj + 1 if has_right else None,
                }
            )
    return rows


# ----------------------------------------------------------------- audit


def audit_rows(entries: Sequence[AuditEntry]) -> list[dict[str, Any]]:
    """The newest entries first, each change as ``key: old -> new``."""
    rows: list[dict[str, Any]] = []
    for entry in reversed(entries[-AUDIT_SHOWN:]):
        rows.append(
            {
                "time": _short_time(entry.time),
                "source": entry.source,
                "user": entry.user,
                "reason": entry.reason,
                "changes": [f"{c.key}: {_plain(c.old)} -> {_plain(c.new)}" for c in entry.changes],
            }
        )
    return rows


def _plain(value: Any) -> str:
    return "(unset)" if value is None else str(value)


# ----------------------------------------------------------------- migration


def migration_view(root: Path) -> dict[str, Any]:
    """``migrate status``: the summary and the lines the command prints."""
    from migration.report import render_status, workspace_status

    info = workspace_status(root)
    return {"status": info, "lines": render_status(info)}


def next_view(root: Path, flags_path: Path) -> dict[str, Any]:
    """``migrate next --dry-run``: the step it would take, or the gate that holds it, as it prints them."""
    from migration.rollout import plan_next

    try:
        step = plan_next(root, flags_path)
    except FlagFileError as exc:
        return {"component": None, "allowed": False, "head": f"error: {exc}", "reasons": [], "held_by": None}
    if step.component is None:
        return {"component": None, "allowed": False, "head": "", "reasons": step.reasons, "held_by": None}
    head = f"{step.component}: {step.current} -> {step.target}"
    verdict = "would move (dry run)" if step.allowed else "not taken"
    held = [reason for reason in step.reasons if reason.startswith("gate failed")]
    return {
        "component": step.component,
        "current": step.current,
        "target": step.target,
        "allowed": step.allowed,
        "head": f"{head}: {verdict}",
        "reasons": step.reasons,
        "held_by": held[0] if held else None,
    }


# ----------------------------------------------------------------- A/B report


_IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.(png|jpe?g|svg)$")


def latest_report(base: Path | None) -> Path | None:
    """The directory of the newest ``codeagent bench`` report under ``base`` (or ``base`` itself)."""
    if base is None:
        return None
    if (base / "report.md").is_file():
        return base
    try:
        candidates = [d for d in base.iterdir() if (d / "report.md").is_file()]
    except OSError:
        return None
    if not candidates:
        return None
    return max(candidates, key=lambda d: ((d / "report.md").stat().st_mtime, d.name))


def render_report(directory: Path, files_url: str) -> dict[str, Any]:
    """The report's Markdown as HTML (raw HTML in it escaped), its images served from ``files_url``."""
    from markdown_it import MarkdownIt

    text = (directory / "report.md").read_text(encoding="utf-8")
    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)

    def image(match: re.Match[str]) -> str:
        src = match.group(1)
        name = src.rsplit("/", 1)[-1]
        return f'src="{files_url}/{name}"' if _IMAGE_NAME.match(name) else match.group(0)

    html = re.sub(r'src="([^":]+)"', image, html)
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), directory.name)
    stamp = datetime.fromtimestamp((directory / "report.md").stat().st_mtime, UTC)
    return {"dir": str(directory), "title": title, "html": html, "written": _short_time(stamp)}


def report_image(directory: Path, name: str) -> Path | None:
    """A chart of the report by file name (nothing outside its directory)."""
    if not _IMAGE_NAME.match(name):
        return None
    path = directory / name
    return path if path.is_file() else None


# ----------------------------------------------------------------- one dashboard's data


@dataclass(frozen=True)
class Workspace:
    """A workspace the server drives: its name in the API, its directory, its flag file."""

    label: str
    root: Path
    flags_path: Path


class DashboardData:
    """Every reader of one dashboard, each cached on the files it reads."""

    def __init__(self, workspaces: Sequence[Workspace], flags_path: Path, bench_dir: Path | None) -> None:
        if not workspaces:
            raise ValueError("the dashboard needs at least one workspace")
        self.workspaces = list(workspaces)
        self.flags_path = flags_path
        self.bench_dir = bench_dir
        flag_files = [flags_path, audit_path(flags_path), health_path(flags_path)]
        self._components = Cached(flag_files, lambda: components_view(flags_path))
        self._audit = Cached([audit_path(flags_path)], lambda: read_entries(flags_path))
        self._todos = {
            ws.label: Cached(
                [ws.root / TODOS_RELPATH, ws.root / STATUS_RELPATH], partial(read_todos, ws.root)
            )
            for ws in self.workspaces
        }
        self._mismatches = Cached(
            [ws.root / MISMATCHES_RELPATH for ws in self.workspaces], self._read_mismatches
        )
        self._migration = {
            ws.label: Cached(
                [
                    ws.root / CHECKPOINTS_RELDIR,
                    ws.root / FORMAT_MARKER_RELPATH,
                    ws.root / MIGRATE_JOURNAL_RELPATH,
                    ws.root / BACKUPS_RELDIR,
                ],
                partial(migration_view, ws.root),
                min_age=5.0,
            )
            for ws in self.workspaces
        }
        self._next = {
            ws.label: Cached(
                [
                    ws.flags_path,
                    audit_path(ws.flags_path),
                    health_path(ws.flags_path),
                    ws.root / MISMATCHES_RELPATH,
                ],
                partial(next_view, ws.root, ws.flags_path),
            )
            for ws in self.workspaces
        }
        self._diffs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._report_lock = threading.Lock()
        self._report: tuple[object, dict[str, Any] | None] = (None, None)

    # ------------------------------------------------------------- readers

    def components(self) -> dict[str, Any]:
        """``flags show --json`` with display fields."""
        return self._components.get()

    def snapshots(self) -> dict[str, TodoSnapshot]:
        """Each workspace's todos and status."""
        return {label: cached.get() for label, cached in self._todos.items()}

    def todos(self, now: datetime) -> list[dict[str, Any]]:
        """Per workspace: name, path, counts, agent, todo rows (or the error reading them)."""
        out = []
        snapshots = self.snapshots()
        for ws in self.workspaces:
            snap = snapshots[ws.label]
            agent = snap.status.agent
            out.append(
                {
                    "name": ws.label,
                    "path": str(ws.root),
                    "error": snap.error,
                    "counts": status_counts(snap),
                    "agent": f"{agent.state}" + (f", on {agent.current_todo}" if agent.current_todo else ""),
                    "todos": todo_rows(snap, now),
                }
            )
        return out

    def _read_mismatches(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for ws in self.workspaces:
            for index, record in enumerate(_tolerant_records(ws.root / MISMATCHES_RELPATH)):
                records.append({**record, "workspace": ws.label, "key": f"{ws.label}:{index}"})
        records.sort(key=lambda r: str(r.get("time", "")), reverse=True)
        return records

    def mismatch_count(self) -> int:
        """How many shadow mismatches are recorded (every workspace)."""
        return len(self._mismatches.get())

    def mismatches(self, component: str | None = None, *, diffs: bool = True) -> dict[str, Any]:
        """The newest mismatches (of one component, or all), each with a side-by-side diff."""
        records = self._mismatches.get()
        counts = {name: 0 for name in COMPONENTS}
        for record in records:
            name = str(record.get("component", ""))
            counts[name] = counts.get(name, 0) + 1
        chosen = [r for r in records if component in (None, "", r.get("component"))]
        items = []
        for record in chosen[:MISMATCHES_SHOWN]:
            item = {
                "key": record["key"],
                "workspace": record["workspace"],
                "time": _short_time(str(record.get("time", ""))),
                "component": str(record.get("component", "")),
                "operation": str(record.get("operation", "")),
                "todo_id": record.get("todo_id") or "",
                "served": str(record.get("served", "")),
                "legacy_ms": record.get("legacy_ms"),
                "new_ms": record.get("new_ms"),
                "legacy": record.get("legacy"),
                "new": record.get("new"),
            }
            if diffs:
                item["diff"] = self._diff(record)
            items.append(item)
        return {
            "total": len(records),
            "matching": len(chosen),
            "shown": len(items),
            "component": component or "",
            "counts": counts,
            "items": items,
        }

    def _diff(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        key = (str(record["key"]), str(record.get("time", "")))
        found = self._diffs.get(key)
        if found is None:  # records are only ever appended: a diff, once made, stays right
            found = self._diffs[key] = side_by_side(record.get("legacy"), record.get("new"))
        return found

    def audit_count(self) -> int:
        """How many changes the audit log holds."""
        return len(self._audit.get())

    def audit(self) -> list[dict[str, Any]]:
        """The newest audit entries first."""
        return audit_rows(self._audit.get())

    def migration(self) -> list[dict[str, Any]]:
        """Per workspace: ``migrate status`` and ``migrate next --dry-run``."""
        return [
            {
                "name": ws.label,
                "flags": str(ws.flags_path),
                **self._migration[ws.label].get(),
                "next": self._next[ws.label].get(),
            }
            for ws in self.workspaces
        ]

    def live(self, metrics: bytes | None, now: datetime) -> dict[str, Any]:
        """In flight, LLM requests in flight and throughput (lag is measured by the app, on its loop)."""
        snapshots = self.snapshots()
        out: dict[str, Any] = {"throughput": throughput(list(snapshots.values()), now)}
        if metrics is not None:
            values = metric_values(metrics)
            out.update(
                source="metrics",
                todos_in_flight=int(values["todos_in_flight"]),
                todos_queued=int(values["todos_queued"]),
                llm_in_flight=int(values["llm_in_flight"]),
                todos_total=int(values["todos_total"]),
            )
        else:
            running = sum(
                s.status is TodoStatus.RUNNING
                for snap in snapshots.values()
                for s in snap.status.todos.values()
            )
            llm = sum(legacy_llm_in_flight(ws.root, snapshots[ws.label]) for ws in self.workspaces)
            out.update(source="status", todos_in_flight=running, todos_queued=None, llm_in_flight=llm)
            out["todos_total"] = sum(
                s.status in (TodoStatus.DONE, TodoStatus.FAILED)
                for snap in snapshots.values()
                for s in snap.status.todos.values()
            )
        return out

    def report(self, files_url: str) -> dict[str, Any] | None:
        """The newest bench report, rendered (``None`` when there is none)."""
        directory = latest_report(self.bench_dir)
        if directory is None:
            return None
        key = (str(directory), _stat_key([directory / "report.md"]))
        with self._report_lock:
            if self._report[0] != key:
                self._report = (key, render_report(directory, files_url))
            return self._report[1]

    def report_image(self, name: str) -> Path | None:
        """A chart of the newest report."""
        directory = latest_report(self.bench_dir)
        return report_image(directory, name) if directory is not None else None
