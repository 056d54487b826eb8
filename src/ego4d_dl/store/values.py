"""What the store answers, as frozen values of our own (no botocore or aiohttp type), and the
``ObjectStore`` protocol the planner and the engine are written against."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "BucketProbe",
    "HttpBody",
    "ListPage",
    "ListedObject",
    "ObjectHead",
    "ObjectStore",
    "RangeBody",
    "RangeResponse",
    "normalise_etag",
]


def normalise_etag(raw: str) -> str:
    """An ETag as we store and compare it: no quotes, no weak ``W/`` prefix, lower case."""
    etag = raw.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"').lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectHead:
    """What a HEAD tells about an object (or, with a part number, about one upload part)."""

    bucket: str
    key: str
    size_bytes: int
    etag: str
    parts_count: int | None = None
    # With a part number: the byte range [start, stop) of that part.
    part_range: tuple[int, int] | None = None
    checksums: Mapping[str, str] = field(default_factory=dict)
    # x-amz-version-id: None for an object of a bucket that never had versioning.
    version_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ListedObject:
    """One entry of a ListObjectsV2 page."""

    key: str
    size_bytes: int
    etag: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListPage:
    """One ListObjectsV2 page and the token of the next (``None`` on the last page)."""

    items: tuple[ListedObject, ...]
    next_token: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BucketProbe:
    """What one HeadBucket said about a bucket."""

    bucket: str
    status: int  # HTTP status: 200, 403 (no ListBucket permission), 404, 301, ...
    code: str  # the error code of a failed answer, "" on success
    region: str | None  # x-amz-bucket-region, when the server names it
    server_date: float | None  # the server's Date header as a Unix time


class HttpBody(Protocol):
    """An answer's body as the HTTP client streams it (aiohttp's ``StreamReader`` is one)."""

    async def readchunk(self) -> tuple[bytes, bool]: ...

    async def read(self, n: int = -1) -> bytes: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeResponse:
    """The answer to a ranged GET, whichever path made it (hand-signed or botocore's).

    ``release`` ends the exchange: a body read to its end returns the connection to the
    pool, one left early drops it.
    """

    status: int
    etag: str  # normalised; "" when the answer names none
    content_length: int  # -1 when the answer gives none
    content_range: str  # "" when the answer gives none
    body: HttpBody
    release: Callable[[], None]


class RangeBody(Protocol):
    """A response body being streamed; ``read`` returns ``b""`` at the end."""

    async def read(self, max_bytes: int) -> bytes: ...


class ObjectStore(Protocol):
    """What the planner and the engine need from S3; ``S3Store`` is the real one."""

    async def head(
        self, bucket: str, key: str, *, part_number: int | None = None, checksums: bool = False
    ) -> ObjectHead: ...

    async def list_page(
        self, bucket: str, *, prefix: str, start_after: str = "", token: str | None = None
    ) -> ListPage: ...

    async def get_bytes(self, bucket: str, key: str, *, cached: bytes | None = None) -> bytes:
        """A whole small object; bytes that contradict an MD5 ETag are a ``TransientError``.
        ``cached``: a copy kept earlier, returned as it is when the object's ETag is its MD5
        (the object is then not transferred again)."""
        ...

    async def list_folders(self, bucket: str, *, prefix: str) -> tuple[str, ...]: ...

    def get_range(
        self, bucket: str, key: str, *, start: int, stop: int, size_bytes: int, etag: str
    ) -> contextlib.AbstractAsyncContextManager[RangeBody]: ...
