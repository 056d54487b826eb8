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
    """Reads a body stream with a per-read stall timeout and an exact length check.

    The stall watchdog is one loop timer per body, not an ``asyncio.timeout`` per read (a
    ``Timeout`` object, a timer armed and cancelled for every buffer): each read notes when it
    began, and the timer, when it fires, cancels the reading task if the read under way began
    ``stall_s`` ago or more, else sleeps again until that read's own deadline. Between reads
    (the caller writing) nothing is timed, as before.
    """

    __slots__ = (
        "_expected",
        "_key",
        "_reading",
        "_received",
        "_since",
        "_stall_timeout_s",
        "_stalled",
        "_stream",
        "_task",
        "_timer",
        "_where",
    )

    def __init__(
        self, stream: HttpBody, *, expected: int, key: str, where: str, stall_s: float
    ) -> None:
        self._stream = stream
        self._expected = expected
        self._received = 0
        self._key = key
        self._where = where
        self._stall_timeout_s = stall_s
        self._reading = False
        self._since = 0.0  # loop time at which the read under way began
        self._stalled = False
        self._task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def read(self, max_bytes: int) -> bytes:
        remaining = self._expected - self._received
        if remaining <= 0:
            return b""
        self._arm()
        self._reading = True
        try:
            if max_bytes >= remaining:
                chunk = await _next_chunk(self._stream)
            else:
                chunk = await self._stream.read(max_bytes)
        except asyncio.CancelledError:
            self._disarm()
            if self._stalled and self._task is not None and self._task.uncancel() == 0:
                raise self._stall_error() from None
            raise
        except (aiohttp.ClientError, ConnectionError) as exc:
            self._disarm()
            raise TransientError(self._key, f"{self._where}: {type(exc).__name__}: {exc}") from exc
        finally:
            self._reading = False
        if not chunk:
            self._disarm()
            raise TransientError(
                self._key,
                f"{self._where}: body ended after {self._received} of {self._expected} bytes",
            )
        if len(chunk) > remaining:
            self._disarm()
            raise TransientError(
                self._key, f"{self._where}: body is longer than the {self._expected} bytes asked"
            )
        self._received += len(chunk)
        if self._received == self._expected:
            self._disarm()
        return chunk

    def _stall_error(self) -> TransientError:
        return TransientError(
            self._key,
            f"{self._where}: stalled, no bytes for {self._stall_timeout_s:g}s",
            stalled=True,
        )

    def _arm(self) -> None:
        """Note when this read began; start the watchdog if it is not running."""
        loop = asyncio.get_running_loop()
        self._since = loop.time()
        if self._timer is None:
            self._task = asyncio.current_task()
            self._timer = loop.call_at(self._since + self._stall_timeout_s, self._watch)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _watch(self) -> None:
        """The watchdog's tick: cancel a read that has waited ``stall_s``, else wait on."""
        self._timer = None
        if not self._reading or self._task is None:
            return  # re-armed by the next read
        deadline = self._since + self._stall_timeout_s
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            self._stalled = True
            self._task.cancel()
        else:
            self._timer = loop.call_at(deadline, self._watch)
