"""Read files back from disk and check them against their objects' ETags, in parallel."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from .errors import (
    AccessDeniedError,
    ObjectNotFoundError,
    RemoteChangedError,
    TransferError,
)
from .etags import Layout, VerifyLevel, composite_etag, etag_kind, multipart_count
from .events import BytesHashed, CheckStarted, EventSink, FileChecked
from .files import hash_range
from .journal import Journal
from .layout import exact_layout, learn_layout, retrying
from .planned import PlannedFile
from .ranges import part_bounds
from .results import FileCheck, Verdict
from .retry import RetryPolicy
from .store import ObjectStore

__all__ = [
    "CHECK_RETRY",
    "FileCheck",
    "Verdict",
    "check_files",
    "record_checks",
]

# Layout lookups are few and small; give up about as soon as planning does.
CHECK_RETRY = RetryPolicy(max_attempts=5, base_delay_s=0.2, max_delay_s=4.0)


async def check_files(
    store: ObjectStore,
    items: Sequence[tuple[PlannedFile, Layout | None]],
    *,
    jobs: int,
    sink: EventSink,
    policy: RetryPolicy = CHECK_RETRY,
) -> list[FileCheck]:
    """Check each file (with the layout the journal knows, if any); results in input order.

    ``CredentialsError`` and ``NetworkError`` from layout lookups abort the whole check; any
    other trouble with one object is that file's verdict.
    """
    sink(CheckStarted(files=len(items), size_bytes=sum(f.size_bytes for f, _ in items)))
    hash_slots = asyncio.Semaphore(max(1, jobs))
    # Files open at once: enough to keep every hashing slot busy while others wait on HEADs.
    file_slots = asyncio.Semaphore(max(2, 2 * jobs))
    results: list[FileCheck | None] = [None] * len(items)

    async def one(i: int, planned: PlannedFile, layout: Layout | None) -> None:
        try:
            result = await _check_one(store, planned, layout, hash_slots, sink, policy)
        finally:
            file_slots.release()
        results[i] = result
        sink(
            FileChecked(
                dataset=planned.dataset,
                key=planned.key,
                dest=planned.dest,
                size_bytes=planned.size_bytes,
                verdict=result.verdict.value,
                level=result.level,
                reason=result.reason,
            )
        )

    async with asyncio.TaskGroup() as tg:
        for i, (planned, layout) in enumerate(items):
            # Take the slot before creating the task, so pending work stays bounded.
            await file_slots.acquire()
            tg.create_task(one(i, planned, layout))
    return [r for r in results if r is not None]


async def _check_one(
    store: ObjectStore,
    f: PlannedFile,
    layout: Layout | None,
    hash_slots: asyncio.Semaphore,
    sink: EventSink,
    policy: RetryPolicy,
) -> FileCheck:
    try:
        fd = await asyncio.to_thread(os.open, f.dest, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return FileCheck(planned=f, verdict=Verdict.MISSING, reason="not on disk")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return FileCheck(
                planned=f, verdict=Verdict.FOREIGN, reason="a symbolic link, not a file of ours"
            )
        return FileCheck(
            planned=f, verdict=Verdict.UNCHECKED, reason=f"cannot read it: {exc.strerror or exc}"
        )
    try:
        return await _check_open(store, f, fd, layout, hash_slots, sink, policy)
    finally:
        os.close(fd)


def _shape(f: PlannedFile, st: os.stat_result) -> FileCheck | None:
    """A verdict from the ``fstat`` alone: not ours, or not the object's size."""
    if not stat.S_ISREG(st.st_mode):
        return FileCheck(
            planned=f, verdict=Verdict.BLOCKED, reason="not a regular file; move it away"
        )
    if st.st_nlink > 1:
        return FileCheck(
            planned=f,
            verdict=Verdict.FOREIGN,
            reason=f"a hard link ({st.st_nlink} names), not a file of ours alone",
        )
    if st.st_size != f.size_bytes:
        verdict = Verdict.TRUNCATED if st.st_size < f.size_bytes else Verdict.OVERSIZED
        return FileCheck(
            planned=f,
            verdict=verdict,
            reason=f"{st.st_size:,} bytes on disk, the object has {f.size_bytes:,}",
        )
    return None


