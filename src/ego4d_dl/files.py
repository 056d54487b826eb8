"""The ``<dest>.part`` file of one download: positional writes, hashing, durable renames.

All functions block and are meant for worker threads (``asyncio.to_thread``): ``pwrite`` and
``hashlib`` release the GIL on large buffers, so writes and MD5s of many ranges proceed in
parallel without stalling the event loop. A file reaches its final path only through
``finalize_batch``: data made durable first, then the rename, then the folder. Imports
``errors`` only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import DiskFullError

__all__ = [
    "PART_SUFFIX",
    "PartFile",
    "finalize_batch",
    "fsync_dir",
    "hash_range",
    "part_path",
    "write_small_file",
]

PART_SUFFIX = ".part"
_HASH_BLOCK = 4 * 1024 * 1024
# pwritev takes at most IOV_MAX buffers (1024 on Linux).
_MAX_IOV = 512


def part_path(dest: Path) -> Path:
    """Where ``dest`` is assembled before it is verified."""
    return dest.with_name(dest.name + PART_SUFFIX)


def _disk_full(path: Path, exc: OSError) -> DiskFullError:
    return DiskFullError(
        f"no space left on device writing {path}; free some space and run the same command "
        "again to resume (nothing already downloaded is lost)"
    )


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_range(fd: int, start: int, stop: int) -> bytes:
    """MD5 digest of bytes ``[start, stop)`` of an open file, read in large blocks."""
    md5 = hashlib.md5()
    offset = start
    while offset < stop:
        block = os.pread(fd, min(_HASH_BLOCK, stop - offset), offset)
        if not block:
            break  # short file: the digest will not match, which is the point
        md5.update(block)
        offset += len(block)
    return md5.digest()


class PartFile:
    """An open ``.part`` file for one object version.

    Positional writes, hashes and syncs may run in several threads at once; ``close`` waits
    for them. That matters: a cancelled coroutine's worker thread may still be writing, and
    closing its descriptor under it could let the number be reused by another file.
    """

    def __init__(self, dest: Path, size_bytes: int, *, fresh: bool) -> None:
        """Open (``fresh``: truncate) the part file and reserve ``size_bytes`` on disk."""
        self.dest = dest
        self.path = part_path(dest)
        self.size_bytes = size_bytes
        self._users = 0
        self._idle = threading.Condition()
        dest.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if fresh else 0)
        self.fd = os.open(self.path, flags, 0o644)
        try:
            self._reserve()
        except BaseException:
            os.close(self.fd)
            raise

    @contextlib.contextmanager
    def _using(self) -> Iterator[int]:
        with self._idle:
            if self.fd < 0:
                raise OSError(errno.EBADF, f"{self.path} is closed")
            self._users += 1
            fd = self.fd
        try:
            yield fd
        finally:
            with self._idle:
                self._users -= 1
                self._idle.notify_all()

    def _reserve(self) -> None:
        # Reserving the space up front turns a disk that would fill up mid-run into one clear
        # error before any byte moves. Filesystems without fallocate (some NFS) get a sparse
        # file of the right length instead.
        current = os.fstat(self.fd).st_size
        if current > self.size_bytes:
            os.ftruncate(self.fd, self.size_bytes)
        if self.size_bytes == 0:
            return
        try:
            os.posix_fallocate(self.fd, 0, self.size_bytes)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise _disk_full(self.path, exc) from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            if current < self.size_bytes:
                os.ftruncate(self.fd, self.size_bytes)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Write ``data`` at ``offset`` (all of it)."""
        view = memoryview(data)
        try:
            with self._using() as fd:
                while view:
                    n = os.pwrite(fd, view, offset)
                    view = view[n:]
                    offset += n
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(self.path, exc) from None
            raise

    def write_and_hash(
        self, offset: int, chunks: Sequence[bytes], md5: hashlib._Hash | None
    ) -> None:
        """Write ``chunks`` one after another from ``offset`` and feed them to ``md5``, in
        one worker-thread hop and (mostly) one ``pwritev``."""
        if len(chunks) > _MAX_IOV:
            chunks = [b"".join(chunks)]  # a trickling server: many tiny reads
        try:
            with self._using() as fd:
                written = os.pwritev(fd, chunks, offset)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(self.path, exc) from None
            raise
        total = sum(len(c) for c in chunks)
        if written < total:
            # A short vectored write: finish the rest the plain way.
            rest = memoryview(b"".join(chunks))[written:]
            self.write(offset + written, rest)
        if md5 is not None:
            for chunk in chunks:
                md5.update(chunk)

    def hash(self, start: int, stop: int) -> bytes:
        """MD5 digest of ``[start, stop)`` as it is on disk now."""
        with self._using() as fd:
            return hash_range(fd, start, stop)

    def sync(self) -> None:
        """Flush written data to stable storage (before the journal records it)."""
        try:
            with self._using() as fd:
                os.fdatasync(fd)
        except OSError as exc:
            if exc.errno == errno.EBADF:
                return  # closed meanwhile: its data is synced by the rename batch instead
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(self.path, exc) from None
            raise

    def close(self) -> None:
        """Close the handle once no thread uses it (idempotent)."""
        with self._idle:
            while self._users:
                self._idle.wait()
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    def discard(self) -> None:
        """Close and delete the part file: its bytes are not worth keeping."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _syncfs(path: Path) -> bool:
    """``syncfs(2)`` on the filesystem holding ``path``; ``False`` where unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return bool(syncfs(fd) == 0)
    finally:
        os.close(fd)


# Above this many files in one batch, one syncfs is cheaper than an fsync per file.
_SYNCFS_MIN_FILES = 8


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finalize_batch(root: Path, renames: list[tuple[Path, Path]]) -> list[OSError | None]:
    """Durably move verified part files to their final names; one error slot per file.

    Data first (one ``syncfs`` for a large batch, else an ``fsync`` per file), then every
    rename, then one ``fsync`` per folder: after a power loss a final name never holds
    unwritten data, and the journal (committed by the caller afterwards) never calls a file
    complete that is not.
    """
    errors: list[OSError | None] = [None] * len(renames)
    if not renames:
        return errors
    if not (len(renames) >= _SYNCFS_MIN_FILES and _syncfs(root)):
        for i, (src, _) in enumerate(renames):
            try:
                _fsync_path(src)
            except OSError as exc:
                errors[i] = exc
    folders = set()
    for i, (src, dest) in enumerate(renames):
        if errors[i] is not None:
            continue
        try:
            src.replace(dest)
        except OSError as exc:
            errors[i] = exc
            continue
        folders.add(dest.parent)
    for folder in folders:
        fsync_dir(folder)
    return errors


def write_small_file(path: Path, chunks: Sequence[bytes], *, hash_it: bool) -> bytes:
    """Create ``path`` afresh holding ``chunks``; return their MD5 (``b""`` if not hashed).

    One worker-thread hop for a whole small file: create, write, hash, close. Its data is made
    durable with the batch it is renamed in (``finalize_batch``).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(path, exc) from None
        raise
    finally:
        os.close(fd)
    return hashlib.md5(data).digest() if hash_it else b""
