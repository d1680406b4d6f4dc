"""The campaign's record: ``docs/reliability.json`` (the latest result per target, every run) and ``docs/reliability.md``.

A full campaign may run in pieces (``--targets``): each run replaces the
results of the targets it ran, keeps the others, and appends itself to the
list of runs; the page is rendered again from the whole record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codeagent_app.chaos import render
from codeagent_app.chaos.procs import REPO

DOCS = REPO / "docs"


def load_record(path: Path) -> dict[str, Any]:
    """The record so far (empty when there is none or it does not parse)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"runs": [], "targets": {}}
    if not isinstance(data, dict):
        return {"runs": [], "targets": {}}
    data.setdefault("runs", [])
    data.setdefault("targets", {})
    return data


def merge(record: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """``record`` with ``results``'s targets replacing their earlier results, and the run appended."""
    stamp = {
        "campaign": results.get("campaign"),
        "started_at": results.get("started_at"),
        "commit": results.get("commit"),
        "dirty": results.get("dirty"),
        "seed": results.get("seed"),
        "machine": results.get("machine"),
        "load_during_run": results.get("load_during_run"),
    }
    for name, result in results.get("targets", {}).items():
        record["targets"][name] = {**result, "run": stamp}
    record["runs"].append(
        {
            **stamp,
            "targets": sorted(results.get("targets", {})),
            "seconds": results.get("seconds"),
            "ok": results.get("ok"),
        }
    )
    return record


def update_report(results: dict[str, Any], docs: Path = DOCS) -> list[Path]:
    """Merge one run into ``docs/reliability.json`` and write ``docs/reliability.md`` again."""
    record = merge(load_record(docs / "reliability.json"), results)
    return write_record(record, docs)


def write_record(record: dict[str, Any], docs: Path = DOCS) -> list[Path]:
    """Write the record and its page; the paths written."""
    docs.mkdir(parents=True, exist_ok=True)
    json_path, md_path = docs / "reliability.json", docs / "reliability.md"
    json_path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    md_path.write_text(render.page(record), encoding="utf-8")
    return [md_path, json_path]
