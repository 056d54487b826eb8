"""Event factories: planned files and the events a run reports about them, a run summary
with defaults, and a clock the consumers of events (sinks, the dashboard) read."""

from __future__ import annotations

from pathlib import Path

from ego4d_dl.events import BytesReceived, FileStarted, FileVerified, RunSummary
from ego4d_dl.ondisk import ObjectVersion
from ego4d_dl.planned import Action, PlannedFile
from tests.support.seed import MIB

__all__ = ["FakeClock", "planned_file", "received", "started", "summary", "verified"]


class FakeClock:
    """``clock()`` is ``clock.now``, which the test moves."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def planned_file(
    dataset: str,
    name: str,
    size: int,
    action: Action = Action.FETCH,
    *,
    out: Path = Path("/data/ego4d"),
) -> PlannedFile:
    """A file of ``dataset`` in the plan, from the ego4d-cmu bucket, going to ``out``."""
    return PlannedFile(
        dataset=dataset,
        uid=name,
        version=ObjectVersion(
            bucket="ego4d-cmu", key=f"public/v2/{dataset}/{name}", etag="0" * 32, size_bytes=size
        ),
        dest=out / "v2" / dataset / name,
        action=action,
    )


def started(f: PlannedFile, present: int = 0) -> FileStarted:
    return FileStarted(
        dataset=f.dataset, key=f.key, dest=f.dest, size_bytes=f.size_bytes, present_bytes=present
    )


def received(f: PlannedFile, n: int) -> BytesReceived:
    return BytesReceived(dataset=f.dataset, key=f.key, count=n)


def verified(f: PlannedFile) -> FileVerified:
    return FileVerified(
        dataset=f.dataset,
        key=f.key,
        dest=f.dest,
        size_bytes=f.size_bytes,
        level="md5",
        fetched_bytes=f.size_bytes,
    )


def summary(**kw: object) -> RunSummary:
    """A run's summary: five files, three verified, one skipped, one missing, 100 MiB
    fetched in 12.5 s with a retry; ``kw`` overrides any field."""
    values: dict[str, object] = {
        "files": 5,
        "verified": 3,
        "skipped": 1,
        "failed": 0,
        "missing": 1,
        "denied": 0,
        "bytes_fetched": 100 * MIB,
        "size_bytes": 101 * MIB,
        "elapsed_s": 12.5,
        "retries": 1,
        "restarts": 0,
        "levels": {"md5": 3},
        "problems": (),
    }
    values.update(kw)
    return RunSummary(**values)  # type: ignore[arg-type]
