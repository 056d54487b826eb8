"""An adaptive cap on requests in flight: halves under throttling, grows back one by one.

AIMD, as TCP does: a 503 SlowDown halves the limit (at most once per cooldown, so one burst of
simultaneous 503s counts once), and every ``limit`` successful requests raise it by one, up to
the user's ``--concurrency``. Imports nothing from the package.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

__all__ = ["AdaptiveLimiter"]


class AdaptiveLimiter:
    """A semaphore whose size moves between 1 and ``maximum``."""

    def __init__(
        self,
        maximum: int,
        *,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[int, str], None] | None = None,
    ) -> None:
        if maximum < 1:
            raise ValueError("maximum must be at least 1")
        self.maximum = maximum
        self.limit = maximum
        self.in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._last_cut = -float("inf")
        self._successes = 0
        self._on_change = on_change

    async def acquire(self) -> None:
        """Wait for a free slot."""
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # The slot was handed to us just as we were cancelled: pass it on.
                self.release()
            elif fut in self._waiters:
                # Not yet passed over: a release since the cancel pops it as done and skips it.
                self._waiters.remove(fut)
            raise

    def release(self) -> None:
        """Return a slot and hand free ones to waiters."""
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_use += 1
                fut.set_result(None)

    def on_throttle(self) -> None:
        """The server asked us to slow down."""
        now = self._clock()
        if now - self._last_cut < self._cooldown_s or self.limit == 1:
            return
        self._last_cut = now
        self._successes = 0
        self.limit = max(1, self.limit // 2)
        if self._on_change:
            self._on_change(self.limit, "throttled by the server")

    def on_success(self) -> None:
        """A request went through; after ``limit`` of them, allow one more in flight."""
        if self.limit >= self.maximum:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit += 1
            self._wake()
            if self._on_change:
                self._on_change(self.limit, "recovering")
