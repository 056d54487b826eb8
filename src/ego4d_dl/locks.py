"""Locks that hold between processes and between hosts, and a run's claim on an output folder."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .shard import Shard

__all__ = [
    "DirectoryClaim",
    "LocksUnsupported",
    "RunConflictError",
    "Running",
    "holds_exactly",
    "lock_file",
    "open_plain",
    "open_plain_stat",
]

# Linux values; Python exposes the names since 3.9 on Linux only.
F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)

_UNSUPPORTED = frozenset(
    {errno.EINVAL, errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP}
)
_BUSY = frozenset({errno.EAGAIN, errno.EACCES})

# Byte offsets in runs.lock (see the module docstring).
_MUTEX = 0
_N_BASE = 0  # byte N (1..MAX_SHARDS) for the shards of N
_K_BASE = 200_000  # byte K_BASE + K for shard K
_END = 400_001  # one past the last byte any run locks
_MUTEX_WAIT_S = 10.0


class LocksUnsupported(OSError):
    """The filesystem implements no file locks; two runs cannot be kept apart on it."""


class RunConflictError(ConfigError):
    """Another ego4d-dl is writing into the folder in a way that would overlap this run."""


def _flock(kind: int, start: int, length: int) -> bytes:
    # struct flock: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid
    # (native alignment); l_pid must be 0 for an OFD lock.
    return struct.pack("hhqqi", kind, os.SEEK_SET, start, length, 0)


def _set(fd: int, kind: int, start: int, length: int) -> bool:
    try:
        fcntl.fcntl(fd, F_OFD_SETLK, _flock(kind, start, length))
    except OSError as exc:
        if exc.errno in _BUSY:
            return False
        if exc.errno in _UNSUPPORTED:
            raise LocksUnsupported(exc.errno, os.strerror(exc.errno or 0)) from None
        raise
    return True


def _conflict(fd: int, kind: int, start: int, length: int) -> tuple[int, int] | None:
    """The ``(start, length)`` of a lock another holder has that conflicts with this one."""
    try:
        got = fcntl.fcntl(fd, F_OFD_GETLK, _flock(kind, start, length))
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            raise LocksUnsupported(exc.errno, os.strerror(exc.errno or 0)) from None
        raise
    l_type, _, l_start, l_len, _ = struct.unpack("hhqqi", got[: struct.calcsize("hhqqi")])
    return None if l_type == fcntl.F_UNLCK else (l_start, l_len)


def lock_file(fd: int) -> bool:
    """Write-lock a whole open file without waiting; ``False`` if another holder has it."""
    return _set(fd, fcntl.F_WRLCK, 0, 0)


def open_plain(path: Path, flags: int, mode: int = 0o644) -> int:
    """Open ``path`` without following a link at its last component, as a plain file.

    With ``os.O_CREAT``: a symbolic link or hard link found there is removed (its target left
    as it is) and a file of our own created in its place; ``path`` must then be free for us.
    Raises ``OSError`` for a directory or special file in the way (and, without ``O_CREAT``,
    for a link: ``ELOOP`` or ``EMLINK``).
    """
    return open_plain_stat(path, flags, mode)[0]


def open_plain_stat(path: Path, flags: int, mode: int = 0o644) -> tuple[int, os.stat_result]:
    """``open_plain``, and the ``fstat`` of what it opened."""
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(3):
        try:
            fd = os.open(path, flags, mode)
        except OSError as exc:
            if exc.errno != errno.ELOOP or not flags & os.O_CREAT:
                raise
            path.unlink()  # a symbolic link: remove the name, never its target
            continue
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise OSError(errno.EISDIR, f"{path} is not a regular file")
        if st.st_nlink == 1:
            return fd, st
        os.close(fd)
        if not flags & os.O_CREAT:
            raise OSError(errno.EMLINK, f"{path} has {st.st_nlink} names (a hard link)")
        path.unlink()  # one of several names: ours goes, the other names keep the data
    raise OSError(errno.EBUSY, f"{path} keeps being replaced by a link")


def holds_exactly(path: Path, data: bytes) -> bool:
    """Whether ``path`` is a plain file of ours (no link) holding exactly ``data``: a file
    that would be rewritten with the same bytes is left alone (no write, no fsync)."""
    try:
        fd, st = open_plain_stat(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        if st.st_size != len(data):
            return False
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(len(data) + 1) == data
    except OSError:
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True, kw_only=True)
class Running:
    """What holds the conflicting lock, as far as the lock itself tells."""

    unsharded: bool = False
    shard_count: int | None = None  # runs with --shard K/shard_count
    shard: Shard | None = None  # one shard exactly


def _running(start: int, length: int, our_count: int | None) -> Running:
    if length != 1:
        return Running(unsharded=True)  # the only lock over more than one byte
    if start >= _K_BASE and our_count is not None:
        return Running(shard=(start - _K_BASE, our_count))
    return Running(shard_count=start - _N_BASE)


class DirectoryClaim:
    """This run's place among the runs writing into one output folder (``runs.lock``)."""

    def __init__(
        self,
        folder: Path,
        shard: Shard | None,
        *,
        describe: Callable[[Running], str] = lambda r: "",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``folder`` is ``<out>/.ego4d-dl``; ``describe`` names what is running (pid, host,
        since when) from the journals, for the refusal message."""
        self.path = folder / "runs.lock"
        self.shard = shard
        self._describe = describe
        self._sleep = sleep
        self._fd = -1
        self.supported = True

    def acquire(self) -> None:
        """Take the claim or raise ``RunConflictError`` saying what runs and what to do."""
        self._fd = open_plain(self.path, os.O_RDWR | os.O_CREAT)
        try:
            if self.shard is None:
                if not _set(self._fd, fcntl.F_WRLCK, 1, _END - 1):
                    self._refuse(_conflict(self._fd, fcntl.F_WRLCK, 1, _END - 1))
                return
            self._acquire_shard(self.shard)
        except LocksUnsupported:
            self.supported = False  # the caller warns; nothing can be enforced here
        except BaseException:
            self.release()
            raise

    def probe(self) -> None:
        """Raise ``RunConflictError`` if a run holds a conflicting claim now; take nothing and
        create nothing (the prompt comes first: a declined download changes nothing)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return  # no lock file (no run was ever here) or not ours to read: acquire decides
        self._fd = fd
        try:
            if self.shard is None:
                checks = [(fcntl.F_WRLCK, 1, _END - 1)]
            else:
                k, n = self.shard
                checks = [
                    (fcntl.F_WRLCK, 1, _N_BASE + n - 1),
                    (fcntl.F_WRLCK, _N_BASE + n + 1, _K_BASE - _N_BASE - n - 1),
                    (fcntl.F_RDLCK, _N_BASE + n, 1),
                    (fcntl.F_WRLCK, _K_BASE + k, 1),
                ]
            for kind, start, length in checks:
                if length > 0:
                    found = _conflict(fd, kind, start, length)
                    if found is not None:
                        self._refuse(found)
        except LocksUnsupported:
            pass
        finally:
            self.release()

    def _acquire_shard(self, shard: Shard) -> None:
        k, n = shard
        deadline = time.monotonic() + _MUTEX_WAIT_S
        while not _set(self._fd, fcntl.F_WRLCK, _MUTEX, 1):
            if time.monotonic() > deadline:
                raise RunConflictError(
                    f"cannot claim {self.path.parent.parent}: another ego4d-dl has held "
                    f"{self.path} for {_MUTEX_WAIT_S:g}s while starting; try again"
                )
            self._sleep(0.05)
        try:
            for start, stop in ((1, _N_BASE + n), (_N_BASE + n + 1, _K_BASE)):
                if stop > start:
                    found = _conflict(self._fd, fcntl.F_WRLCK, start, stop - start)
                    if found is not None:
                        self._refuse(found)
            if not _set(self._fd, fcntl.F_RDLCK, _N_BASE + n, 1):
                self._refuse(_conflict(self._fd, fcntl.F_RDLCK, _N_BASE + n, 1))
            if not _set(self._fd, fcntl.F_WRLCK, _K_BASE + k, 1):
                self._refuse(_conflict(self._fd, fcntl.F_WRLCK, _K_BASE + k, 1))
        finally:
            fcntl.fcntl(self._fd, F_OFD_SETLK, _flock(fcntl.F_UNLCK, _MUTEX, 1))

    def _refuse(self, found: tuple[int, int] | None) -> None:
        out = self.path.parent.parent
        running = _running(*found, self.shard[1] if self.shard else None) if found else Running()
        if running.shard_count is not None and self._parent_of_processes():
            running = Running(shard=(0, running.shard_count))
        who = self._describe(running)
        who = f" ({who})" if who else ""
        if running.unsharded:
            what = f"an ego4d-dl run without --shard is writing into {out}{who}"
            todo = (
                "wait for it to finish (or stop it with Ctrl-C), then run again; to split "
                "the work, start every process with --shard K/N and the same N"
            )
        elif running.shard is not None and running.shard[0] == 0:
            # "Shard 0 of N" is the parent of a run with --processes N (processes.py).
            what = f"an ego4d-dl run with --processes {running.shard[1]} is writing into {out}"
            todo = "wait for it to finish (or stop it with Ctrl-C), then run again"
        elif running.shard is not None:
            k, n = running.shard
            what = f"shard {k}/{n} is already running in {out}{who}"
            todo = f"each process of a sharded download needs its own K in --shard K/{n}"
        elif running.shard_count is not None:
            n = running.shard_count
            what = f"ego4d-dl runs with --shard K/{n} are writing into {out}{who}"
            todo = (
                f"join them with --shard K/{n} (another K), or wait for them to finish; "
                "runs with different N, or without --shard, would write the same files"
                if self.shard is not None
                else f"wait for them to finish, or join them with --shard K/{n}"
            )
        else:
            what = f"another ego4d-dl is writing into {out}{who}"
            todo = "wait for it to finish"
        raise RunConflictError(f"{what}: {todo}")

    def _parent_of_processes(self) -> bool:
        """Whether the shards running are a ``--processes N`` run's workers: their parent
        holds the claim of shard 0, which no ``--shard K/N`` can take."""
        try:
            return self._fd >= 0 and _conflict(self._fd, fcntl.F_WRLCK, _K_BASE, 1) is not None
        except (LocksUnsupported, OSError):
            return False

    def release(self) -> None:
        """Give the claim up (closing the lock file releases every lock on it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
