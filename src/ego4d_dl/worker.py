"""One process of ``--processes N``: its part of the parent's plan transferred under its shard's
journal, its events sent to the parent in batches; ``python -m ego4d_dl.worker FD``, or forked
by the zygote (``python -m ego4d_dl.worker --zygote FD``), which imports all that once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Literal

from .config import Credentials, Endpoint, Options
from .downloading import transfer
from .engine import Engine, EngineSettings
from .errors import CredentialsError, DiskFullError, Ego4dDLError, NetworkError
from .events import BytesReceived, Event, RunSummary, StopKind
from .journal import Journal, journal_path
from .planned import Plan
from .session import open_store

__all__ = [
    "ZYGOTE_RECORD",
    "Child",
    "Failed",
    "Finished",
    "Job",
    "Relay",
    "Zygote",
    "main",
    "zygote",
]

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


# What the zygote tells the parent: ``b"P"``, the pid of the worker it forked (one per request,
# in order), or ``b"X"``, a worker's pid and its wait status once it ended.
ZYGOTE_RECORD = struct.Struct("!cii")


def _warm() -> None:
    """What every worker would otherwise load by itself, loaded once in the zygote: the lazy
    imports of a store (aiobotocore, aiohttp, botocore's S3 client). No thread may be left."""

    async def connect() -> None:
        keys = Credentials(access_key_id="-", secret_access_key="-")  # noqa: S106  (no request)
        endpoint = Endpoint(url="http://127.0.0.1:9", region="us-east-1")
        async with S3Store(
            credentials=keys, endpoint=endpoint, max_connections=1, stall_timeout_s=1
        ):
            pass

    import aiobotocore.httpsession  # noqa: F401  (these: what the first requests import)
    import botocore.httpsession  # noqa: F401

    from .store import S3Store, adapter, body  # noqa: F401

    with contextlib.suppress(Exception):  # a warm-up only: a worker loads what is missing
        asyncio.run(connect())


def _fork_worker(fd: int, closing: list[int]) -> int:
    """A worker forked from the zygote, on the socket ``fd``; its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for other in closing:
            os.close(other)
        main([str(fd)])  # leaves by os._exit(0) once it ran a job
        code = 0  # the parent left before it sent one
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
        if not isinstance(exc.code, int) and exc.code is not None:
            sys.stderr.write(f"{exc.code}\n")
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(code)


def zygote(ctl_fd: int) -> None:
    """Fork a worker for each descriptor the parent sends on the socket ``ctl_fd``; tell the
    parent each one's pid, and how it ended. Leave when the parent closes the socket (its
    workers, watching their own sockets, stop on their own).

    Started by the parent as a fresh interpreter: it has no threads, so forking is safe; the
    stack is imported once here and not again in each worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the workers, by SIGTERM
    _warm()
    if threading.active_count() != 1:
        raise SystemExit("ego4d_dl.worker: the zygote has threads; it cannot fork safely")
    ctl = socket.socket(fileno=ctl_fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(ctl, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    children: set[int] = set()
    try:
        while True:
            selector.select()
            _reap_children(ctl, children, wake_r)
            with contextlib.suppress(BlockingIOError, InterruptedError):
                ctl.setblocking(False)
                try:
                    message, fds, _, _ = socket.recv_fds(ctl, 1, 1)
                finally:
                    ctl.setblocking(True)
                if not message:
                    return  # the parent is gone, or done
                for fd in fds:
                    pid = _fork_worker(fd, [ctl.fileno(), wake_r, wake_w])
                    os.close(fd)
                    children.add(pid)
                    ctl.sendall(ZYGOTE_RECORD.pack(b"P", pid, 0))
    except OSError:
        return  # the parent's socket broke: the parent is gone


def _reap_children(ctl: socket.socket, children: set[int], wake_r: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(wake_r, 512):
            pass
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        children.discard(pid)
        ctl.sendall(ZYGOTE_RECORD.pack(b"X", pid, status))


class Child:
    """(The parent's side.) A worker the zygote forked: its pid, and once the zygote saw it
    end, its exit code as ``subprocess.Popen`` gives it (``-N``: killed by signal N)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.ended = threading.Event()
        if pid is None:  # never started
            self.ended.set()

    def send_signal(self, sig: int) -> None:
        if self.pid is not None and not self.ended.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        if not self.ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
        return self.returncode


class Zygote:
    """(The parent's side.) The zygote process, started at once (it imports in the
    background); ``spawn`` a worker on a socket, ``close`` when every worker has ended."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self._proc = subprocess.Popen(
                [*argv, "--zygote", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                # Its own process group, and so its workers': a Ctrl-C at the terminal reaches
                # the parent only, which stops every worker the same way (SIGTERM).
                process_group=0,
            )
        self._sock = ours
        self._lock = threading.Lock()
        self._pids: queue.Queue[int | None] = queue.Queue()
        self._children: dict[int, Child] = {}
        self._early: dict[int, int] = {}
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def spawn(self, fd: int) -> Child:
        """(Blocks until the zygote answers.) A worker forked on the socket ``fd``."""
        with self._lock:
            try:
                socket.send_fds(self._sock, [b"F"], [fd])
            except OSError:
                return Child(None)
            pid = self._pids.get()
        child = Child(pid)
        with self._lock:
            if pid is not None:
                self._children[pid] = child
                if pid in self._early:
                    self._ended(child, self._early.pop(pid))
        return child

    def _read(self) -> None:
        """(A thread.) The zygote's records, until it leaves."""
        size = ZYGOTE_RECORD.size
        buffer = b""
        try:
            while chunk := self._sock.recv(4096):
                buffer += chunk
                while len(buffer) >= size:
                    kind, pid, status = ZYGOTE_RECORD.unpack(buffer[:size])
                    buffer = buffer[size:]
                    if kind == b"P":
                        self._pids.put(pid)
                        continue
                    with self._lock:
                        child = self._children.get(pid)
                        if child is None:
                            self._early[pid] = status
                        else:
                            self._ended(child, status)
        except OSError:
            pass
        self._pids.put(None)  # a spawn waiting for an answer gets none
        with self._lock:
            for child in self._children.values():
                child.ended.set()  # how they end is unknown: their sockets tell the parent

    @staticmethod
    def _ended(child: Child, status: int) -> None:
        child.returncode = os.waitstatus_to_exitcode(status)
        child.ended.set()

    def close(self) -> None:
        """The zygote told to leave (its socket closed), and reaped."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._sock.close()


if __name__ == "__main__":
    # Run as ``-m``, this file is ``__main__``; the job unpickles as ``ego4d_dl.worker.Job``.
    from ego4d_dl import worker

    if sys.argv[1:2] == ["--zygote"]:
        worker.zygote(int(sys.argv[2]))
    else:
        worker.main()
