"""The cap on requests in flight: a semaphore whose size moves.

Fixed (the user's ``--concurrency N``): AIMD under throttling, as TCP does: a 503 SlowDown
halves the limit (at most once per cooldown, so one burst of simultaneous 503s counts once),
and every ``limit`` successful requests raise it by one, back up to N. Adaptive (the default):
a ``ConcurrencyController`` decides from the requests' bytes, first-byte times and throttling,
and the limiter applies its decisions. Imports only ``concurrency`` and ``events``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from .concurrency import ConcurrencyController, ControllerSettings, Decision
from .events import ConcurrencyCause, ConcurrencyChanged

__all__ = ["AdaptiveLimiter", "make_limiter"]


class AdaptiveLimiter:
    """A semaphore whose size moves between 1 and ``maximum``.

    With a ``controller`` the controller sets the size; without one it is ``maximum``, halved
    under throttling and grown back. ``on_change`` hears every move.
    """

    def __init__(
        self,
        maximum: int,
        *,
        controller: ConcurrencyController | None = None,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[ConcurrencyChanged], None] | None = None,
    ) -> None:
        if maximum < 1:
            raise ValueError("maximum must be at least 1")
        self.maximum = maximum
        self.controller = controller
        self.limit = controller.limit if controller is not None else maximum
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
            self._slots_changed()
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
        self._slots_changed()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_use += 1
                fut.set_result(None)

    def _slots_changed(self) -> None:
        if self.controller is not None:
            self._apply(self.controller.on_slots(self.in_use, self._clock()))

    def _apply(self, decision: Decision | None) -> None:
        if decision is None:
            return
        self.limit = decision.limit
        self._wake()
        if self._on_change:
            self._on_change(
                ConcurrencyChanged(
                    limit=decision.limit, reason=decision.reason, cause=decision.cause
                )
            )

    def on_first_byte(self, ttfb_s: float) -> None:
        """A GET's first byte came ``ttfb_s`` after it was sent."""
        if self.controller is not None:
            self._apply(self.controller.on_first_byte(ttfb_s, self._clock()))

    def on_bytes(self, count: int) -> None:
        """``count`` bytes of a response arrived."""
        if self.controller is not None:
            self._apply(self.controller.on_bytes(count, self._clock()))

    def on_throttle(self) -> None:
        """The server asked us to slow down."""
        now = self._clock()
        if self.controller is not None:
            self._apply(self.controller.on_throttle(now))
            return
        if now - self._last_cut < self._cooldown_s or self.limit == 1:
            return
        self._last_cut = now
        self._successes = 0
        self._apply(
            Decision(
                limit=max(1, self.limit // 2),
                cause=ConcurrencyCause.THROTTLED,
                reason="throttled by the server",
            )
        )

    def on_success(self) -> None:
        """A request went through; after ``limit`` of them, allow one more in flight (fixed
        limit only: the controller grows an adaptive one)."""
        if self.controller is not None or self.limit >= self.maximum:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self._apply(
                Decision(
                    limit=self.limit + 1, cause=ConcurrencyCause.RECOVERING, reason="recovering"
                )
            )


def make_limiter(
    concurrency: int,
    max_concurrency: int | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    on_change: Callable[[ConcurrencyChanged], None] | None = None,
) -> AdaptiveLimiter:
    """Exactly ``concurrency`` requests in flight (``max_concurrency`` None), or adaptive:
    starting at ``concurrency``, never above ``max_concurrency``."""
    if max_concurrency is None:
        return AdaptiveLimiter(concurrency, clock=clock, on_change=on_change)
    maximum = max(concurrency, max_concurrency)
    settings = ControllerSettings(
        initial=concurrency, minimum=min(ControllerSettings().minimum, concurrency), maximum=maximum
    )
    return AdaptiveLimiter(
        maximum, controller=ConcurrencyController(settings), clock=clock, on_change=on_change
    )
