"""The ``<dest>.part`` file of one download: owned, locked, written, hashed, durably renamed."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from . import directio
from .errors import DiskFullError
from .locks import LocksUnsupported, lock_file, open_plain_stat
from .ondisk import PART_SUFFIX, part_path

__all__ = [
    "PART_SUFFIX",
    "PartBusyError",
    "PartChangedError",
    "PartFile",
    "ensure_dir",
    "finalize_batch",
    "fsync_dir",
    "hash_range",
    "make_durable",
    "part_path",
    "write_small_part",
]

T = TypeVar("T")

# No aiofiles: a piece is written with one pwritev of the buffers it arrived in, in a thread the
# engine already hops to once per piece; aiofiles would add a hop per call and cannot pwritev.
_HASH_BLOCK = 4 * 1024 * 1024
# pwritev takes at most IOV_MAX buffers (1024 on Linux).
_MAX_IOV = 512


class PartBusyError(OSError):
    """Another process holds the ``.part`` file's lock: it is downloading this very file."""


class PartChangedError(OSError):
    """The path no longer names the inode we wrote (replaced, or given a second name)."""


def _disk_full(path: Path, exc: OSError) -> DiskFullError:
    return DiskFullError(
        f"no space left on device writing {path}; free some space and run the same command "
        "again to resume (nothing already downloaded is lost)"
    )


