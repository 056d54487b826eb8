"""How to verify an object and how to cut it into ranges; pure.

S3 ETags come in two shapes. A single-part upload's ETag is the MD5 of the bytes. A multipart
upload's is ``md5(md5(part 1) || ... || md5(part N))-N`` over the raw 16-byte digests, which is
why the ``...-58`` ETag of an Ego4D video never matches ``md5sum``: to check it we must know
the part layout and hash each part. S3 allows 1 to 10,000 parts, so an ``-N`` outside that
range is malformed (a hostile endpoint could otherwise have N part HEADs made at once) and
proves nothing, like anything else that is not MD5-derived (SSE-KMS, some mirrors): then size
and any ``x-amz-checksum-*`` are all there is.

Ranges are half-open ``(start, stop)`` byte intervals. Imports nothing from the package.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "MAX_PARTS",
    "Piece",
    "VerifyLevel",
    "composite_etag",
    "etag_kind",
    "guess_layout",
    "merge_ranges",
    "missing_ranges",
    "multipart_count",
    "part_bounds",
    "plan_pieces",
]

_MD5_RE = re.compile(r"[0-9a-f]{32}")
# At most five digits without a leading zero: never a huge int() from a hostile ETag.
_MULTIPART_RE = re.compile(r"[0-9a-f]{32}-([1-9][0-9]{0,4})")
# S3's own limit on the parts of a multipart upload.
MAX_PARTS = 10_000

Range = tuple[int, int]


class VerifyLevel(StrEnum):
    """How strongly a file was checked, strongest first."""

    MD5 = "md5"  # single-part ETag == MD5 of the file
    COMPOSITE = "composite-md5"  # multipart ETag recomputed from per-part MD5s
    CHECKSUM = "checksum"  # an x-amz-checksum-* of the object (ETag not MD5-derived)
    SIZE = "size"  # size only: --verify size, an opaque ETag, or adopted files


def etag_kind(etag: str) -> VerifyLevel:
    """What an ETag can prove: MD5, composite MD5, or nothing beyond size."""
    if _MD5_RE.fullmatch(etag):
        return VerifyLevel.MD5
    if multipart_count(etag) is not None:
        return VerifyLevel.COMPOSITE
    return VerifyLevel.SIZE


def multipart_count(etag: str) -> int | None:
    """``N`` of a ``<hex>-N`` ETag with 1 <= N <= ``MAX_PARTS``, else ``None``."""
    match = _MULTIPART_RE.fullmatch(etag)
    if match is None:
        return None
    count = int(match[1])
    return count if count <= MAX_PARTS else None


def composite_etag(part_md5s: Sequence[bytes]) -> str:
    """The ETag S3 gives a multipart upload whose parts have these raw MD5 digests."""
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


def guess_layout(size_bytes: int, first_part_bytes: int, count: int) -> tuple[int, ...] | None:
    """Part sizes if every part but the last has the first one's size, when that adds up.

    Returns ``None`` when the sizes cannot be uniform. A uniform guess can still be wrong
    (parts 5, 4, 6, 3 add up like 5, 5, 5, 3); the composite ETag check catches that, and the
    engine then learns the true layout part by part.
    """
    if count < 1 or first_part_bytes <= 0:
        return None
    if count == 1:
        return (size_bytes,) if first_part_bytes == size_bytes else None
    last = size_bytes - first_part_bytes * (count - 1)
    if not 0 < last <= first_part_bytes:
        return None
    return (first_part_bytes,) * (count - 1) + (last,)


def part_bounds(layout: Sequence[int]) -> list[Range]:
    """``(5, 7, 3)`` -> ``[(0, 5), (5, 12), (12, 15)]``."""
    bounds = []
    offset = 0
    for size in layout:
        bounds.append((offset, offset + size))
        offset += size
    return bounds


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, non-overlapping, non-adjacent union of ``ranges`` (empty ones dropped)."""
    out: list[Range] = []
    for start, stop in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            if stop > out[-1][1]:
                out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out


def missing_ranges(size_bytes: int, done: Iterable[Range]) -> list[Range]:
    """The parts of ``[0, size_bytes)`` that ``done`` does not cover."""
    out = []
    cursor = 0
    for start, stop in merge_ranges(done):
        if start > cursor:
            out.append((cursor, min(start, size_bytes)))
        cursor = max(cursor, stop)
    if cursor < size_bytes:
        out.append((cursor, size_bytes))
    return [r for r in out if r[1] > r[0]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Piece:
    """One ranged GET: bytes ``[start, stop)`` that lie inside upload part ``part`` (0-based).

    ``whole_part`` says the piece is exactly its part, so the MD5 streamed while receiving it
    is that part's MD5 and the part need not be read back from disk.
    """

    start: int
    stop: int
    part: int
    whole_part: bool

    @property
    def size_bytes(self) -> int:
        """Length of the range."""
        return self.stop - self.start


def plan_pieces(layout: Sequence[int], todo: Iterable[Range], max_piece_bytes: int) -> list[Piece]:
    """Cut the ``todo`` ranges into GETs no larger than ``max_piece_bytes`` that never cross a
    part boundary (so every byte's part, and so its MD5, is known)."""
    if max_piece_bytes <= 0:
        raise ValueError("max_piece_bytes must be positive")
    bounds = part_bounds(layout)
    pieces: list[Piece] = []
    for start, stop in merge_ranges(todo):
        for index, (p_start, p_stop) in enumerate(bounds):
            lo, hi = max(start, p_start), min(stop, p_stop)
            if lo >= hi:
                continue
            whole = lo == p_start and hi == p_stop and hi - lo <= max_piece_bytes
            cursor = lo
            while cursor < hi:
                end = min(hi, cursor + max_piece_bytes)
                pieces.append(Piece(start=cursor, stop=end, part=index, whole_part=whole))
                cursor = end
    return pieces
