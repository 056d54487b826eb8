"""Every JSON document ego4d-dl prints, built from values; pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .events import Event
from .planned import Plan, Totals
from .results import Diagnosis, Status, StatusCounts, VerifyResult
from .shard import format_shard

__all__ = ["doctor_json", "event_json", "plan_json", "status_json", "verify_json"]


def plan_json(plan: Plan, *, free_bytes: int | None) -> dict[str, Any]:
    """The plan as one JSON-ready document: every file with its action, and the totals."""

    def totals(t: Totals) -> dict[str, int]:
        return {
            "files": t.files,
            "size_bytes": t.size_bytes,
            "complete_files": t.complete_files,
            "complete_bytes": t.complete_bytes,
            "fetch_files": t.fetch_files,
            "fetch_bytes": t.fetch_bytes,
            "resume_files": t.resume_files,
            "adopt_files": t.adopt_files,
            "adopt_bytes": t.adopt_bytes,
            "problem_files": t.problem_files,
        }

    return {
        "version": plan.version,
        "output_directory": str(plan.output_directory),
        "free_bytes": free_bytes,
        "totals": totals(plan.totals),
        "warnings": list(plan.warnings),
        "datasets": [
            {
                "name": ds.name,
                "totals": totals(ds.totals),
                "malformed_rows": [{"line": m.line, "reason": m.reason} for m in ds.malformed],
                "unknown_uids": list(ds.unknown_uids),
                "files": [
                    {
                        "uid": f.uid,
                        "bucket": f.bucket,
                        "key": f.key,
                        "destination": str(f.dest),
                        "size_bytes": f.size_bytes,
                        "etag": f.etag,
                        "action": f.action.value,
                        "present_bytes": f.present_bytes,
                        "note": f.note,
                    }
                    for f in ds.files
                ],
            }
            for ds in plan.datasets
        ],
    }


def event_json(event: Event) -> dict[str, Any]:
    """An event as a JSON-ready dict with its type name under ``"event"``."""
    doc: dict[str, Any] = {"event": type(event).__name__}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        doc[f.name] = _jsonable(value)
    return doc


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _counts_json(c: StatusCounts) -> dict[str, int]:
    return {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}


def status_json(status: Status) -> dict[str, Any]:
    """The status as one JSON-ready document."""
    return {
        "output_directory": str(status.output_directory),
        "version": status.version,
        "shard_count": status.shard_count,
        "journals": [str(p) for p in status.journals],
        "warnings": list(status.warnings),
        "totals": _counts_json(status.counts),
        "datasets": [{"name": d.name, **_counts_json(d.counts)} for d in status.datasets],
        "shards": [
            {
                "shard": format_shard(s.shard) if s.shard else None,
                "journal": str(s.journal) if s.journal else None,
                "totals": _counts_json(s.counts),
                "datasets": [{"name": d.name, **_counts_json(d.counts)} for d in s.datasets],
            }
            for s in status.shards
        ],
    }


def verify_json(result: VerifyResult) -> dict[str, Any]:
    """The verdicts (and the repair summary) as one JSON-ready document."""
    out = result.plan.output_directory
    return {
        "output_directory": str(out),
        "ok": result.ok,
        "counts": result.counts,
        "hashed_bytes": result.hashed_bytes,
        "elapsed_s": result.elapsed_s,
        "files": [
            {
                "dataset": c.planned.dataset,
                "uid": c.planned.uid,
                "key": c.planned.key,
                "destination": str(c.planned.dest.relative_to(out)),
                "verdict": c.verdict.value,
                "level": c.level,
                "reason": c.reason,
            }
            for c in result.checks
        ],
        "repair": _jsonable(result.repair) if result.repair is not None else None,
    }


def doctor_json(diagnosis: Diagnosis) -> dict[str, Any]:
    """The findings as one JSON-ready document."""
    return {
        "would_start": diagnosis.would_start,
        "blame": diagnosis.blame.value or None,
        "findings": [
            {
                "check": f.check,
                "severity": f.severity.value,
                "detail": f.detail,
                "blame": f.blame.value or None,
            }
            for f in diagnosis.findings
        ],
    }
