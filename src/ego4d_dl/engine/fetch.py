"""One file's bytes: its layout learnt, journaled ranges resumed, the rest fetched in pieces
that never cross an upload part (or one GET for a small object), then verified."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

from ..errors import most_relevant
from ..etags import Layout, VerifyLevel, composite_etag, etag_kind, multipart_count
from ..events import EventSink, FileStarted
from ..files import PartFile, write_small_part
from ..journal import Journal, RangeRecord
from ..layout import learn_layout
from ..ondisk import OnDisk, classify, snapshot
from ..planned import Action
from ..ranges import Piece, missing_ranges, part_bounds, plan_pieces
from .requests import Requests
from .state import EngineSettings, Transfer
from .verifier import Verifier

__all__ = ["Fetcher"]


class Fetcher:
    """Fetches and verifies files for one run (the engine schedules, restarts and renames)."""

    def __init__(
        self,
        *,
        journal: Journal,
        output_directory: Path,
        settings: EngineSettings,
        sink: EventSink,
        requests: Requests,
        verifier: Verifier,
        open_files: dict[int, Transfer],
        add_range: Callable[[Transfer, int, int, bytes | None], None],
    ) -> None:
        """``open_files``: the engine's record of transfers whose part is open (closed at
        shutdown, whatever happens); ``add_range``: where fetched ranges go (the committer
        journals them once their bytes are synced)."""
        self._journal = journal
        self._out = output_directory
        self._settings = settings
        self._sink = sink
        self._requests = requests
        self._verifier = verifier
        self._open = open_files
        self._add_range = add_range

    async def attempt(self, obj: Transfer) -> str:
        """One pass: learn the layout, resume what is journaled, fetch the rest, verify."""
        if self.is_small(obj):
            return await self.fetch_small(obj)
        planned = obj.planned
        rel = str(planned.dest.relative_to(self._out))
        entry = self._journal.get(rel)
        # The disk may have moved on since the plan was made: ask again, just before writing.
        found = classify(obj.version, entry, await asyncio.to_thread(snapshot, planned.dest))
        resume = found.verdict is OnDisk.RESUMABLE and entry is not None
        if resume and entry is not None and entry.layout is not None:
            obj.layout, obj.layout_exact = entry.layout, entry.layout_exact
        elif not obj.layout:
            obj.layout, obj.layout_exact = await self.learn_layout(obj)
        obj.object_id = self._journal.begin(
            dest=rel,
            version=obj.version,
            layout=obj.layout,
            layout_exact=obj.layout_exact,
            keep_ranges=resume,
        )
        done = self._journal.ranges(obj.object_id) if resume else []
        obj.part = await asyncio.to_thread(PartFile, planned.dest, obj.size_bytes, fresh=not done)
        self._open[id(obj)] = obj
        if not done:
            self._journal.set_part(obj.object_id, obj.part.ino)
        if done and self._verifier.verifying:
            done = await self._verifier.check_resumed(obj, done)
        present = sum(r.stop - r.start for r in done)
        self._sink(
            FileStarted(
                dataset=obj.dataset,
                key=obj.key,
                dest=planned.dest,
                size_bytes=obj.size_bytes,
                present_bytes=present,
            )
        )
        self.note_part_digests(obj, done)
        todo = missing_ranges(obj.size_bytes, [(r.start, r.stop) for r in done])
        pieces = plan_pieces(obj.layout, todo, self._settings.max_piece_bytes)
        try:
            async with asyncio.TaskGroup() as tg:
                for piece in pieces:
                    await self._requests.limiter.acquire()
                    task = tg.create_task(self.fetch_piece(obj, piece))
                    # The slot goes back when the task ends, however it ends: a task that the
                    # group cancels before its first step never runs its own ``finally``.
                    task.add_done_callback(self.release_limiter_slot)
        except BaseExceptionGroup as group:
            # Of a file's requests failing at once, the most serious decides its fate.
            raise most_relevant(group, cancelled_first=True) from None
        return await self._verifier.verify(obj)

    def note_part_digests(self, obj: Transfer, done: list[RangeRecord]) -> None:
        """Part MD5s that journaled whole-part ranges already give us."""
        bounds = part_bounds(obj.layout)
        starts = {b[0]: i for i, b in enumerate(bounds)}
        for r in done:
            index = starts.get(r.start)
            if r.md5 is not None and index is not None and bounds[index][1] == r.stop:
                obj.part_md5[index] = r.md5

    async def learn_layout(self, obj: Transfer) -> Layout:
        """The object's upload part sizes (exact, or a uniform guess checked at the end)."""
        if not self._verifier.verifying:
            return (obj.size_bytes,), True
        return await learn_layout(
            self._requests.store,
            obj.planned.bucket,
            obj.key,
            etag=obj.etag,
            size_bytes=obj.size_bytes,
            run=self._requests.limited_head,
        )

    async def fetch_piece(self, obj: Transfer, piece: Piece) -> None:
        """GET ``piece`` into the part file, resuming within it after transient failures.

        The caller took a limiter slot for us and releases it when this task is done.
        """
        part = obj.part
        assert part is not None
        md5 = hashlib.md5() if (piece.whole_part and self._verifier.verifying) else None

        loop = asyncio.get_running_loop()

        async def write(offset: int, chunks: list[bytes]) -> None:
            # ``run_in_executor``, not ``to_thread``: no context copy and partial per hop
            # (one per chunk); the write needs no context variable.
            await loop.run_in_executor(None, part.write_and_hash, offset, chunks, md5)

        await self._requests.receive(obj, piece.start, piece.stop, write)
        digest = md5.digest() if md5 is not None else None
        if digest is not None:
            obj.part_md5[piece.part] = digest
        self._add_range(obj, piece.start, piece.stop, digest)

    def release_limiter_slot(self, _: asyncio.Task[None]) -> None:
        self._requests.limiter.release()

    def is_small(self, obj: Transfer) -> bool:
        """Whether the object takes the one-request path (``fetch_small``)."""
        return (
            obj.planned.action is not Action.RESUME
            and obj.size_bytes <= self._settings.small_object_bytes
            and multipart_count(obj.etag) in (None, 1)
        )

    async def fetch_small(self, obj: Transfer) -> str:
        """A small object: one GET into memory, then one worker-thread hop that writes,
        hashes and closes its part file. No range rows: the journal learns of it once it is
        complete (an interrupted small file is simply fetched again)."""
        self._sink(
            FileStarted(
                dataset=obj.dataset,
                key=obj.key,
                dest=obj.planned.dest,
                size_bytes=obj.size_bytes,
                present_bytes=0,
            )
        )
        received: list[bytes] = []

        async def keep(offset: int, chunks: list[bytes]) -> None:
            received.extend(chunks)

        await self._requests.limiter.acquire()
        try:
            await self._requests.receive(obj, 0, obj.size_bytes, keep)
        finally:
            self._requests.limiter.release()
        kind = etag_kind(obj.etag) if self._verifier.verifying else VerifyLevel.SIZE
        obj.part, digest = await asyncio.to_thread(
            write_small_part, obj.planned.dest, received, hash_it=kind is not VerifyLevel.SIZE
        )
        self._open[id(obj)] = obj
        if kind is VerifyLevel.MD5:
            got = digest.hex()
        elif kind is VerifyLevel.COMPOSITE:
            got = composite_etag([digest])
        else:
            return (
                await self._verifier.verify_checksum(obj)
                if self._verifier.verifying
                else kind.value
            )
        if got != obj.etag:
            raise self._verifier.mismatch(obj, f"MD5 {got} != ETag {obj.etag}")
        return kind.value
