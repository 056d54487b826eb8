"""The engine's requests: ranged GETs streamed in order and resumed from the first byte not yet
consumed, and metadata HEADs, all under the run's one retry loop, limiter and key renewal."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..errors import RetriesExhaustedError, TransientError
from ..events import BytesReceived, EventSink, RangeRetried
from ..limiter import AdaptiveLimiter
from ..retry import KeyRenewal, retry_call
from ..store import ObjectHead, ObjectStore, RangeBody
from .state import Counters, EngineSettings, Transfer

__all__ = ["Requests"]

T = TypeVar("T")


class Requests:
    """How one run asks the store: every retry reported, throttling fed to the limiter."""

    def __init__(
        self,
        *,
        store: ObjectStore,
        settings: EngineSettings,
        sink: EventSink,
        limiter: AdaptiveLimiter,
        counters: Counters,
        keys: KeyRenewal,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        throttle: Callable[[int], Awaitable[object]] | None = None,
    ) -> None:
        """``throttle(n)``, if given, is awaited before each chunk of ``n`` bytes is read: the
        shared ``--max-bandwidth`` token bucket."""
        self.store = store
        self._settings = settings
        self._sink = sink
        self.limiter = limiter
        self._counters = counters
        self._keys = keys
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._throttle = throttle

    async def receive(
        self,
        obj: Transfer,
        start: int,
        stop: int,
        consume: Callable[[int, list[bytes]], Awaitable[None]],
    ) -> None:
        """Stream bytes ``[start, stop)`` of the object to ``consume(offset, chunks)`` in order,
        retrying transient failures from the first byte not yet consumed."""
        offset = start

        async def attempt() -> None:
            nonlocal offset
            sent = self._clock()
            async with self.store.get_range(
                obj.planned.bucket,
                obj.key,
                start=offset,
                stop=stop,
                size_bytes=obj.size_bytes,
                etag=obj.etag,
            ) as body:
                self.limiter.on_first_byte(self._clock() - sent)
                while offset < stop:
                    chunks, size = await self._read_chunks(body, stop - offset)
                    await consume(offset, chunks)
                    offset += size
                    obj.fetched_bytes += size
                    self._counters.bytes_fetched += size
                    self.limiter.on_bytes(size)
                    self._sink(BytesReceived(dataset=obj.dataset, key=obj.key, count=size))
            self.limiter.on_success()

        def retried(exc: BaseException, failures: int, delay: float) -> None:
            throttled = isinstance(exc, TransientError) and exc.throttled
            if throttled:
                self.limiter.on_throttle()
            self._counters.retries += 1
            self._sink(
                RangeRetried(
                    dataset=obj.dataset,
                    key=obj.key,
                    start=offset,
                    stop=stop,
                    attempt=failures,
                    delay_s=delay,
                    reason=str(exc),
                    throttled=throttled,
                    stalled=isinstance(exc, TransientError) and exc.stalled,
                )
            )

        try:
            await self._retrying(attempt, retried)
        except TransientError as exc:
            # The endpoint answered, badly, every time; a NetworkError (unreachable all
            # along) goes up as it is and stops the run, to resume later.
            attempts = self._settings.retry.max_attempts
            raise RetriesExhaustedError(
                obj.key, f"{exc} (gave up after {attempts} attempts)"
            ) from exc

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """A metadata request with the run's retry policy (HEADs for layouts and restarts)."""

        def retried(exc: BaseException, failures: int, delay: float) -> None:
            self._counters.retries += 1

        try:
            return await self._retrying(make, retried)
        except TransientError as exc:
            raise RetriesExhaustedError(exc.key, str(exc)) from exc

    async def limited_head(self, make: Callable[[], Awaitable[ObjectHead]]) -> ObjectHead:
        """A layout HEAD: one request slot, the run's retries and key renewal."""
        await self.limiter.acquire()
        try:
            return await self.call(make)
        finally:
            self.limiter.release()

    def _retrying(
        self,
        make: Callable[[], Awaitable[T]],
        retried: Callable[[BaseException, int, float], None],
    ) -> Awaitable[T]:
        return retry_call(
            make,
            policy=self._settings.retry,
            sleep=self._sleep,
            rng=self._rng,
            on_retry=retried,
            keys=self._keys,
        )

    async def _read_chunks(self, body: RangeBody, remaining: int) -> tuple[list[bytes], int]:
        """At least ``chunk_bytes`` (fewer only at the end) as received, and their length.

        Few, large hops to the writer thread; the pieces are written with one ``pwritev``
        rather than joined, because joining 1 MiB costs a fresh mmap, its page faults and a
        copy (measured: see BENCHMARKS.md). Under ``--max-bandwidth`` exactly the paced
        amount is read instead: a buffer may then be split (a copy, cheap at a capped rate),
        but no read runs ahead of the bucket by up to a socket read (1 MiB) per request.
        """
        want = min(self._settings.chunk_bytes, remaining)
        paced = self._throttle is not None
        if self._throttle is not None:
            await self._throttle(want)
        chunks: list[bytes] = []
        got = 0
        while got < want:
            data = await body.read((want if paced else remaining) - got)
            chunks.append(data)
            got += len(data)
        return chunks, got
