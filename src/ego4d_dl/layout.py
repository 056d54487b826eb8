"""The upload part layout of an object, learnt with ``HEAD ?partNumber=N``."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from .errors import IntegrityError, RemoteChangedError
from .etags import Layout, guess_layout, multipart_count
from .retry import RetryPolicy, retry_call
from .store import ObjectHead, ObjectStore

__all__ = ["HeadRunner", "Layout", "exact_layout", "learn_layout", "retrying"]


# How a caller makes one HEAD: with its retry policy, its request limiter, its credentials
# renewal. The engine and ``check`` each bring their own.
HeadRunner = Callable[[Callable[[], Awaitable[ObjectHead]]], Awaitable[ObjectHead]]


def retrying(policy: RetryPolicy) -> HeadRunner:
    """A ``HeadRunner`` that retries transient failures by ``policy``."""

    async def run(make: Callable[[], Awaitable[ObjectHead]]) -> ObjectHead:
        return await retry_call(make, policy=policy, sleep=asyncio.sleep, rng=random.Random())

    return run


async def _head_part(
    store: ObjectStore, bucket: str, key: str, etag: str, n: int, run: HeadRunner
) -> ObjectHead:
    head = await run(lambda: store.head(bucket, key, part_number=n))
    if head.etag != etag:
        raise RemoteChangedError(key, f"{key}: ETag is now {head.etag}, not {etag}")
    return head


async def learn_layout(
    store: ObjectStore, bucket: str, key: str, *, etag: str, size_bytes: int, run: HeadRunner
) -> Layout:
    """The part sizes of the object version ``etag``: exact, or a uniform guess to be checked.

    A single-part (or non-multipart) ETag needs no request: the object is one part.
    """
    count = multipart_count(etag)
    if count is None or count == 1:
        return (size_bytes,), True
    head = await _head_part(store, bucket, key, etag, 1, run)
    if head.part_range is None or head.part_range == (0, size_bytes):
        # The server ignores PartNumber (some mirrors do): no layout can be learnt.
        return (size_bytes,), True
    first = head.part_range[1] - head.part_range[0]
    guess = guess_layout(size_bytes, first, count)
    if guess is not None:
        return guess, False
    return await exact_layout(store, bucket, key, etag=etag, size_bytes=size_bytes, run=run)


async def exact_layout(
    store: ObjectStore, bucket: str, key: str, *, etag: str, size_bytes: int, run: HeadRunner
) -> Layout:
    """Every part's size, one HEAD per part (for non-uniform uploads)."""
    count = multipart_count(etag) or 1
    if count == 1:
        return (size_bytes,), True

    async def one(n: int) -> int:
        head = await _head_part(store, bucket, key, etag, n, run)
        if head.part_range is None:
            raise IntegrityError(key, f"{key}: part {n} has no byte range")
        return head.part_range[1] - head.part_range[0]

    sizes = await asyncio.gather(*(one(n) for n in range(1, count + 1)))
    if sum(sizes) != size_bytes:
        raise IntegrityError(key, f"{key}: parts add up to {sum(sizes)} bytes, not {size_bytes}")
    return tuple(sizes), True
