"""The transfer engine proper: concurrent ranged GETs into part files, verified, journaled, renamed.

One ``asyncio.TaskGroup`` per run. Two bounds keep work finite whatever the plan's size: a
limit on GET requests in flight (``limiter``: found from the measured rate, or the user's
``--concurrency N``; halved under throttling) and a semaphore over files open at once. Every
GET carries ``If-Match`` with the planned ETag, so bytes of two object versions are never
spliced. Bytes stream in bounded chunks to
``<dest>.part`` at their offsets, MD5ed on the way in a worker thread; a file is renamed to
its final name only after its ETag (plain or multipart composite) checks out, and only after
its data is durable. Progress is reported only through ``EventSink``; the engine never prints.
Imports ``store``, ``journal``, ``files``, ``integrity``, ``limiter``, ``retry``, ``plan``,
``events`` and ``errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ..errors import (
    AccessDeniedError,
    CredentialsError,
    DiskFullError,
    IntegrityError,
    NetworkError,
    ObjectNotFoundError,
    RemoteChangedError,
    RetriesExhaustedError,
    TransferError,
    TransientError,
    leaves,
)
from ..etags import Layout, VerifyLevel, composite_etag, etag_kind, multipart_count
from ..events import (
    BytesReceived,
    EventSink,
    FileFailed,
    FileOutcome,
    FileRestarted,
    FileSkipped,
    FileStarted,
    FileStatus,
    FileVerified,
    IntegrityFailed,
    RangeRetried,
    RunFinished,
    RunStarted,
    RunSummary,
    StopKind,
)
from ..files import PartChangedError, PartFile, write_small_part
from ..journal import Journal, RangeRecord
from ..layout import exact_layout, learn_layout
from ..limiter import make_limiter
from ..ondisk import OnDisk, classify, snapshot
from ..planned import Action, PlannedFile
from ..ranges import Piece, missing_ranges, part_bounds, plan_pieces
from ..store import ObjectHead, ObjectStore, RangeBody
from .checksums import checksum_fd
from .committer import Committer
from .state import EngineSettings, RunStopped, Transfer

__all__ = ["Engine"]

T = TypeVar("T")

MiB = 1024 * 1024


class Engine:
    """Runs the transfers of a plan; one instance per run."""

    def __init__(
        self,
        *,
        store: ObjectStore,
        journal: Journal,
        output_directory: Path,
        settings: EngineSettings,
        sink: EventSink,
        reload_credentials: Callable[[], Awaitable[bool]] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        throttle: Callable[[int], Awaitable[object]] | None = None,
    ) -> None:
        """``throttle(n)``, if given, is awaited before each chunk of ``n`` bytes is read: the
        shared ``--max-bandwidth`` token bucket."""
        self._store = store
        self._throttle = throttle
        self._journal = journal
        self._out = output_directory
        self._settings = settings
        self._sink = sink
        self._reload_credentials = reload_credentials
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._limiter = make_limiter(
            settings.concurrency, settings.max_concurrency, clock=clock, on_change=sink
        )
        self._file_slots = asyncio.Semaphore(settings.max_open_files)
        self._committer = Committer(
            journal,
            output_directory,
            settings.commit_interval_s,
            self._completed,
            max_held=settings.max_finished_parts,
        )
        self._credentials_lock = asyncio.Lock()
        self._credentials_generation = 0
        self._open: dict[int, Transfer] = {}
        self._scheduler: asyncio.Task[None] | None = None
        self._stopping = False
        # Files between their start and their verification, and whether more will come.
        self._transferring = 0
        self._all_scheduled = False
        # Counters for the summary.
        self._bytes_fetched = 0
        self._retries = 0
        self._restarts = 0
        self._verified = 0
        self._levels: dict[str, int] = {}
        self._problems: list[FileOutcome] = []
        self._skipped = 0

    @property
    def verifying(self) -> bool:
        """Whether ETags are checked (``--verify etag``) or only sizes."""
        return self._settings.verify == "etag"

    # --- the run ---------------------------------------------------------------------------

    async def run(self, files: Sequence[PlannedFile]) -> RunSummary:
        """Transfer every file whose action moves bytes; count and report all the others."""
        started = self._clock()
        todo = [f for f in files if f.action.transfers]
        total_size = sum(f.size_bytes for f in files)
        self._sink(
            RunStarted(
                files=len(files),
                size_bytes=total_size,
                present_bytes=sum(f.present_bytes for f in todo),
                fetch_bytes=sum(f.bytes_to_fetch for f in todo),
                skipped_files=sum(f.action in (Action.SKIP, Action.ADOPT) for f in files),
                concurrency=self._settings.concurrency,
            )
        )
        for f in files:
            # ADOPT files were adopted (and became SKIP) before the run; any left are taken
            # as the plan says, never fetched behind the user's back.
            if f.action in (Action.SKIP, Action.ADOPT):
                self._skipped += 1
                self._sink(
                    FileSkipped(
                        dataset=f.dataset,
                        key=f.key,
                        dest=f.dest,
                        size_bytes=f.size_bytes,
                        reason=f.note,
                    )
                )
            elif f.action.is_problem:
                self._fail(f, FileStatus(f.action.value), f.note)

        stop: RunStopped | None = None
        interrupted = False
        committer = asyncio.create_task(self._committer.run_forever())
        self._scheduler = asyncio.create_task(self._schedule(todo))
        try:
            await self._scheduler
        except RunStopped as exc:
            stop = exc
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self._stopping or (current is not None and current.cancelling()):
                raise  # cancelled from outside: not ours to swallow
            interrupted = True
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            await asyncio.shield(self._shutdown())
        if interrupted:
            stop = RunStopped(StopKind.INTERRUPTED, InterruptedError("interrupted"))
        return self._summary(files, started, stop, total_size)

    def stop(self) -> None:
        """Stop scheduling and cancel requests in flight; ``run`` then returns a summary
        with ``stop_kind == "interrupted"`` after flushing the journal."""
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.cancel()

    async def _schedule(self, todo: Sequence[PlannedFile]) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for f in todo:
                    # Take the slot before creating the task, so pending work stays bounded.
                    await self._file_slots.acquire()
                    tg.create_task(self._transfer(f))
                self._all_scheduled = True
        except BaseExceptionGroup as group:
            raise _first_stop(group) from None

    async def _shutdown(self) -> None:
        """Flush the journal and close every part file, whatever happened."""
        try:
            await self._committer.flush()
        finally:
            self._committer.close()
            for obj in list(self._open.values()):
                if obj.part is not None:
                    obj.part.close()
            self._open.clear()

    def _summary(
        self, files: Sequence[PlannedFile], started: float, stop: RunStopped | None, total: int
    ) -> RunSummary:
        by_status = dict.fromkeys(FileStatus, 0)
        for p in self._problems:
            by_status[p.status] += 1
        summary = RunSummary(
            files=len(files),
            verified=self._verified,
            skipped=self._skipped,
            failed=by_status[FileStatus.FAILED],
            missing=by_status[FileStatus.MISSING],
            denied=by_status[FileStatus.DENIED],
            bytes_fetched=self._bytes_fetched,
            size_bytes=total,
            elapsed_s=self._clock() - started,
            retries=self._retries,
            restarts=self._restarts,
            levels=dict(self._levels),
            problems=tuple(self._problems),
            stopped_by=str(stop.error) if stop else None,
            stop_kind=stop.kind if stop else None,
        )
        self._sink(RunFinished(summary=summary))
        return summary

    def _fail(self, f: PlannedFile, status: FileStatus, reason: str) -> None:
        self._problems.append(
            FileOutcome(
                dataset=f.dataset, uid=f.uid, key=f.key, dest=f.dest, status=status, reason=reason
            )
        )
        self._sink(
            FileFailed(dataset=f.dataset, key=f.key, dest=f.dest, status=status, reason=reason)
        )

    # --- one file --------------------------------------------------------------------------

    async def _transfer(self, planned: PlannedFile) -> None:
        """Fetch, verify and queue the rename of one file; its failures stay its own.

        The caller took a file slot for us; it is released as soon as the file is verified,
        before the (batched) rename, so renames never hold up other files. The part stays
        open and locked in the committer's keeping until it is renamed (the committer bounds
        how many it keeps).
        """
        obj = Transfer(planned=planned, etag=planned.etag, size_bytes=planned.size_bytes)
        holding_slot = True
        self._transferring += 1
        try:
            level = await self._fetch_and_verify(obj)
            await self._committer.make_room()
            self._open.pop(id(obj), None)
            self._file_slots.release()
            holding_slot = False
            self._transferring -= 1
            await self._finish(obj, level, last=self._all_scheduled and self._transferring == 0)
        except CredentialsError as exc:
            raise RunStopped(StopKind.CREDENTIALS, exc) from exc
        except DiskFullError as exc:
            raise RunStopped(StopKind.DISK, exc) from exc
        except NetworkError as exc:
            raise RunStopped(StopKind.NETWORK, exc) from exc
        except ObjectNotFoundError as exc:
            self._fail(planned, FileStatus.MISSING, str(exc))
        except AccessDeniedError as exc:
            self._fail(planned, FileStatus.DENIED, str(exc))
        except TransferError as exc:
            self._fail(planned, FileStatus.FAILED, str(exc))
        except OSError as exc:
            self._fail(planned, FileStatus.FAILED, f"{planned.dest}: {exc.strerror or exc}")
        finally:
            self._close(obj)
            if holding_slot:
                self._file_slots.release()
                self._transferring -= 1

    def _completed(self, obj: Transfer, level: str) -> None:
        """A file is verified, renamed and journaled."""
        self._verified += 1
        self._levels[level] = self._levels.get(level, 0) + 1
        self._sink(
            FileVerified(
                dataset=obj.dataset,
                key=obj.key,
                dest=obj.planned.dest,
                size_bytes=obj.size_bytes,
                level=level,
                fetched_bytes=obj.fetched_bytes,
            )
        )

    def _close(self, obj: Transfer) -> None:
        if obj.part is not None:
            obj.part.close()
        self._open.pop(id(obj), None)

    async def _fetch_and_verify(self, obj: Transfer) -> str:
        """Attempts of one file, restarted when it changed remotely or failed verification."""
        restarts = 0
        while True:
            try:
                return await self._attempt(obj)
            except (RemoteChangedError, IntegrityError) as exc:
                restarts += 1
                if restarts > self._settings.max_restarts:
                    if isinstance(exc, IntegrityError):
                        # These bytes are proven wrong: the next run must not resume them.
                        await self._discard(obj)
                    raise TransferError(
                        obj.key, f"{exc} (gave up after {restarts - 1} restarts)"
                    ) from exc
                await self._restart(obj, exc)

    async def _restart(self, obj: Transfer, exc: Exception) -> None:
        """Start the file over, against the object's current version when it changed."""
        self._restarts += 1
        old_etag = obj.etag
        if isinstance(exc, RemoteChangedError):
            head = await self._call(lambda: self._store.head(obj.planned.bucket, obj.key))
            obj.etag, obj.size_bytes = head.etag, head.size_bytes
            self._sink(
                FileRestarted(
                    dataset=obj.dataset,
                    key=obj.key,
                    old_etag=old_etag,
                    new_etag=obj.etag,
                    discarded_bytes=obj.fetched_bytes,
                )
            )
        await self._discard(obj)
        if isinstance(exc, RemoteChangedError):
            obj.layout = ()  # a new version may have been uploaded with other parts

    async def _discard(self, obj: Transfer) -> None:
        """Forget every byte of the file: its part file, its journaled and pending ranges."""
        if obj.part is not None:
            part = obj.part
            obj.part = None  # the committer skips ranges buffered for a discarded part file
            await asyncio.to_thread(part.discard)
        if obj.object_id:
            self._journal.drop_ranges(obj.object_id)
        obj.part_md5.clear()

    async def _attempt(self, obj: Transfer) -> str:
        """One pass: learn the layout, resume what is journaled, fetch the rest, verify."""
        if self._is_small(obj):
            return await self._fetch_small(obj)
        planned = obj.planned
        rel = str(planned.dest.relative_to(self._out))
        entry = self._journal.get(rel)
        # The disk may have moved on since the plan was made: ask again, just before writing.
        found = classify(obj.version, entry, await asyncio.to_thread(snapshot, planned.dest))
        resume = found.verdict is OnDisk.RESUMABLE and entry is not None
        if resume and entry is not None and entry.layout is not None:
            obj.layout, obj.layout_exact = entry.layout, entry.layout_exact
        elif not obj.layout:
            obj.layout, obj.layout_exact = await self._learn_layout(obj)
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
        if done and self.verifying:
            done = await self._check_resumed(obj, done)
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
        self._note_part_digests(obj, done)
        todo = missing_ranges(obj.size_bytes, [(r.start, r.stop) for r in done])
        pieces = plan_pieces(obj.layout, todo, self._settings.max_piece_bytes)
        try:
            async with asyncio.TaskGroup() as tg:
                for piece in pieces:
                    await self._limiter.acquire()
                    task = tg.create_task(self._fetch_piece(obj, piece))
                    # The slot goes back when the task ends, however it ends: a task that the
                    # group cancels before its first step never runs its own ``finally``.
                    task.add_done_callback(self._release_limiter_slot)
        except BaseExceptionGroup as group:
            raise _most_serious(group) from None
        return await self._verify(obj)

    async def _finish(self, obj: Transfer, level: str, *, last: bool) -> None:
        """Hand the verified part to the committer; if its name no longer holds the inode we
        wrote (replaced, or given another name: the committer checks just before the
        rename), what is at the path now is read back from disk and must prove itself.

        "Verified" is then a statement about the bytes at the path, not those received: the
        name holding our inode, with one name, under our lock for its whole life, proves it.
        """
        try:
            await self._committer.finish(obj, level, last=last)
            return
        except PartChangedError as exc:
            reason = f"{exc.strerror or exc}; reading it back from disk"
        self._sink(
            IntegrityFailed(dataset=obj.dataset, key=obj.key, reason=reason, refetch_bytes=0)
        )
        await self._file_slots.acquire()
        try:
            obj.part = await asyncio.to_thread(
                PartFile, obj.planned.dest, obj.size_bytes, fresh=False, reserve=False
            )
            self._open[id(obj)] = obj
            obj.part_md5.clear()
            try:
                level = await self._verify(obj)
            except IntegrityError as bad:
                await self._restart(obj, bad)
                level = await self._fetch_and_verify(obj)
            await self._committer.make_room()
            self._open.pop(id(obj), None)
        finally:
            self._file_slots.release()
        await self._committer.finish(obj, level, last=last)

    def _note_part_digests(self, obj: Transfer, done: list[RangeRecord]) -> None:
        """Part MD5s that journaled whole-part ranges already give us."""
        bounds = part_bounds(obj.layout)
        starts = {b[0]: i for i, b in enumerate(bounds)}
        for r in done:
            index = starts.get(r.start)
            if r.md5 is not None and index is not None and bounds[index][1] == r.stop:
                obj.part_md5[index] = r.md5

    async def _check_resumed(self, obj: Transfer, done: list[RangeRecord]) -> list[RangeRecord]:
        """Re-hash journaled ranges from disk; forget any whose bytes changed since."""
        part = obj.part
        assert part is not None
        checkable = [r for r in done if r.md5 is not None]
        digests = await asyncio.gather(
            *(asyncio.to_thread(part.hash, r.start, r.stop) for r in checkable)
        )
        bad = [r for r, d in zip(checkable, digests, strict=True) if d != r.md5]
        if not bad:
            return done
        self._journal.drop_ranges(obj.object_id, [r.start for r in bad])
        self._sink(
            IntegrityFailed(
                dataset=obj.dataset,
                key=obj.key,
                reason=f"{len(bad)} resumed ranges changed on disk since they were fetched",
                refetch_bytes=sum(r.stop - r.start for r in bad),
            )
        )
        bad_starts = {r.start for r in bad}
        return [r for r in done if r.start not in bad_starts]

    async def _learn_layout(self, obj: Transfer) -> Layout:
        """The object's upload part sizes (exact, or a uniform guess checked at the end)."""
        if not self.verifying:
            return (obj.size_bytes,), True
        return await learn_layout(
            self._store,
            obj.planned.bucket,
            obj.key,
            etag=obj.etag,
            size_bytes=obj.size_bytes,
            run=self._limited_head,
        )

    async def _limited_head(self, make: Callable[[], Awaitable[ObjectHead]]) -> ObjectHead:
        """A layout HEAD: one request slot, the run's retries and credentials renewal."""
        await self._limiter.acquire()
        try:
            return await self._call(make)
        finally:
            self._limiter.release()

    # --- one ranged GET --------------------------------------------------------------------

    async def _fetch_piece(self, obj: Transfer, piece: Piece) -> None:
        """GET ``piece`` into the part file, resuming within it after transient failures.

        The caller took a limiter slot for us and releases it when this task is done.
        """
        part = obj.part
        assert part is not None
        md5 = hashlib.md5() if (piece.whole_part and self.verifying) else None

        async def write(offset: int, chunks: list[bytes]) -> None:
            await asyncio.to_thread(part.write_and_hash, offset, chunks, md5)

        await self._receive(obj, piece.start, piece.stop, write)
        digest = md5.digest() if md5 is not None else None
        if digest is not None:
            obj.part_md5[piece.part] = digest
        self._committer.add_range(obj, piece.start, piece.stop, digest)

    def _release_limiter_slot(self, _: asyncio.Task[None]) -> None:
        self._limiter.release()

    async def _receive(
        self,
        obj: Transfer,
        start: int,
        stop: int,
        consume: Callable[[int, list[bytes]], Awaitable[None]],
    ) -> None:
        """Stream bytes ``[start, stop)`` of the object to ``consume(offset, chunks)`` in order,
        retrying transient failures from the first byte not yet consumed."""
        offset = start
        failures = 0
        while offset < stop:
            keys = self._credentials_generation
            sent = self._clock()
            try:
                async with self._store.get_range(
                    obj.planned.bucket,
                    obj.key,
                    start=offset,
                    stop=stop,
                    size_bytes=obj.size_bytes,
                    etag=obj.etag,
                ) as body:
                    self._limiter.on_first_byte(self._clock() - sent)
                    while offset < stop:
                        chunks, size = await self._read_chunks(body, stop - offset)
                        await consume(offset, chunks)
                        offset += size
                        obj.fetched_bytes += size
                        self._bytes_fetched += size
                        self._limiter.on_bytes(size)
                        self._sink(BytesReceived(dataset=obj.dataset, key=obj.key, count=size))
                self._limiter.on_success()
            except (TransientError, NetworkError) as exc:
                failures += 1
                await self._backoff(obj, start, stop, offset, failures, exc)
            except CredentialsError:
                if not await self._credentials_renewed(keys):
                    raise

    def _is_small(self, obj: Transfer) -> bool:
        """Whether the object takes the one-request path (``_fetch_small``)."""
        return (
            obj.planned.action is not Action.RESUME
            and obj.size_bytes <= self._settings.small_object_bytes
            and multipart_count(obj.etag) in (None, 1)
        )

    async def _fetch_small(self, obj: Transfer) -> str:
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

        await self._limiter.acquire()
        try:
            await self._receive(obj, 0, obj.size_bytes, keep)
        finally:
            self._limiter.release()
        kind = etag_kind(obj.etag) if self.verifying else VerifyLevel.SIZE
        obj.part, digest = await asyncio.to_thread(
            write_small_part, obj.planned.dest, received, hash_it=kind is not VerifyLevel.SIZE
        )
        self._open[id(obj)] = obj
        if kind is VerifyLevel.MD5:
            got = digest.hex()
        elif kind is VerifyLevel.COMPOSITE:
            got = composite_etag([digest])
        else:
            return await self._verify_checksum(obj) if self.verifying else kind.value
        if got != obj.etag:
            raise self._mismatch(obj, f"MD5 {got} != ETag {obj.etag}")
        return kind.value

    async def _read_chunks(self, body: RangeBody, remaining: int) -> tuple[list[bytes], int]:
        """At least ``chunk_bytes`` (fewer only at the end) as received, and their length.

        Few, large hops to the writer thread; the pieces are written with one ``pwritev``
        rather than joined, because joining 1 MiB costs a fresh mmap, its page faults and a
        copy (measured: see BENCHMARKS.md). Under ``--max-bandwidth`` exactly the paced
        amount is read instead: a buffer may then be split (a copy, cheap at a capped rate),
        but no read runs ahead of the bucket by up to a socket read (1 MiB) per request.
        """
        want = min(self._settings.chunk_bytes, remaining)
        paced = self._throttle is not None
        if self._throttle is not None:
            await self._throttle(want)
        chunks: list[bytes] = []
        got = 0
        while got < want:
            data = await body.read((want if paced else remaining) - got)
            chunks.append(data)
            got += len(data)
        return chunks, got

    async def _backoff(
        self,
        obj: Transfer,
        start: int,
        stop: int,
        offset: int,
        failures: int,
        exc: TransientError | NetworkError,
    ) -> None:
        if self._settings.retry.gives_up(failures):
            if isinstance(exc, NetworkError):
                raise exc  # the endpoint stayed unreachable: stop the run, resume later
            raise RetriesExhaustedError(
                obj.key, f"{exc} (gave up after {failures} attempts)"
            ) from exc
        throttled = isinstance(exc, TransientError) and exc.throttled
        if throttled:
            self._limiter.on_throttle()
        delay = self._settings.retry.delay_s(failures, self._rng)
        self._retries += 1
        self._sink(
            RangeRetried(
                dataset=obj.dataset,
                key=obj.key,
                start=offset,
                stop=stop,
                attempt=failures,
                delay_s=delay,
                reason=str(exc),
                throttled=throttled,
                stalled=isinstance(exc, TransientError) and exc.stalled,
            )
        )
        await self._sleep(delay)

    async def _credentials_renewed(self, generation: int) -> bool:
        """After a credentials error of a request sent with the keys of ``generation``:
        re-read the keys once for all requests that hit it.

        A request sent before another one's reload was signed with the old keys: it is
        retried with the new ones, not taken as a sign that the new ones fail too.
        """
        if self._reload_credentials is None:
            return False
        async with self._credentials_lock:
            if generation != self._credentials_generation:
                return True  # another request already reloaded them
            if await self._reload_credentials():
                self._credentials_generation += 1
                return True
            return False

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        """A metadata request with the run's retry policy (HEADs for layouts and restarts)."""
        failures = 0
        while True:
            keys = self._credentials_generation
            try:
                return await make()
            except (TransientError, NetworkError) as exc:
                failures += 1
                if self._settings.retry.gives_up(failures):
                    if isinstance(exc, NetworkError):
                        raise
                    raise RetriesExhaustedError(exc.key, str(exc)) from exc
                self._retries += 1
                await self._sleep(self._settings.retry.delay_s(failures, self._rng))
            except CredentialsError:
                if not await self._credentials_renewed(keys):
                    raise

    # --- verification ----------------------------------------------------------------------

    async def _verify(self, obj: Transfer) -> str:
        """Check the assembled part file against the ETag; return the level reached."""
        part = obj.part
        assert part is not None
        st_size = await asyncio.to_thread(part.size_on_disk)
        if st_size != obj.size_bytes:
            raise IntegrityError(
                obj.key, f"{obj.key}: part file has {st_size} bytes, not {obj.size_bytes}"
            )
        kind = etag_kind(obj.etag) if self.verifying else VerifyLevel.SIZE
        if kind is VerifyLevel.MD5:
            digest = obj.part_md5.get(0) if len(obj.layout) == 1 else None
            if digest is None:
                digest = await asyncio.to_thread(part.hash, 0, obj.size_bytes)
            if digest.hex() != obj.etag:
                raise self._mismatch(obj, f"MD5 {digest.hex()} != ETag {obj.etag}")
            return kind.value
        if kind is VerifyLevel.COMPOSITE and len(obj.layout) != multipart_count(obj.etag):
            # No part layout to recompute the ETag from: fall back to checksums, else size.
            return await self._verify_checksum(obj)
        if kind is VerifyLevel.COMPOSITE:
            got = await self._composite(obj)
            if got != obj.etag and not obj.layout_exact:
                # The uniform guess was wrong; the bytes may be fine. Learn the real layout.
                obj.layout, obj.layout_exact = await exact_layout(
                    self._store,
                    obj.planned.bucket,
                    obj.key,
                    etag=obj.etag,
                    size_bytes=obj.size_bytes,
                    run=self._limited_head,
                )
                obj.part_md5.clear()
                self._journal.set_layout(obj.object_id, obj.layout, exact=True)
                got = await self._composite(obj)
            if got != obj.etag:
                raise self._mismatch(obj, f"composite MD5 {got} != ETag {obj.etag}")
            return kind.value
        if self.verifying:
            return await self._verify_checksum(obj)
        return VerifyLevel.SIZE.value

    async def _composite(self, obj: Transfer) -> str:
        part = obj.part
        assert part is not None
        bounds = part_bounds(obj.layout)

        async def digest(i: int) -> bytes:
            known = obj.part_md5.get(i)
            if known is not None:
                return known
            return await asyncio.to_thread(part.hash, *bounds[i])

        digests = await asyncio.gather(*(digest(i) for i in range(len(bounds))))
        return composite_etag(digests)

    async def _verify_checksum(self, obj: Transfer) -> str:
        """ETag not MD5-derived: use a full-object x-amz-checksum if the server has one."""
        part = obj.part
        assert part is not None
        head = await self._call(
            lambda: self._store.head(obj.planned.bucket, obj.key, checksums=True)
        )
        for name, value in head.checksums.items():
            if "-" in value:
                continue  # a composite checksum of parts: not checkable without the layout
            local = await asyncio.to_thread(
                part.read_with, functools.partial(checksum_fd, name=name)
            )
            if local is None:
                continue
            if local != value:
                raise self._mismatch(obj, f"{name} {local} != {value}")
            return VerifyLevel.CHECKSUM.value
        return VerifyLevel.SIZE.value

    def _mismatch(self, obj: Transfer, reason: str) -> IntegrityError:
        self._sink(
            IntegrityFailed(
                dataset=obj.dataset, key=obj.key, reason=reason, refetch_bytes=obj.size_bytes
            )
        )
        return IntegrityError(obj.key, f"{obj.key}: {reason}")


# When several ranges of one file fail at once, the error that concerns most decides.
_SERIOUSNESS: tuple[type[BaseException], ...] = (
    asyncio.CancelledError,
    CredentialsError,
    DiskFullError,
    NetworkError,
    RemoteChangedError,
    ObjectNotFoundError,
    AccessDeniedError,
    IntegrityError,
    TransferError,
    OSError,
)


def _most_serious(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The leaf exception that should decide what happens to the file (bugs come first)."""

    def rank(exc: BaseException) -> int:
        for i, kind in enumerate(_SERIOUSNESS):
            if isinstance(exc, kind):
                return i + 1
        return 0  # not one of ours: a bug, which must surface

    return min(leaves(group), key=rank)


def _first_stop(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The reason to stop the run: a bug first, then credentials, disk, network."""
    order = {"credentials": 1, "disk": 2, "network": 3}

    def rank(exc: BaseException) -> int:
        if isinstance(exc, RunStopped):
            return order.get(exc.kind, 9)
        return 10 if isinstance(exc, asyncio.CancelledError) else 0

    return min(leaves(group), key=rank)
