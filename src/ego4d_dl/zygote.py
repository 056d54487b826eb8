"""The zygote of ``--processes N``: a process with the workers' stack imported and no thread,
which forks a worker (``worker.main``) for each socket the parent sends it, and tells the
parent each one's pid and how it ended. Forked from the parent itself while the parent has no
thread yet (its imports are then shared, not done again), else started as a fresh interpreter
(``python -m ego4d_dl.zygote FD``, which imports them once for every worker)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import queue
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback

from .config import Credentials, Endpoint
from .worker import main

__all__ = ["Child", "Zygote", "serve"]

# What the zygote tells the parent: ``b"P"``, the pid of the worker it forked (one per request,
# in order), or ``b"X"``, a worker's pid and its wait status once it ended.
ZYGOTE_RECORD = struct.Struct("!cii")


def _preload() -> None:
    """What a worker's store loads on first use (aiobotocore, aiohttp, botocore), imported
    here so that a zygote forked after this has it."""
    import aiobotocore.session  # noqa: F401
    import botocore.httpsession  # noqa: F401

    from .store import adapter, body  # noqa: F401


def _warm() -> None:
    """The imports of ``_preload`` and a store's set-up, done once in a fresh zygote (no
    request: nobody listens there). No thread may be left."""

    async def connect() -> None:
        keys = Credentials(access_key_id="-", secret_access_key="-")  # noqa: S106  (no request)
        endpoint = Endpoint(url="http://127.0.0.1:9", region="us-east-1")
        async with S3Store(
            credentials=keys, endpoint=endpoint, max_connections=1, stall_timeout_s=1
        ):
            pass

    from .store import S3Store

    _preload()
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


def serve(ctl_fd: int, *, warm: bool = True) -> None:
    """Fork a worker for each descriptor the parent sends on the socket ``ctl_fd``; tell the
    parent each one's pid, and how it ended. Leave when the parent closes the socket (its
    workers, watching their own sockets, stop on their own).

    The zygote has no thread, so forking is safe; the stack is imported once (``warm``: here)
    and not again in each worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the workers, by SIGTERM
    if warm:
        _warm()
    if threading.active_count() != 1:
        raise SystemExit("ego4d_dl.zygote: the zygote has threads; it cannot fork safely")
    # What is loaded now stays as it is: the collector does not walk it (and so copy its
    # pages into every worker), nor free what the parent left behind.
    gc.freeze()
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

    def __init__(self, env: dict[str, str]) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self._proc: subprocess.Popen[bytes] | None = None
            self._pid = _fork_zygote(theirs) if threading.active_count() == 1 else 0
            if not self._pid:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "ego4d_dl.zygote", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    env=env,
                    # Its own process group, and so its workers': a Ctrl-C at the terminal
                    # reaches the parent only, which stops every worker the same way (SIGTERM).
                    process_group=0,
                )
                self._pid = self._proc.pid
        self._sock = ours
        self._lock = threading.Lock()
        self._pids: queue.Queue[int | None] = queue.Queue()
        self._children: dict[int, Child] = {}
        self._early: dict[int, int] = {}
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self._pid

    @property
    def forked(self) -> bool:
        """Whether the zygote was forked from this process (else started afresh)."""
        return self._proc is None

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
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        else:
            _wait_forked(self._pid, timeout_s=10)
        self._sock.close()


def _fork_zygote(theirs: socket.socket) -> int:
    """The zygote forked from this process (which has no thread), serving on ``theirs``; its
    pid. It leaves the terminal's process group (a Ctrl-C reaches the parent only, which
    stops every worker by SIGTERM), and keeps no descriptor of ours but the standard error."""
    _preload()  # what the parent imports for its own store anyway
    stop = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # none is handled half-forked
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setpgid(0, 0)
            signal.set_wakeup_fd(-1)  # the parent's event loop's, not ours
            for sig in stop:
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            fd = theirs.fileno()
            os.closerange(3, fd)
            os.closerange(fd + 1, os.sysconf("SC_OPEN_MAX"))
            serve(fd, warm=False)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # as the child does: whichever runs first
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return pid


def _wait_forked(pid: int, *, timeout_s: float) -> None:
    """Reap the forked zygote, killed if it has not left within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.02)


if __name__ == "__main__":
    # Run as ``-m``, this file is ``__main__``: serve as ``ego4d_dl.zygote`` itself.
    from ego4d_dl import zygote

    zygote.serve(int(sys.argv[1]))