async def _check_open(
    store: ObjectStore,
    f: PlannedFile,
    fd: int,
    layout: Layout | None,
    hash_slots: asyncio.Semaphore,
    sink: EventSink,
    policy: RetryPolicy,
) -> FileCheck:
    """Check the file open at ``fd`` (opened without following a link)."""
    st = os.fstat(fd)
    kind = etag_kind(f.etag)
    early = _shape(f, st)
    if early is not None:
        return early
    if kind is VerifyLevel.SIZE:
        return FileCheck(
            planned=f,
            verdict=Verdict.OK,
            level=VerifyLevel.SIZE.value,
            reason="the ETag is not an MD5, so only the size could be checked",
            st=st,
        )
    try:
        if kind is VerifyLevel.COMPOSITE and layout is None:
            layout = await learn_layout(
                store, f.bucket, f.key, etag=f.etag, size_bytes=f.size_bytes, run=retrying(policy)
            )
        if kind is VerifyLevel.COMPOSITE and layout is not None:
            if len(layout[0]) != multipart_count(f.etag):
                return FileCheck(
                    planned=f,
                    verdict=Verdict.OK,
                    level=VerifyLevel.SIZE.value,
                    reason="the server does not tell upload parts apart, so only the size "
                    "was checked",
                    st=st,
                    layout=layout,
                )
            got, layout = await _composite_checked(store, fd, f, layout, hash_slots, sink, policy)
        else:
            got = (await _hash(fd, f, 0, f.size_bytes, hash_slots, sink)).hex()
    except RemoteChangedError as exc:
        return FileCheck(planned=f, verdict=Verdict.CHANGED, reason=str(exc))
    except (ObjectNotFoundError, AccessDeniedError) as exc:
        return FileCheck(planned=f, verdict=Verdict.UNAVAILABLE, reason=str(exc))
    except TransferError as exc:
        return FileCheck(planned=f, verdict=Verdict.UNCHECKED, reason=str(exc))
    except OSError as exc:
        reason = f"cannot read it: {exc.strerror or exc}"
        return FileCheck(planned=f, verdict=Verdict.UNCHECKED, reason=reason)
    if got != f.etag:
        what = "composite MD5" if kind is VerifyLevel.COMPOSITE else "MD5"
        reason = f"{what} {got} != ETag {f.etag}"
        return FileCheck(planned=f, verdict=Verdict.CORRUPT, reason=reason, layout=layout)
    return FileCheck(planned=f, verdict=Verdict.OK, level=kind.value, layout=layout, st=st)


async def _composite_checked(
    store: ObjectStore,
    fd: int,
    f: PlannedFile,
    layout: Layout,
    hash_slots: asyncio.Semaphore,
    sink: EventSink,
    policy: RetryPolicy,
) -> tuple[str, Layout]:
    """The composite ETag of the bytes under ``layout``; a uniform guess that does not match
    is replaced by the exact layout (one HEAD per part) and tried again."""
    got = await _composite(fd, f, layout[0], hash_slots, sink)
    if got != f.etag and not layout[1]:
        # The uniform guess was wrong; the bytes may be fine. Learn the real layout.
        layout = await exact_layout(
            store, f.bucket, f.key, etag=f.etag, size_bytes=f.size_bytes, run=retrying(policy)
        )
        got = await _composite(fd, f, layout[0], hash_slots, sink)
    return got, layout


async def _hash(
    fd: int,
    f: PlannedFile,
    start: int,
    stop: int,
    slots: asyncio.Semaphore,
    sink: EventSink,
) -> bytes:
    async with slots:
        digest = await asyncio.to_thread(hash_range, fd, start, stop)
    sink(BytesHashed(dataset=f.dataset, key=f.key, count=stop - start))
    return digest


async def _composite(
    fd: int,
    f: PlannedFile,
    layout: tuple[int, ...],
    slots: asyncio.Semaphore,
    sink: EventSink,
) -> str:
    """The multipart ETag of the file's bytes under ``layout``; parts hashed in parallel."""
    digests = await asyncio.gather(
        *(_hash(fd, f, start, stop, slots, sink) for start, stop in part_bounds(layout))
    )
    return composite_etag(digests)


def record_checks(journal: Journal, output_directory: Path, checks: Sequence[FileCheck]) -> None:
    """Write what the checks proved into the journal (the caller commits).

    A good file is recorded complete at the level reached, with its layout and inode, so the
    next run trusts it without reading it again; a damaged one is recorded as such, so the
    next download fetches it again even though it has the right size.
    """
    for c in checks:
        f = c.planned
        rel = str(f.dest.relative_to(output_directory))
        if c.verdict is Verdict.OK and c.st is not None:
            journal.record_complete(
                dest=rel,
                version=f.version,
                verify_level=c.level,
                st=c.st,
                layout=c.layout[0] if c.layout else None,
                layout_exact=bool(c.layout and c.layout[1]),
            )
        elif c.verdict in (Verdict.CORRUPT, Verdict.TRUNCATED, Verdict.OVERSIZED):
            object_id = journal.begin(
                dest=rel,
                version=f.version,
                layout=c.layout[0] if c.layout else None,
                layout_exact=bool(c.layout and c.layout[1]),
                keep_ranges=False,
            )
            journal.mark_damaged(object_id)
