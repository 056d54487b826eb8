"""``download --processes N``: one plan, one question and one claim here; N worker processes
(``worker``) over its disjoint parts; their events into one display; one summary."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol

from .adopt import Adoption
from .config import Options
from .downloading import (
    DownloadResult,
    adopt_into,
    check_free_space,
    finish_download,
    plan_readonly,
    save_manifests,
    save_release_manifest,
    space_needed,
)
from .engine import EngineSettings
from .errors import ConfigError
from .events import (
    BytesReceived,
    ConcurrencyChanged,
    Event,
    EventSink,
    FileFailed,
    FileOutcome,
    FileSkipped,
    FileStatus,
    FileVerified,
    RangeRetried,
    RunFinished,
    RunStarted,
    RunSummary,
    StopKind,
)
from .fanout import auto_processes, merge_summaries, run_started, split_plan, worker_options
from .files import ensure_dir
from .journal import (
    JOURNAL_DIR,
    Journal,
    JournalView,
    describe_running,
    find_journals,
    journal_path,
    read_entries,
)
from .locks import DirectoryClaim
from .ondisk import JournalEntry
from .planned import Plan, PlannedFile
from .planning import refresh
from .session import open_store
from .store import S3Store
from .worker import Failed, Finished, Job
from .zygote import Child, Zygote

__all__ = ["GroupView", "Stoppable", "download", "process_count"]


class Stoppable(Protocol):
    """What a Ctrl-C stops: one engine, or every worker of a run."""

    def stop(self) -> None: ...


def process_count(options: Options, plan: Plan, cores: int | None = None) -> int:
    """How many processes a download of ``plan`` runs: ``--processes`` or the automatic
    count (``fanout.auto_processes``); never more than a fixed ``--concurrency`` (each
    process needs a request of its own) and 1 with ``--shard`` (a cluster splits already)."""
    if options.shard is not None:
        return 1
    count = options.processes
    if count is None:
        count = auto_processes(plan.totals, cores or os.cpu_count() or 1)
    if options.max_concurrency is None:
        count = min(count, options.concurrency)
    return max(1, count)


class GroupView(JournalView):
    """The folder's journals as N processes of one run see them: each file's entry is the
    one in the journal of the shard that owns it (``--shard K/N``'s journals)."""

    def __init__(self, output_directory: Path, count: int) -> None:
        super().__init__(output_directory, None, output_directory / JOURNAL_DIR / "-")
        self._group: dict[str, JournalEntry] = {}
        _, sharded = find_journals(output_directory)
        for shard, path in sharded.items():
            if shard[1] == count:
                # A damaged or half-written journal only costs its files a fresh look.
                with contextlib.suppress(ConfigError, OSError, sqlite3.Error):
                    self._group.update((e.dest, e) for e in read_entries(path))

    def entry(self, dest: Path) -> JournalEntry | None:
        return self._group.get(self.rel(dest))


async def download(
    options: Options,
    *,
    sink: EventSink,
    confirm: Callable[[Plan], Awaitable[bool]],
    on_engine: Callable[[Stoppable], None] = lambda _: None,
    space_check: bool = True,
) -> DownloadResult:
    """``downloading.run_download``, in ``process_count`` processes: the plan is made (and
    the question asked) once, here; with one process the run goes on here too."""
    settings = EngineSettings.from_options(options)
    # Forked now, while this process has no thread yet, or else started afresh below.
    zygote = Zygote(_worker_env()) if _may_fan_out(options) else None
    try:
        async with open_store(options, max_connections=settings.max_requests) as store:
            plan = await plan_readonly(options, store, sink=sink)
            count = process_count(options, plan)
            if count == 1:
                if zygote is not None:
                    await asyncio.to_thread(zygote.close)
                    zygote = None
                return await finish_download(
                    options,
                    plan,
                    store=store,
                    settings=settings,
                    sink=sink,
                    confirm=confirm,
                    on_engine=on_engine,
                    space_check=space_check,
                )
            if zygote is None:
                zygote = Zygote(_worker_env())
            return await _many(
                options,
                plan,
                count,
                store=store,
                zygote=zygote,
                sink=sink,
                confirm=confirm,
                on_engine=on_engine,
                space_check=space_check,
            )
    finally:
        if zygote is not None:
            await asyncio.shield(asyncio.to_thread(zygote.close))


def _may_fan_out(options: Options) -> bool:
    """Whether the run may take more than one process (``process_count`` says after the plan)."""
    if options.shard is not None:
        return False
    if options.processes is None:
        return (os.cpu_count() or 1) > 2
    return options.processes > 1


async def _many(
    options: Options,
    plan: Plan,
    count: int,
    *,
    store: S3Store,
    zygote: Zygote,
    sink: EventSink,
    confirm: Callable[[Plan], Awaitable[bool]],
    on_engine: Callable[[Stoppable], None],
    space_check: bool,
) -> DownloadResult:
    """``download`` in ``count`` processes, once the plan is made."""
    plan = await asyncio.to_thread(refresh, plan, GroupView(options.output_directory, count))
    out = options.output_directory
    if space_check:
        check_free_space(out, await asyncio.to_thread(space_needed, plan.files))
    work = plan.totals.fetch_files + plan.totals.adopt_files
    if work and not await confirm(plan):
        return DownloadResult(plan=plan, summary=None, declined=True)
    await asyncio.to_thread(ensure_dir, out / JOURNAL_DIR)
    claim = DirectoryClaim(out / JOURNAL_DIR, (0, count), describe=describe_running(out))
    claim.acquire()
    try:
        run = _FanOut(options, count, sink=sink, zygote=zygote)
        return await run.go(plan, store=store, on_engine=on_engine, space_check=space_check)
    finally:
        claim.release()


@dataclasses.dataclass(slots=True)
class _Worker:
    """One worker process, and what the parent learnt of it from its events."""

    shard: tuple[int, int]
    plan: Plan
    limit: int
    proc: Child | None = None
    conn: Connection | None = None
    outcome: Finished | Failed | None = None
    done: asyncio.Future[None] | None = None
    verified: int = 0
    skipped: int = 0
    bytes_fetched: int = 0
    retries: int = 0
    levels: dict[str, int] = dataclasses.field(default_factory=dict)
    failures: list[FileFailed] = dataclasses.field(default_factory=list)

    def count(self, event: Event) -> None:
        if type(event) is BytesReceived:
            self.bytes_fetched += event.count
        elif isinstance(event, FileVerified):
            self.verified += 1
            self.levels[event.level] = self.levels.get(event.level, 0) + 1
        elif isinstance(event, FileSkipped):
            self.skipped += 1
        elif isinstance(event, FileFailed):
            self.failures.append(event)
        elif isinstance(event, RangeRetried):
            self.retries += 1

    def tallied(self, stopped_by: str | None, kind: StopKind | None) -> RunSummary:
        """A summary from the events, for a worker that sent none of its own."""
        uids = {(f.dataset, f.key): f.uid for f in self.plan.files}
        status = [f.status for f in self.failures]
        return RunSummary(
            files=len(self.plan.files),
            verified=self.verified,
            skipped=self.skipped,
            failed=status.count(FileStatus.FAILED),
            missing=status.count(FileStatus.MISSING),
            denied=status.count(FileStatus.DENIED),
            bytes_fetched=self.bytes_fetched,
            size_bytes=sum(f.size_bytes for f in self.plan.files),
            elapsed_s=0.0,
            retries=self.retries,
            restarts=0,
            levels=dict(self.levels),
            problems=tuple(
                FileOutcome(
                    dataset=f.dataset,
                    uid=uids.get((f.dataset, f.key), ""),
                    key=f.key,
                    dest=f.dest,
                    status=f.status,
                    reason=f.reason,
                )
                for f in self.failures
            ),
            stopped_by=stopped_by,
            stop_kind=kind,
        )


class _FanOut:
    """The parent's side of a run in N processes, once the user said yes and the folder is
    claimed: adoption shard by shard, the workers, their events, one summary."""

    def __init__(self, options: Options, count: int, *, sink: EventSink, zygote: Zygote) -> None:
        self.options = options
        self.zygote = zygote
        self.count = count
        self.sink = sink
        self.workers: list[_Worker] = []
        self.stopping = False
        self.loop = asyncio.get_running_loop()

    async def go(
        self,
        plan: Plan,
        *,
        store: S3Store,
        on_engine: Callable[[Stoppable], None],
        space_check: bool,
    ) -> DownloadResult:
        out = self.options.output_directory
        await asyncio.to_thread(save_manifests, plan)
        kept = await save_release_manifest(store, plan) if self.options.release_manifest else None
        adoption, notes = await self._adopt(plan, store)
        if space_check and adoption.rejected_files:
            check_free_space(out, await asyncio.to_thread(space_needed, adoption.plan.files))
        on_engine(self)
        started = time.monotonic()
        self.sink(run_started(adoption.plan.files, sum(w.limit for w in self.workers)))
        try:
            for w in self.workers:
                self._launch(w)
            await asyncio.gather(*(w.done for w in self.workers if w.done is not None))
        finally:
            if not all(w.done is not None and w.done.done() for w in self.workers):
                self.stop()  # cancelled from outside: the workers stop as for a Ctrl-C
            await asyncio.shield(asyncio.to_thread(self._reap))
        summary = self._summary(time.monotonic() - started)
        self.sink(RunFinished(summary=summary))
        return DownloadResult(
            plan=adoption.plan,
            summary=summary,
            adoption=adoption,
            notes=notes,
            release_manifest=kept,
        )

    async def _adopt(self, plan: Plan, store: S3Store) -> tuple[Adoption, tuple[str, ...]]:
        """Each shard's part classified against its journal and its files on disk adopted
        (one shard at a time, before any worker starts); the plan as adoption left it."""
        out = self.options.output_directory
        updated: dict[Path, PlannedFile] = {}
        total = Adoption(plan=plan)
        notes: list[str] = []
        for k, part in enumerate(split_plan(plan, self.count), start=1):
            if not part.files:
                continue
            options = worker_options(self.options, (k, self.count))
            with Journal(journal_path(out, options.shard)) as journal:
                notes.extend(n for n in journal.notes if n not in notes)
                got = await adopt_into(options, part, store=store, journal=journal, sink=self.sink)
            self.workers.append(
                _Worker(shard=(k, self.count), plan=got.plan, limit=options.concurrency)
            )
            updated.update((f.dest, f) for f in got.plan.files)
            total = _add_adoption(total, got)
        merged = dataclasses.replace(
            plan,
            datasets=tuple(
                dataclasses.replace(d, files=tuple(updated.get(f.dest, f) for f in d.files))
                for d in plan.datasets
            ),
        )
        return dataclasses.replace(total, plan=merged), tuple(notes)

    def _launch(self, w: _Worker) -> None:
        """Start ``w``'s thread: it has the zygote fork ``w``'s process on a socket pair, sends
        it its job and reads what it sends back."""
        ours, theirs = socket.socketpair()
        w.conn = Connection(ours.detach())
        w.done = self.loop.create_future()
        job = Job(options=worker_options(self.options, w.shard), plan=w.plan)
        threading.Thread(target=self._pump, args=(w, job, theirs), daemon=True).start()

    def _pump(self, w: _Worker, job: Job, theirs: socket.socket) -> None:
        """(A thread per worker.) Start the worker, send the job, then hand each batch of
        events to the event loop until the worker's last message or its end."""
        assert w.conn is not None
        with theirs:
            w.proc = self.zygote.spawn(theirs.fileno())
        if self.stopping:
            self._signal(w)
        outcome: Finished | Failed | None = None
        try:
            w.conn.send(job)
            while outcome is None:
                message = w.conn.recv()
                if isinstance(message, Finished | Failed):
                    outcome = message
                else:
                    self._call(self._on_events, w, message[1])
        except (EOFError, OSError):
            pass  # the worker ended without its last message: _summary says how
        finally:
            w.conn.close()
        w.proc.wait()
        self._call(self._ended, w, outcome)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
            self.loop.call_soon_threadsafe(fn, *args)

    def _on_events(self, w: _Worker, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, RunStarted | RunFinished):
                continue  # the parent sends the run's own
            w.count(event)
            if isinstance(event, ConcurrencyChanged):
                w.limit = event.limit
                event = dataclasses.replace(
                    event,
                    limit=sum(x.limit for x in self.workers),
                    reason=f"process {w.shard[0]}: {event.reason}",
                )
            self.sink(event)

    def _ended(self, w: _Worker, outcome: Finished | Failed | None) -> None:
        w.outcome = outcome
        kind = (
            outcome.summary.stop_kind
            if isinstance(outcome, Finished)
            else outcome.stop_kind
            if outcome is not None
            else None
        )
        if kind in (StopKind.CREDENTIALS, StopKind.DISK, StopKind.NETWORK):
            # As in one process: keys, disk or network gone stop the whole run. A worker that
            # died stops nothing else: the others' files are as good, and its own resumable.
            self.stop()
        if w.done is not None and not w.done.done():
            w.done.set_result(None)

    def stop(self) -> None:
        """Stop every worker cleanly (from the event loop: Ctrl-C, SIGTERM, broken output)."""
        self.stopping = True
        for w in self.workers:
            self._signal(w)

    @staticmethod
    def _signal(w: _Worker) -> None:
        if w.proc is not None:
            w.proc.send_signal(signal.SIGTERM)

    def _reap(self) -> None:
        """(A thread.) However the run ends, no worker outlives it."""
        for w in self.workers:
            if w.proc is None:
                continue
            try:
                w.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()

    def _summary(self, elapsed_s: float) -> RunSummary:
        parts, stopped = [], []
        for w in self.workers:
            if isinstance(w.outcome, Finished):
                parts.append(w.outcome.summary)
            elif isinstance(w.outcome, Failed):
                parts.append(w.tallied(w.outcome.message, w.outcome.stop_kind))
            elif self.stopping and _by_sigterm(w):
                parts.append(w.tallied("interrupted", StopKind.INTERRUPTED))
            else:
                parts.append(w.tallied(None, None))
                stopped.append(_death(w, self.count))
        return merge_summaries(parts, elapsed_s=elapsed_s, stopped=stopped)


def _by_sigterm(w: _Worker) -> bool:
    return w.proc is not None and w.proc.returncode == -signal.SIGTERM


def _death(w: _Worker, count: int) -> str:
    if w.proc is None or w.proc.pid is None:
        return f"process {w.shard[0]} of {count} could not be started"
    code = w.proc.returncode
    how = (
        f"killed by {signal.Signals(-code).name}"
        if code is not None and code < 0
        else f"exit status {code}"
        if code is not None
        else "how is unknown: its zygote ended first"
    )
    return f"process {w.shard[0]} of {count} ended before it finished ({how})"


def _worker_env() -> dict[str, str]:
    """The environment of a worker: ours, with this package importable as it is here."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    if root not in env.get("PYTHONPATH", "").split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _add_adoption(a: Adoption, b: Adoption) -> Adoption:
    return dataclasses.replace(
        a,
        adopted_files=a.adopted_files + b.adopted_files,
        adopted_bytes=a.adopted_bytes + b.adopted_bytes,
        checked_files=a.checked_files + b.checked_files,
        from_journals=a.from_journals + b.from_journals,
        rejected_files=a.rejected_files + b.rejected_files,
        original_cli=a.original_cli or b.original_cli,
        leftovers_removed=a.leftovers_removed + b.leftovers_removed,
        leftover_bytes=a.leftover_bytes + b.leftover_bytes,
    )