def fsync_dir(path: Path) -> None:
    """Make a rename (or a creation) in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """``mkdir -p`` whose new folders survive a power loss (each parent is synced).

    Folders that exist are taken as they are, links included: a dataset folder may be a link
    to another disk on purpose.
    """
    if path.is_dir():
        return
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    path.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        fsync_dir(created.parent)


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


@functools.lru_cache(maxsize=4096)
def _device_of(folder: Path) -> int:
    # Folders do not change filesystems during a run; a stat per file would cost ~2 % of
    # the CPU of 2,000 small files.
    return folder.stat().st_dev


class PartFile:
    """An open, locked ``.part`` file for one object version.

    Positional writes, hashes and syncs may run in several threads at once; ``close`` waits
    for them. That matters: a cancelled coroutine's worker thread may still be writing, and
    closing its descriptor under it could let the number be reused by another file.
    """

    def __init__(self, dest: Path, size_bytes: int, *, fresh: bool, reserve: bool = True) -> None:
        """Open (``fresh``: create or empty) the part file, lock it, reserve its size.

        Raises ``PartBusyError`` when another process holds its lock, ``OSError`` when a
        directory or special file is in the way or it is not on its folder's filesystem.
        """
        self.dest = dest
        self.path = part_path(dest)
        self.size_bytes = size_bytes
        self.discarded = False
        self.locked = True
        self._users = 0
        self._idle = threading.Condition()
        # The O_DIRECT descriptor of the same open file (write path); None: not opened yet,
        # -1: direct writes are not available here. ``_direct_refused``: the filesystem
        # refused one (the descriptor stays open until ``close``: another thread may use it).
        self._direct: int | None = None
        self._direct_refused = False
        flags = os.O_RDWR | (os.O_CREAT if fresh else 0)
        try:
            self.fd, st = open_plain_stat(self.path, flags)
        except FileNotFoundError:
            if not fresh:
                raise
            ensure_dir(dest.parent)
            self.fd, st = open_plain_stat(self.path, flags)
        self.ino, self.dev = st.st_ino, st.st_dev
        try:
            self._claim()
            if fresh and st.st_size:
                os.ftruncate(self.fd, 0)
            if reserve:
                self._reserve(0 if fresh else st.st_size)
        except BaseException:
            os.close(self.fd)
            raise

    def _claim(self) -> None:
        try:
            if not lock_file(self.fd):
                raise PartBusyError(
                    errno.EBUSY,
                    f"{self.path} is being written by another process (its lock is held)",
                )
        except LocksUnsupported:
            self.locked = False  # the folder claim (``journal``) already warned about it
        if self.dev != _device_of(self.path.parent):
            raise OSError(errno.EXDEV, f"{self.path} is on another filesystem than its folder")

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

    def _reserve(self, current: int) -> None:
        # Reserving the space up front turns a disk that would fill up mid-run into one clear
        # error before any byte moves. Filesystems without fallocate (some NFS) get a sparse
        # file of the right length instead.
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
        one worker-thread hop: the whole aligned blocks among them with one direct write
        (where the filesystem takes them), the rest with one buffered ``pwritev``."""
        total = sum(len(c) for c in chunks)
        try:
            with self._using() as fd:
                direct = -1
                if total >= directio.MIN_BYTES and not self._direct_refused:
                    direct = self._direct_fd(fd)
                if direct < 0 or not self._write_direct(fd, direct, offset, chunks, total):
                    self._write_buffered(fd, offset, chunks, total)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(self.path, exc) from None
            raise
        if md5 is not None:
            for chunk in chunks:
                md5.update(chunk)

    def _write_buffered(
        self, fd: int, offset: int, chunks: Sequence[bytes | memoryview], total: int
    ) -> None:
        if len(chunks) > _MAX_IOV:
            chunks = [b"".join(chunks)]  # a trickling server: many tiny reads
        written = os.pwritev(fd, chunks, offset)
        if written < total:
            # A short vectored write: finish the rest the plain way.
            rest = memoryview(b"".join(chunks))[written:]
            while rest:
                n = os.pwrite(fd, rest, offset + written)
                rest = rest[n:]
                written += n

    def _direct_fd(self, fd: int) -> int:
        """The part's ``O_DIRECT`` descriptor, opened on first use; -1 where there is none."""
        if self._direct is None:
            with self._idle:
                if self._direct is None:
                    self._direct = directio.open_direct(fd, self.dev)
        return self._direct

    def _write_direct(
        self, fd: int, direct: int, offset: int, chunks: Sequence[bytes], total: int
    ) -> bool:
        """``directio.write_direct``; a refusal turns the part to buffered writes for good
        (the direct descriptor stays open until ``close``: another thread may be using it)."""

        def buffered(at: int, buffers: Sequence[bytes | memoryview], length: int) -> None:
            self._write_buffered(fd, at, buffers, length)

        try:
            return directio.write_direct(direct, offset, chunks, total, buffered)
        except directio.DirectRefused:
            self._direct_refused = True
            return False

    def hash(self, start: int, stop: int) -> bytes:
        """MD5 digest of ``[start, stop)`` as it is on disk now."""
        with self._using() as fd:
            return hash_range(fd, start, stop)

    def read_with(self, read: Callable[[int], T]) -> T:
        """``read(fd)`` on the open part (for whole-file checksums), safe against ``close``."""
        with self._using() as fd:
            return read(fd)

    def size_on_disk(self) -> int:
        """The file's length now."""
        with self._using() as fd:
            return os.fstat(fd).st_size

    def intact(self) -> bool:
        """Whether the path still names the inode we wrote, and nothing else names it: then
        the bytes at the path are the ones we wrote and hashed (we held its lock throughout)."""
        try:
            with self._using() as fd:
                mine = os.fstat(fd)
            there = os.lstat(self.path)
        except OSError:
            return False
        return (
            mine.st_nlink == 1
            and (there.st_ino, there.st_dev) == (self.ino, self.dev)
            and there.st_nlink == 1
        )

    def sync(self) -> bool:
        """Flush written data to stable storage (before the journal records it).

        A part closed meanwhile (its transfer failed) is reopened by name to be synced, if the
        name still holds our inode; ``False`` when its data can no longer be made durable, and
        its ranges must then not be journaled.
        """
        try:
            with self._using() as fd:
                os.fdatasync(fd)
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _disk_full(self.path, exc) from None
            if exc.errno != errno.EBADF:
                raise
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            if (st.st_ino, st.st_dev) != (self.ino, self.dev):
                return False
            os.fdatasync(fd)
            return True
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the handle (and so release the lock) once no thread uses it (idempotent)."""
        with self._idle:
            while self._users:
                self._idle.wait()
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            if self._direct is not None and self._direct >= 0:
                os.close(self._direct)
            self._direct = -1

    def discard(self) -> None:
        """Delete the part file (if its name is still ours) and close it: its bytes are not
        worth keeping. Its ranges are then never journaled."""
        self.discarded = True
        with contextlib.suppress(OSError):
            there = os.lstat(self.path)
            if (there.st_ino, there.st_dev) == (self.ino, self.dev):
                self.path.unlink()
        self.close()


def write_small_part(
    dest: Path, chunks: Sequence[bytes], *, hash_it: bool
) -> tuple[PartFile, bytes]:
    """A whole small object's ``.part`` in one worker-thread hop: create, lock, write, hash.

    Returns the part (still open and locked, for ``finalize_batch``) and the MD5 of the bytes
    (``b""`` if not hashed). Its data is made durable with the batch it is renamed in.
    """
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    part = PartFile(dest, len(data), fresh=True, reserve=False)
    try:
        part.write(0, data)
    except BaseException:
        part.discard()
        raise
    return part, hashlib.md5(data).digest() if hash_it else b""


def _syncfs(fd: int) -> bool:
    """``syncfs(2)`` of the filesystem holding the open file ``fd``; ``False`` where absent."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return False
    return bool(syncfs(fd) == 0)


