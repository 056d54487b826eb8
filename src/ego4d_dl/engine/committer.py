"""Group commits: sync written data, rename finished files, then commit the journal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import DiskFullError
from ..files import PartChangedError, PartFile, finalize_batch, make_durable
from ..journal import Journal
from .state import Transfer

__all__ = ["Committer", "journal_failure", "sync_and_finalize"]

_Range = tuple[Transfer, PartFile, int, int, bytes | None]
_Finished = tuple[Transfer, PartFile, str, "asyncio.Future[int]"]


class Committer:
    """Makes progress durable in groups: sync data, rename finished files, then commit.

    Range rows and completions are buffered here, not written to SQLite directly, so that a
    commit never includes a row whose bytes were not synced first. A finished file's part
    comes into the committer's keeping with ``finish``: it stays open and locked until its
    rename is journaled, then the committer closes it.
    """

    def __init__(
        self,
        journal: Journal,
        root: Path,
        interval_s: float,
        on_complete: Callable[[Transfer, str], None],
        *,
        wake_at: int | None = None,
        max_held: int = 256,
    ) -> None:
        """``wake_at``: this many finished files waiting wake the committer before its tick
        (default: half of ``max_held``); ``max_held``: at most this many finished parts (open
        files) wait for their rename.

        Waking at half leaves the other half to fill while a group is synced and renamed:
        woken only when all ``max_held`` wait, every transfer stalls for the whole commit
        (measured on 2,000 small files: 0.1-0.27 s per group of 256, ten times a run).
        """
        self.journal = journal
        self._wake_at = wake_at if wake_at is not None else max(1, max_held // 2)
        self._room = asyncio.Semaphore(max_held)
        self.root = root
        self._root_prefix = str(root).rstrip("/") + "/"  # what str() of a file of ours starts with
        self.interval_s = interval_s
        # Called once a file is renamed and journaled, even if its task was cancelled since
        # (an interrupted run still counts every file it completed).
        self._on_complete = on_complete
        self._ranges: list[_Range] = []
        self._finished: list[_Finished] = []
        self._held: dict[int, PartFile] = {}  # parts in our keeping, by id
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        # Set when the journal could not be written: progress can no longer be recorded.
        self._failure: DiskFullError | None = None

    def add_range(self, obj: Transfer, start: int, stop: int, md5: bytes | None) -> None:
        """Buffer a range of ``obj``'s current part file; it is journaled at the next flush
        once its bytes are synced, unless that part file has been discarded by then (the file
        restarted).

        Raises the journal's failure, if it has failed: fetching on without recording
        progress would only be lost (and refetched) at the next run.
        """
        if self._failure is not None:
            raise self._failure
        assert obj.part is not None
        self._ranges.append((obj, obj.part, start, stop, md5))

    async def make_room(self) -> None:
        """Wait until fewer than ``max_held`` finished parts are in our keeping; the caller
        then hands one over with ``finish`` (each is an open file: they stay bounded)."""
        await self._room.acquire()

    async def finish(self, obj: Transfer, level: str, *, last: bool = False) -> int:
        """Take ``obj``'s verified part (``make_room`` first) and rename it at the next flush;
        return the final file's mtime once it is renamed and journaled.

        ``last``: nothing else is being transferred, so waiting for the next tick would only
        add latency to the end of the run.
        """
        part = obj.part
        assert part is not None
        obj.part = None
        self._held[id(part)] = part
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._finished.append((obj, part, level, fut))
        if last or len(self._finished) >= self._wake_at:
            self._wakeup.set()
        return await fut

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
            try:
                await self._commit(ranges, finished)
            finally:
                for _, part, _, _ in finished:
                    self._release(part)

    async def _commit(self, ranges: list[_Range], finished: list[_Finished]) -> None:
        parts = list({id(p): p for _, p, *_ in ranges if not p.discarded}.values())
        items = [(part, obj.planned.dest) for obj, part, _, _ in finished]
        try:
            synced, results = await asyncio.to_thread(sync_and_finalize, parts, items)
        except (OSError, DiskFullError) as exc:
            # The data sync failed: none of these rows may be committed. The ranges are
            # simply fetched again next time; the files fail with the reason.
            _fail_all(finished, exc)
            return
        done: list[tuple[Transfer, str, asyncio.Future[int], int]] = []
        try:
            for obj, part, start, stop, md5 in ranges:
                # A discarded part's bytes are gone: journaling the range would credit the
                # object's next attempt with bytes it does not have; an unsynced one's may be.
                if not part.discarded and id(part) in synced:
                    self.journal.add_range(obj.object_id, start, stop, md5)
            for (obj, _, level, fut), result in zip(finished, results, strict=True):
                if isinstance(result, OSError):
                    if not fut.done():
                        fut.set_exception(result)
                    continue
                self._record(obj, level, result)
                done.append((obj, level, fut, result.st_mtime_ns))
            self.journal.commit()
        except sqlite3.Error as exc:
            # SQLite may fail on any write, not only at commit (a full disk, when its
            # cache spills): either way nothing of this batch is journaled.
            with contextlib.suppress(sqlite3.Error):
                self.journal.db.rollback()
            failure = self._failure = DiskFullError(journal_failure(self.journal.path, exc))
            _fail_all(finished, failure)
            return
        for obj, level, fut, mtime in done:
            self._on_complete(obj, level)
            if not fut.done():
                fut.set_result(mtime)

    def _record(self, obj: Transfer, level: str, st: os.stat_result) -> None:
        if obj.object_id:
            self.journal.mark_complete(obj.object_id, verify_level=level, st=st)
        else:  # a small file: its first row in the journal says it is complete
            self.journal.record_complete(
                dest=self._rel(obj.planned.dest),
                version=obj.version,
                verify_level=level,
                st=st,
            )

    def _rel(self, dest: Path) -> str:
        """``dest`` relative to the output folder, as the journal keys it (by slicing the
        string when it starts with the folder's: ``Path.relative_to`` costs ~20 us a file)."""
        text = str(dest)
        if text.startswith(self._root_prefix):
            return text[len(self._root_prefix) :]
        return str(dest.relative_to(self.root))

    def _release(self, part: PartFile) -> None:
        if self._held.pop(id(part), None) is not None:
            self._room.release()
        part.close()

    def close(self) -> None:
        """Close every part still in our keeping (a run torn down mid-flush)."""
        for part in list(self._held.values()):
            self._release(part)


def _fail_all(finished: Sequence[_Finished], exc: BaseException) -> None:
    for _, _, _, fut in finished:
        if not fut.done():
            fut.set_exception(exc)


def journal_failure(path: Path, exc: sqlite3.Error) -> str:
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return (
            f"no space left on device writing the journal {path}; free some space and run "
            "the same command again to resume (nothing already downloaded is lost)"
        )
    return f"cannot write the journal {path}: {exc}"


def sync_and_finalize(
    parts: Sequence[PartFile], items: Sequence[tuple[PartFile, Path]]
) -> tuple[set[int], list[os.stat_result | OSError]]:
    """Make the parts whose ranges are to be journaled and the finished ones durable, all in
    one pass (a finished part is synced once, not once for its ranges and again before its
    rename; a batch of many is one ``syncfs``), then move the finished ones into place. The
    ids of the parts whose data is durable, and ``files.finalize_batch``'s results."""
    durable = make_durable(parts, finished=[part for part, _ in items])
    for part in parts:
        problem = durable[id(part)]
        if problem is not None and not isinstance(problem, PartChangedError):
            # The disk failed a sync: nothing of this batch may be journaled or renamed.
            raise problem
    synced = {key for key, problem in durable.items() if problem is None}
    return synced, finalize_batch(items, durable=durable)
