"""What an S3 ETag proves about a file's bytes, and how to recompute it; pure."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from enum import StrEnum

__all__ = [
    "MAX_PARTS",
    "Layout",
    "VerifyLevel",
    "composite_etag",
    "etag_kind",
    "guess_layout",
    "multipart_count",
]

_MD5_RE = re.compile(r"[0-9a-f]{32}")
# At most five digits without a leading zero: never a huge int() from a hostile ETag.
_MULTIPART_RE = re.compile(r"[0-9a-f]{32}-([1-9][0-9]{0,4})")
# S3's own limit on the parts of a multipart upload.
MAX_PARTS = 10_000

# Part sizes in bytes, and whether they are known (True) or a uniform guess (False). A layout
# of one part for an ``-N`` ETag (N > 1) means the server ignores part numbers: the composite
# ETag cannot be recomputed, only the size checked.
Layout = tuple[tuple[int, ...], bool]


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
