"""``store.body.BodyReader``: the per-read stall watchdog (one timer per body) and the exact
length check, on a stream fed by hand (the sandbox tests cover it over real HTTP)."""

from __future__ import annotations

import asyncio

import pytest

from ego4d_dl.errors import TransientError
from ego4d_dl.store.body import BodyReader


class _Stream:
    """An ``HttpBody`` that hands out queued buffers; ``b""`` ends it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def readchunk(self) -> tuple[bytes, bool]:
        data = await self.queue.get()
        return data, False

    async def read(self, n: int = -1) -> bytes:
        return await self.queue.get()


def _reader(stream: _Stream, expected: int, stall_s: float) -> BodyReader:
    return BodyReader(stream, expected=expected, key="k", where="b/k", stall_s=stall_s)


def test_slow_reads_each_within_the_stall_timeout_pass() -> None:
    """Reads 0.06 s apart under a 0.1 s watchdog: the body takes 4x the timeout, no read
    waits that long, so nothing trips (the timer follows each read's own start)."""

    async def main() -> list[bytes]:
        stream = _Stream()
        reader = _reader(stream, 8, stall_s=0.1)

        async def feed() -> None:
            for _ in range(8):
                await asyncio.sleep(0.06)
                stream.queue.put_nowait(b"x")

        feeder = asyncio.create_task(feed())
        got = [await reader.read(1 << 20) for _ in range(8)]
        await feeder
        return got

    assert asyncio.run(main()) == [b"x"] * 8


def test_a_read_that_waits_past_the_timeout_is_a_stall() -> None:
    async def main() -> float:
        stream = _Stream()
        reader = _reader(stream, 4, stall_s=0.1)
        stream.queue.put_nowait(b"ab")
        assert await reader.read(1 << 20) == b"ab"
        await asyncio.sleep(0.3)  # time between reads is the caller's, never a stall
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(TransientError) as caught:
            await reader.read(1 << 20)
        assert caught.value.stalled and "stalled" in str(caught.value)
        return loop.time() - began

    waited = asyncio.run(main())
    assert 0.09 <= waited < 0.5


def test_a_cancel_from_outside_stays_a_cancel() -> None:
    async def main() -> None:
        stream = _Stream()
        reader = _reader(stream, 4, stall_s=0.05)
        task = asyncio.create_task(reader.read(1 << 20))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_short_and_long_bodies_are_transient_errors() -> None:
    async def main() -> None:
        stream = _Stream()
        reader = _reader(stream, 4, stall_s=5)
        stream.queue.put_nowait(b"abc")
        stream.queue.put_nowait(b"")
        assert await reader.read(1 << 20) == b"abc"
        with pytest.raises(TransientError, match="body ended after 3 of 4 bytes"):
            await reader.read(1 << 20)
        longer = _reader(stream, 2, stall_s=5)
        stream.queue.put_nowait(b"abc")
        with pytest.raises(TransientError, match="longer than the 2 bytes"):
            await longer.read(1 << 20)
        done = _reader(stream, 1, stall_s=5)
        stream.queue.put_nowait(b"a")
        assert await done.read(1 << 20) == b"a"
        assert await done.read(1 << 20) == b""

    asyncio.run(main())
