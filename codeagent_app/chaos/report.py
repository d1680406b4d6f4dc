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
        "shards": results.get("shards"),
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


# Fields of a crash target's counts that hold a time, a calibration or a verdict, not a count to add.
_NOT_SUMMED = frozenset({"seconds", "calibration_s", "ok", "checkpoints", "extra"})


def _sum_counts(parts: list[Any]) -> Any:
    """One count record from several shards' records of the same target (counts added, problems joined)."""
    first = parts[0]
    if not isinstance(first, dict):
        return first
    merged: dict[str, Any] = {}
    for key, value in first.items():
        values = [part.get(key) for part in parts]
        if key == "ok":
            merged[key] = all(v is True for v in values)
        elif key == "seconds":
            merged[key] = max(v for v in values if isinstance(v, int | float))
        elif key == "problems":
            merged[key] = [p for v in values for p in (v or [])]
        elif key in _NOT_SUMMED or isinstance(value, bool) or not isinstance(value, int | float | dict):
            merged[key] = value
        elif isinstance(value, dict):
            merged[key] = _sum_counts([v if isinstance(v, dict) else {} for v in values])
        else:
            merged[key] = sum(v for v in values if isinstance(v, int | float))
    return merged


def combine_shards(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's results from crash-target shards run side by side (same commit, other seeds).

    A full crash campaign of 1,000 kills per target takes hours on 2 cores; run in
    shards at once (``codeagent chaos -t crash-X --kills N --seed S --no-report``),
    their counts add up. The combined run names every seed and its wall time is the
    longest shard's. Shards of different commits are refused.
    """
    if not shards:
        raise ValueError("no shard to combine")
    commits = {s.get("commit") for s in shards}
    if len(commits) != 1:
        raise ValueError(f"shards of different commits: {sorted(map(str, commits))}")
    names = set(shards[0].get("targets", {}))
    for shard in shards[1:]:
        if set(shard.get("targets", {})) != names:
            raise ValueError("shards ran different targets")
    combined = dict(shards[0])
    combined["seed"] = [s.get("seed") for s in shards]
    combined["shards"] = len(shards)
    combined["started_at"] = min(str(s.get("started_at")) for s in shards)
    combined["seconds"] = max(float(s.get("seconds") or 0.0) for s in shards)
    combined["ok"] = all(s.get("ok") is True for s in shards)
    loads = [s.get("load_during_run") or {} for s in shards]
    means = [float(x["mean"]) for x in loads if "mean" in x]
    maxes = [float(x["max"]) for x in loads if "max" in x]
    if means:
        combined["load_during_run"] = {"mean": round(sum(means) / len(means), 2), "max": max(maxes)}
    combined["targets"] = {name: _sum_counts([s["targets"][name] for s in shards]) for name in sorted(names)}
    return combined
