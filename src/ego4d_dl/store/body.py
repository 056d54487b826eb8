"""A ranged GET's body read with a per-read stall timeout and an exact length check."""

from __future__ import annotations

import asyncio

import aiohttp

from ..errors import TransientError
from .values import HttpBody

__all__ = ["BodyReader"]


async def _next_chunk(stream: HttpBody) -> bytes:
    """The next buffer as aiohttp received it; ``b""`` at the end of the body.

    Not ``readany``: when the event loop falls behind, several buffers wait, and ``readany``
    joins them, a copy of every byte on the busiest thread (py-spy: ~10 % of the event loop
    on ``large``). ``pwritev`` and MD5 take the buffers one by one anyway.
    """
    while True:
        data, end_of_http_chunk = await stream.readchunk()
        # (b"", True) only marks a chunk boundary of a chunked body; (b"", False) is the end.
        if data or not end_of_http_chunk:
            return data


class BodyReader:
    """Reads a body stream with a per-read stall timeout and an exact length check."""

    __slots__ = ("_expected", "_key", "_received", "_stall_timeout_s", "_stream", "_where")

    def __init__(
        self, stream: HttpBody, *, expected: int, key: str, where: str, stall_s: float
    ) -> None:
        self._stream = stream
        self._expected = expected
        self._received = 0
        self._key = key
        self._where = where
        self._stall_timeout_s = stall_s

    async def read(self, max_bytes: int) -> bytes:
        remaining = self._expected - self._received
        if remaining <= 0:
            return b""
        try:
            async with asyncio.timeout(self._stall_timeout_s):
                if max_bytes >= remaining:
                    chunk = await _next_chunk(self._stream)
                else:
                    chunk = await self._stream.read(max_bytes)
        except TimeoutError:
            raise TransientError(
                self._key,
                f"{self._where}: stalled, no bytes for {self._stall_timeout_s:g}s",
                stalled=True,
            ) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransientError(self._key, f"{self._where}: {type(exc).__name__}: {exc}") from exc
        if not chunk:
            raise TransientError(
                self._key,
                f"{self._where}: body ended after {self._received} of {self._expected} bytes",
            )
        if len(chunk) > remaining:
            raise TransientError(
                self._key, f"{self._where}: body is longer than the {self._expected} bytes asked"
            )
        self._received += len(chunk)
        return chunk