# Above this many files of one filesystem in one batch, one syncfs is cheaper than an fsync
# per file.
_SYNCFS_MIN_FILES = 8


def make_durable(
    parts: Sequence[PartFile], *, finished: Sequence[PartFile] = ()
) -> dict[int, OSError | None]:
    """Make the written data of ``parts`` and ``finished`` durable; per part (by ``id``):
    ``None`` once it is, else why not (``PartChangedError`` where its name no longer holds
    the inode we wrote).

    One ``syncfs`` per filesystem holding many finished files (a batch of small files; so
    dataset folders linked or mounted onto other disks are synced too), which covers every
    part there; else a ``sync`` of each (which reopens a part closed meanwhile by name, if
    the name still holds our inode). Parts still being written never cause a ``syncfs`` (it
    syncs other programs' data of that filesystem too), they ride along with one.
    """
    outcome: dict[int, OSError | None] = {}
    by_fs: dict[int, list[PartFile]] = {}
    many: dict[int, int] = {}
    for part in {id(p): p for p in (*finished, *parts)}.values():
        by_fs.setdefault(part.dev, []).append(part)
    for part in {id(p): p for p in finished}.values():
        many[part.dev] = many.get(part.dev, 0) + 1
    for dev, group in by_fs.items():
        if many.get(dev, 0) >= _SYNCFS_MIN_FILES and _syncfs_any(group):
            outcome.update((id(part), None) for part in group)
            continue
        for part in group:
            try:
                ok = part.sync()
            except OSError as exc:
                outcome[id(part)] = exc
                continue
            outcome[id(part)] = (
                None if ok else PartChangedError(errno.ESTALE, f"{part.path} is no longer ours")
            )
    return outcome


def _syncfs_any(group: Sequence[PartFile]) -> bool:
    """``syncfs`` through the first part of ``group`` still open; ``False`` if none is or
    the call is refused."""
    for part in group:
        with contextlib.suppress(OSError), part._using() as fd:
            return _syncfs(fd)
    return False


def finalize_batch(
    items: Sequence[tuple[PartFile, Path]],
    *,
    durable: Mapping[int, OSError | None] | None = None,
) -> list[os.stat_result | OSError]:
    """Durably move verified part files to their final names; one result slot per file: the
    final file's ``stat``, or why it could not be moved.

    Data first (``make_durable``, unless the caller did it: ``durable`` is its outcome), then,
    for each file whose name still holds the inode we wrote, the rename, then one ``fsync``
    per folder: after a power loss a final name never holds unwritten data, and the journal
    (committed by the caller afterwards) never calls a file complete that is not. The parts
    stay open (and locked); the caller closes them once the journal has recorded them.
    """
    if durable is None:
        durable = make_durable((), finished=[part for part, _ in items])
    results: list[os.stat_result | OSError | None] = [
        durable.get(id(part), OSError(errno.EIO, "not synced")) for part, _ in items
    ]
    folders = set()
    for i, (part, dest) in enumerate(items):
        if results[i] is not None:
            continue
        if not part.intact():
            results[i] = PartChangedError(
                errno.ESTALE,
                f"{part.path} was replaced or given another name while it was written",
            )
            continue
        try:
            part.path.replace(dest)  # rename(2) replaces a link at ``dest``, never follows it
            with part._using() as fd:
                results[i] = os.fstat(fd)
        except OSError as exc:
            results[i] = exc
            continue
        folders.add(dest.parent)
    for folder in folders:
        fsync_dir(folder)
    return [r if r is not None else OSError(errno.EIO, "not finalized") for r in results]
