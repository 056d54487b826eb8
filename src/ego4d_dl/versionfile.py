"""The original CLI's ``manifest.ver``, kept up to date so that going back to it costs nothing."""

from __future__ import annotations

import asyncio
import csv
import fcntl
import io
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .adopt import VERSION_FILE
from .errors import Ego4dDLError
from .journal import JOURNAL_DIR, Journal
from .locks import holds_exactly, open_plain
from .planned import Plan, PlannedFile, dataset_dir
from .retry import RetryPolicy, retry_call
from .store import ObjectStore

__all__ = [
    "VersionEntry",
    "complete_files",
    "format_entries",
    "merge_entries",
    "object_versions",
    "read_entries",
    "update_version_files",
    "write_version_file",
]

_FIELDS = ("uid", "version", "filename")
_LOCK_NAME = "manifest-ver.lock"
# A few quick attempts: a version id missed only costs the original a refetch of that file.
_HEAD_RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.2, max_delay_s=2.0)


@dataclass(frozen=True, slots=True)
class VersionEntry:
    """One row of ``manifest.ver``: the original's ``VersionEntry``; ``version`` ``""`` = none."""

    uid: str
    version: str
    filename: str


def read_entries(folder: Path) -> list[VersionEntry]:
    """The rows of ``folder/manifest.ver`` in file order; ``[]`` if absent or unreadable."""
    try:
        with (folder / VERSION_FILE).open(encoding="utf-8", newline="") as f:
            return [
                VersionEntry(row.get("uid") or "", row.get("version") or "", row["filename"] or "")
                for row in csv.DictReader(f)
                if row.get("uid")
            ]
    except (OSError, UnicodeDecodeError, csv.Error, KeyError):
        return []


def merge_entries(old: Iterable[VersionEntry], new: Iterable[VersionEntry]) -> list[VersionEntry]:
    """``old`` with each uid of ``new`` replaced or added (the original keeps one per uid),
    sorted by file name: the same files give the same bytes, however the runs were split."""
    merged = {e.uid: e for e in old}
    for entry in new:
        merged[entry.uid] = entry
    return sorted(merged.values(), key=lambda e: (e.filename, e.uid))


def format_entries(entries: Iterable[VersionEntry]) -> bytes:
    """The file as the original writes it: ``csv.DictWriter``, CRLF line ends, a header."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(_FIELDS)
    writer.writerows((e.uid, e.version, e.filename) for e in entries)
    return out.getvalue().encode("utf-8")


def write_version_file(folder: Path, entries: Iterable[VersionEntry]) -> Path:
    """Replace ``folder/manifest.ver`` atomically (mode 0644 less the umask, as data files),
    unless it already holds exactly these entries (a rerun with nothing new to name)."""
    dest = folder / VERSION_FILE
    data = format_entries(entries)
    if holds_exactly(dest, data):
        return dest
    tmp = folder / f".{VERSION_FILE}.{os.getpid()}.ego4d-dl-tmp"
    # Never through a link (locks.open_plain); a link at dest is replaced by the rename.
    fd = open_plain(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def complete_files(plan: Plan, journal: Journal) -> list[PlannedFile]:
    """The plan's dataset files that the journal knows complete, as planned (same ETag)."""
    out = plan.output_directory
    done = []
    for f in plan.files:
        if f.dataset == "metadata" or f.action.is_problem:
            continue
        entry = journal.get(str(f.dest.relative_to(out)))
        if entry is not None and entry.complete and not entry.damaged and entry.etag == f.etag:
            done.append(f)
    return done


async def object_versions(
    store: ObjectStore,
    files: Sequence[PlannedFile],
    *,
    concurrency: int,
    policy: RetryPolicy = _HEAD_RETRY,
) -> dict[tuple[str, str], str]:
    """The version id of each file's object, ``""`` when it has none or cannot be learnt.

    The first HEAD in a bucket decides whether the bucket is versioned at all; a version id
    whose object's ETag is no longer the planned one is not recorded.
    """
    gate = asyncio.Semaphore(concurrency)
    found: dict[tuple[str, str], str] = {}

    async def version_of(f: PlannedFile) -> str | None:
        async with gate:
            try:
                head = await retry_call(
                    lambda: store.head(f.bucket, f.key),
                    policy=policy,
                    sleep=asyncio.sleep,
                    rng=random.Random(),
                )
            except Ego4dDLError:  # 404, 403, keys, network: the version stays unknown
                return None
        return head.version_id if head.etag == f.etag else None

    async def bucket(files_of_bucket: list[PlannedFile]) -> None:
        first, rest = files_of_bucket[0], files_of_bucket[1:]
        version = await version_of(first)
        found[(first.bucket, first.key)] = version or ""
        if version is None:
            for f in rest:
                found[(f.bucket, f.key)] = ""
            return
        versions = await asyncio.gather(*(version_of(f) for f in rest))
        for f, v in zip(rest, versions, strict=True):
            found[(f.bucket, f.key)] = v or ""

    by_bucket: dict[str, list[PlannedFile]] = {}
    for f in files:
        by_bucket.setdefault(f.bucket, []).append(f)
    await asyncio.gather(*(bucket(group) for group in by_bucket.values()))
    return found


async def update_version_files(
    plan: Plan, journal: Journal, store: ObjectStore, *, concurrency: int
) -> list[Path]:
    """Write every dataset folder's ``manifest.ver`` for the plan's complete files.

    Files already named (by uid and file name) in a folder's ``manifest.ver`` keep their entry
    unless this run fetched them; the others are HEADed for their version id. Returns the
    files written (or found already up to date).
    """
    if plan.family != "Ego4D":
        return []  # the original egoexo downloader keeps no manifest.ver
    complete = complete_files(plan, journal)
    if not complete:
        return []
    # Every dataset folder of the run, those where this shard fetched nothing too.
    out = plan.output_directory
    folders = [
        folder
        for folder in sorted(
            {dataset_dir(out, plan.version, d.name) for d in plan.datasets if d.name != "metadata"}
        )
        if folder.is_dir()
    ]
    known = {(e.uid, e.filename): e for folder in folders for e in read_entries(folder)}
    unknown = [f for f in complete if f.action.transfers or (f.uid, f.dest.name) not in known]
    versions = await object_versions(store, unknown, concurrency=concurrency)
    fresh = {(f.bucket, f.key) for f in unknown}
    entries = [
        VersionEntry(f.uid, versions[(f.bucket, f.key)], f.dest.name)
        if (f.bucket, f.key) in fresh
        else known[(f.uid, f.dest.name)]
        for f in complete
    ]
    lock = plan.output_directory / JOURNAL_DIR / _LOCK_NAME
    return await asyncio.to_thread(_merge_into, lock, folders, entries)


def _merge_into(lock: Path, folders: Sequence[Path], entries: list[VersionEntry]) -> list[Path]:
    """Merge ``entries`` into each folder's file, one process at a time.

    Shards of one output directory finish at their own moments; the lock keeps one from
    writing over entries another has just merged. POSIX record locks hold on NFS and Lustre
    where flock may not; where neither holds, a lost entry costs the original one refetch.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = open_plain(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        return [
            write_version_file(folder, merge_entries(read_entries(folder), entries))
            for folder in folders
        ]
    finally:
        os.close(fd)  # closing releases the lock
