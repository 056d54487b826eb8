"""Group commits: sync written data, rename finished files, then commit the journal."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

from ..errors import DiskFullError
from ..files import PartFile, finalize_batch, part_path
from ..journal import Journal
from .state import Transfer

__all__ = ["Committer", "journal_failure", "sync_and_rename"]


class Committer:
    """Makes progress durable in groups: sync data, rename finished files, then commit.

    Range rows and completions are buffered here, not written to SQLite directly, so that a
    commit never includes a row whose bytes were written after the data sync it relies on.
    """

    def __init__(
        self,
        journal: Journal,
        root: Path,
        interval_s: float,
        on_complete: Callable[[Transfer, str], None],
    ) -> None:
        self.journal = journal
        self.root = root
        self.interval_s = interval_s
        # Called once a file is renamed and journaled, even if its task was cancelled since
        # (an interrupted run still counts every file it completed).
        self._on_complete = on_complete
        self._ranges: list[tuple[Transfer, PartFile | None, int, int, bytes | None]] = []
        self._finished: list[tuple[Transfer, str, asyncio.Future[int]]] = []
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        # Set when the journal could not be written: progress can no longer be recorded.
        self._failure: DiskFullError | None = None

    def add_range(self, obj: Transfer, start: int, stop: int, md5: bytes | None) -> None:
        """Buffer a range of ``obj``'s current part file; it is journaled at the next flush
        unless that part file has been discarded by then (the file restarted).

        Raises the journal's failure, if it has failed: fetching on without recording
        progress would only be lost (and refetched) at the next run.
        """
        if self._failure is not None:
            raise self._failure
        self._ranges.append((obj, obj.part, start, stop, md5))

    def finish(self, obj: Transfer, level: str, *, last: bool = False) -> asyncio.Future[int]:
        """Queue a verified, closed part file for its rename; resolves to its mtime.

        ``last``: nothing else is in flight, so waiting for the next tick would only add
        latency to the end of the run.
        """
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._finished.append((obj, level, fut))
        if last or len(self._finished) >= 256:
            self._wakeup.set()
        return fut

    async def run_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wakeup.wait()
            self._wakeup.clear()
            await self.flush()

    async def flush(self) -> None:
        """One group commit; never raises (a failed batch fails its files, not the run)."""
        async with self._lock:
            ranges, self._ranges = self._ranges, []
            finished, self._finished = self._finished, []
            if not ranges and not finished:
                return
            open_parts = {id(p): p for _, p, *_ in ranges if p is not None}
            renames = [(part_path(o.planned.dest), o.planned.dest) for o, _, _ in finished]
            try:
                errors = await asyncio.to_thread(
                    sync_and_rename, list(open_parts.values()), self.root, renames
                )
            except (OSError, DiskFullError) as exc:
                # The data sync failed: none of these rows may be committed. The ranges are
                # simply fetched again next time; the files fail with the reason.
                for _, _, fut in finished:
                    if not fut.done():
                        fut.set_exception(exc)
                return
            done: list[tuple[Transfer, str, asyncio.Future[int], int]] = []
            try:
                for obj, part, start, stop, md5 in ranges:
                    if obj.part is not part:
                        # A restart discarded these bytes; journaling the range would credit
                        # the object's next version (or attempt) with bytes it does not have.
                        continue
                    self.journal.add_range(obj.object_id, start, stop, md5)
                for (obj, level, fut), error in zip(finished, errors, strict=True):
                    try:
                        if error is not None:
                            raise error
                        st = obj.planned.dest.stat()
                    except OSError as exc:
                        if not fut.done():
                            fut.set_exception(exc)
                        continue
                    if obj.object_id:
                        self.journal.mark_complete(
                            obj.object_id,
                            verify_level=level,
                            file_size=st.st_size,
                            file_mtime_ns=st.st_mtime_ns,
                        )
                    else:  # a small file: its first row in the journal says it is complete
                        self.journal.record_complete(
                            dest=str(obj.planned.dest.relative_to(self.root)),
                            bucket=obj.planned.bucket,
                            key=obj.key,
                            etag=obj.etag,
                            size_bytes=obj.size_bytes,
                            verify_level=level,
                            file_mtime_ns=st.st_mtime_ns,
                        )
                    done.append((obj, level, fut, st.st_mtime_ns))
                self.journal.commit()
            except sqlite3.Error as exc:
                # SQLite may fail on any write, not only at commit (a full disk, when its
                # cache spills): either way nothing of this batch is journaled.
                with contextlib.suppress(sqlite3.Error):
                    self.journal.db.rollback()
                failure = self._failure = DiskFullError(journal_failure(self.journal.path, exc))
                for _, _, fut in finished:
                    if not fut.done():
                        fut.set_exception(failure)
                return
            for obj, level, fut, mtime in done:
                self._on_complete(obj, level)
                if not fut.done():
                    fut.set_result(mtime)


def journal_failure(path: Path, exc: sqlite3.Error) -> str:
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return (
            f"no space left on device writing the journal {path}; free some space and run "
            "the same command again to resume (nothing already downloaded is lost)"
        )
    return f"cannot write the journal {path}: {exc}"


def sync_and_rename(
    parts: list[PartFile], root: Path, renames: list[tuple[Path, Path]]
) -> list[OSError | None]:
    for part in parts:
        part.sync()
    return finalize_batch(root, renames)
