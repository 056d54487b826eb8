"""One process of ``--processes N``: its part of the parent's plan transferred under its shard's
journal, its events sent to the parent in batches; ``python -m ego4d_dl.worker FD``, or forked
by the zygote (``zygote``), which imports all that once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Literal

from .config import Options
from .downloading import transfer
from .engine import Engine, EngineSettings
from .errors import CredentialsError, DiskFullError, Ego4dDLError, NetworkError
from .events import BytesReceived, Event, RunSummary, StopKind
from .journal import Journal, journal_path
from .planned import Plan
from .session import open_store

__all__ = ["Failed", "Finished", "Job", "Relay", "main"]

# Events reach the parent at most this long after they happened: often enough for a live
# dashboard, rarely enough that a batch holds many events (one pickle, one write).
_BATCH_S = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """What the parent sends a worker first: its options (``shard`` set, limits shared out)
    and its part of the plan, already classified and adopted under its journal."""

    options: Options
    plan: Plan


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """The worker's last message when its engine ran: its part's summary."""

    summary: RunSummary


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """The worker's last message when it could not run: why, and how that stops a run."""

    message: str
    stop_kind: StopKind | None


Message = tuple[Literal["events"], list[Event]] | Finished | Failed


class Relay:
    """The worker's event sink: events batched and sent to the parent every ``_BATCH_S``;
    ``BytesReceived`` are summed per file in between (and sent before any later event of
    the batch, so a file's bytes always precede its end). If the parent is gone, ``on_lost``
    is called once and events are dropped from then on."""

    def __init__(self, conn: Connection, on_lost: object = None) -> None:
        self._conn = conn
        self._loop = asyncio.get_running_loop()
        self._batch: list[Event] = []
        self._bytes: dict[tuple[str, str], int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.lost = False
        self.on_lost = on_lost

    def __call__(self, event: Event) -> None:
        if type(event) is BytesReceived:
            where = (event.dataset, event.key)
            self._bytes[where] = self._bytes.get(where, 0) + event.count
        else:
            self._add_bytes()
            self._batch.append(event)
        if self._timer is None:
            self._timer = self._loop.call_later(_BATCH_S, self.flush)

    def _add_bytes(self) -> None:
        if self._bytes:
            self._batch.extend(
                BytesReceived(dataset=d, key=k, count=n) for (d, k), n in self._bytes.items()
            )
            self._bytes.clear()

    def flush(self) -> None:
        """Send what is pending now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._add_bytes()
        batch, self._batch = self._batch, []
        if batch:
            self.send(("events", batch))

    def send(self, message: Message) -> None:
        if self.lost:
            return
        try:
            self._conn.send(message)
        except OSError:
            self.lost = True
            if callable(self.on_lost):
                self.on_lost()


class _Stopper:
    """A stop asked for (SIGTERM from the parent, or the parent gone): the engine's clean
    stop once it runs, before that the whole task."""

    def __init__(self, task: asyncio.Task[object] | None) -> None:
        self._task = task
        self._engine: Engine | None = None
        self._stopped = False

    def attach(self, engine: Engine) -> None:
        self._engine = engine
        if self._stopped:
            engine.stop()

    def stop(self) -> None:
        self._stopped = True
        if self._engine is not None:
            self._engine.stop()
        elif self._task is not None:
            self._task.cancel()


async def _run(job: Job, conn: Connection) -> RunSummary:
    loop = asyncio.get_running_loop()
    stopper = _Stopper(asyncio.current_task())
    relay = Relay(conn, on_lost=stopper.stop)

    def parent_gone() -> None:
        loop.remove_reader(conn.fileno())
        stopper.stop()

    # The parent never writes after the job: the socket turns readable only when it closes.
    loop.add_reader(conn.fileno(), parent_gone)
    loop.add_signal_handler(signal.SIGTERM, stopper.stop)
    options = job.options
    settings = EngineSettings.from_options(options)
    try:
        async with open_store(options, max_connections=settings.max_requests) as store:
            with Journal(journal_path(options.output_directory, options.shard)) as journal:
                return await transfer(
                    options,
                    settings,
                    job.plan,
                    store=store,
                    journal=journal,
                    sink=relay,
                    on_engine=stopper.attach,
                )
    finally:
        loop.remove_reader(conn.fileno())
        relay.flush()


def _stop_kind(exc: BaseException) -> StopKind | None:
    if isinstance(exc, CredentialsError):
        return StopKind.CREDENTIALS
    if isinstance(exc, DiskFullError):
        return StopKind.DISK
    if isinstance(exc, NetworkError):
        return StopKind.NETWORK
    return None


def _outcome(job: Job, conn: Connection) -> Finished | Failed:
    try:
        return Finished(summary=asyncio.run(_run(job, conn)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        return Failed(message="interrupted", stop_kind=StopKind.INTERRUPTED)
    except Ego4dDLError as exc:
        return Failed(message=str(exc), stop_kind=_stop_kind(exc))
    except Exception as exc:  # a bug: the parent says so, one line, and exits 1
        return Failed(message=f"internal error: {type(exc).__name__}: {exc}", stop_kind=None)


def main(argv: list[str] | None = None) -> None:
    """Run the job the parent sends over the socket whose descriptor is ``argv[0]``."""
    # Ctrl-C reaches the parent, which stops its workers (SIGTERM): they stop one way only.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    args = sys.argv[1:] if argv is None else argv
    conn = Connection(int(args[0]))
    try:
        job = conn.recv()
    except (EOFError, OSError):
        return  # the parent left before it sent the job
    if not isinstance(job, Job):
        raise SystemExit(f"ego4d_dl.worker: expected a job, got {type(job).__name__}")
    outcome = _outcome(job, conn)
    with contextlib.suppress(OSError):
        conn.send(outcome)
    conn.close()
    # Everything is closed (journal, files, sockets, the loop); the interpreter's teardown
    # would only free modules: 0.15-0.3 s of CPU per worker (as ``cli._leave``).
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    # Run as ``-m``, this file is ``__main__``; the job unpickles as ``ego4d_dl.worker.Job``.
    from ego4d_dl import worker

    worker.main()
