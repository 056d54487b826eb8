"""Direct writes (``O_DIRECT``) of a piece's whole aligned blocks, on local disks' filesystems."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import threading
from collections.abc import Callable, Sequence

__all__ = ["MIN_BYTES", "DirectRefused", "open_direct", "write_direct"]

# Through the page cache, every byte is copied into freshly allocated cache pages and written
# back later by whoever syncs: measured on the bench machine (a VM), 1.3-2.0 s of system CPU
# per GiB written and synced, against 0.13-0.19 s/GiB direct (the copy into the staging buffer
# included). Writes smaller than this stay buffered.
MIN_BYTES = 256 * 1024
_ALIGN = max(4096, mmap.PAGESIZE)

# statfs(2) f_type of the filesystems of local disks, where a direct write goes to the device
# and costs no more wall time than a buffered one synced: ext2/3/4, XFS, Btrfs, F2FS. Others
# keep the page cache: NFS sends direct writes to the server one by one and waits, Lustre
# and GPFS have their own rules, FUSE and tmpfs may refuse or ignore them.
_LOCAL_DISKS = frozenset({0xEF53, 0x58465342, 0x9123683E, 0xF2F52010})
_local_by_dev: dict[int, bool] = {}


class DirectRefused(Exception):
    """The filesystem refused a direct write (alignment, or no direct I/O after all)."""


class _StatFs(ctypes.Structure):
    # Only f_type is read; the rest is room for the kernel's struct statfs (120 bytes on
    # 64-bit Linux).
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_char * 248)]


def _on_local_disk(fd: int, dev: int) -> bool:
    known = _local_by_dev.get(dev)
    if known is None:
        known = False
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            buf = _StatFs()
            if libc.fstatfs(fd, ctypes.byref(buf)) == 0:
                known = (buf.f_type & 0xFFFFFFFF) in _LOCAL_DISKS
        _local_by_dev[dev] = known
    return known


def open_direct(fd: int, dev: int) -> int:
    """An ``O_DIRECT`` descriptor of the open file ``fd`` (the same file through
    ``/proc/self/fd``, whatever its name meanwhile), or -1 where direct writes are not used:
    no ``O_DIRECT`` or no ``/proc`` here, or not a local disk's filesystem."""
    o_direct = getattr(os, "O_DIRECT", 0)  # Linux (and a few others) only
    if not o_direct or not _on_local_disk(fd, dev):
        return -1
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_CLOEXEC | o_direct)
    except OSError:
        return -1


class _Staging(threading.local):
    buffer: memoryview | None = None


_staging = _Staging()


def _staging_buffer(size: int) -> memoryview:
    """This thread's page-aligned buffer of at least ``size`` bytes."""
    buffer = _staging.buffer
    if buffer is None or len(buffer) < size:
        rounded = -(-size // _ALIGN) * _ALIGN
        buffer = _staging.buffer = memoryview(mmap.mmap(-1, rounded))
    return buffer


def slices(views: Sequence[memoryview], lo: int, hi: int) -> list[memoryview]:
    """The bytes ``[lo, hi)`` of the concatenation of ``views``, as slices of them."""
    out: list[memoryview] = []
    at = 0
    for view in views:
        end = at + len(view)
        if end > lo and at < hi:
            out.append(view[max(lo - at, 0) : min(hi, end) - at])
        at = end
        if at >= hi:
            break
    return out


Buffered = Callable[[int, Sequence[bytes | memoryview], int], None]


def write_direct(
    direct: int, offset: int, chunks: Sequence[bytes], total: int, buffered: Buffered
) -> bool:
    """The aligned middle of ``[offset, offset + total)`` written to ``direct``, its unaligned
    ends with ``buffered(offset, buffers, length)`` (a direct write never shares a page with
    a buffered one of ours, so the page cache and the disk agree). ``False``, having written
    nothing, where the span holds no aligned block; ``DirectRefused``, having written
    nothing, where the filesystem refuses the direct write."""
    start = -(-offset // _ALIGN) * _ALIGN
    stop = (offset + total) // _ALIGN * _ALIGN
    if stop - start < _ALIGN:
        return False
    views = [memoryview(c) for c in chunks]
    staging = _staging_buffer(stop - start)
    pos = 0
    for piece in slices(views, start - offset, stop - offset):
        staging[pos : pos + len(piece)] = piece
        pos += len(piece)
    try:
        written = os.pwrite(direct, staging[:pos], start)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        raise DirectRefused from exc
    if written < pos:
        buffered(start + written, [staging[written:pos]], pos - written)
    for lo, hi in ((0, start - offset), (stop - offset, total)):
        if hi > lo:
            buffered(offset + lo, slices(views, lo, hi), hi - lo)
    return True
