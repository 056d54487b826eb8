"""``AdaptiveLimiter`` on its own, no server: slots taken and given back through ``acquire``
and ``release`` while a fake link reports bytes and first-byte times against a fake clock.
It grows while the rate grows, shrinks under throttling and when first bytes climb, and stays
between its floor and its ceiling; the fixed limit (``--concurrency N``) never passes N.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from ego4d_dl.concurrency import ControllerSettings
from ego4d_dl.events import ConcurrencyCause, ConcurrencyChanged
from ego4d_dl.limiter import AdaptiveLimiter, make_limiter
from tests.support.events import FakeClock

__all__: list[str] = []

MB = 1_000_000
DT_S = 0.01


@dataclass(slots=True)
class Run:
    """A limiter, its clock and what it did: ``(time, limit)`` every step, every change."""

    limiter: AdaptiveLimiter
    clock: FakeClock
    steps: list[tuple[float, int]] = field(default_factory=list)
    changes: list[ConcurrencyChanged] = field(default_factory=list)

    def limits_between(self, start_s: float, stop_s: float) -> list[int]:
        return [limit for when, limit in self.steps if start_s <= when < stop_s]


def adaptive(start: int, ceiling: int) -> Run:
    clock = FakeClock()
    changes: list[ConcurrencyChanged] = []
    limiter = make_limiter(start, ceiling, clock=clock, on_change=changes.append)
    return Run(limiter=limiter, clock=clock, changes=changes)


def drive(
    run: Run,
    seconds: float,
    rate_bytes_s: Callable[[int, float], float],
    ttfb_s: Callable[[int, float], float],
) -> None:
    """Keep as many requests in flight as the limiter allows (there is always more work) for
    ``seconds`` of fake time; the link streams ``rate_bytes_s(n, t)`` with ``n`` in flight
    and answers first bytes after ``ttfb_s(n, t)``."""
    limiter = run.limiter

    async def main() -> None:
        for _ in range(round(seconds / DT_S)):
            run.clock.now += DT_S
            while limiter.in_use < limiter.limit:
                await limiter.acquire()
            while limiter.in_use > limiter.limit:
                limiter.release()
            n, now = limiter.in_use, run.clock.now
            limiter.on_bytes(round(rate_bytes_s(n, now) * DT_S))
            limiter.on_first_byte(ttfb_s(n, now))
            run.steps.append((now, limiter.limit))

    asyncio.run(main())


def far(n: int, _: float) -> float:
    """A far link: each request paced by its window to 5 MB/s, nothing else in the way."""
    return n * 5 * MB


def far_until(knee: int) -> Callable[[int, float], float]:
    """The same link, whose total stops growing at ``knee`` requests."""
    return lambda n, _: min(n, knee) * 5 * MB


def steady_ttfb(_: int, __: float) -> float:
    return 0.1


# --- the adaptive limit ----------------------------------------------------------------------


def test_it_grows_while_the_rate_grows_up_to_its_ceiling_and_no_further() -> None:
    run = adaptive(4, 40)
    drive(run, 30, far, steady_ttfb)
    limits = [limit for _, limit in run.steps]
    assert limits[0] == 4
    assert max(limits) == 40  # the ceiling is reached: every request added paid
    assert all(limit <= 40 for limit in limits)
    assert run.limiter.in_use <= 40
    grew = [c for c in run.changes if c.limit > 4]
    assert grew and all(not c.is_warning for c in grew)


def test_it_stops_growing_where_the_rate_stops_growing() -> None:
    run = adaptive(4, 256)
    drive(run, 40, far_until(12), steady_ttfb)
    settled = statistics.median(run.limits_between(20, 40))
    assert 12 <= settled <= 3 * 12  # past the knee more requests only hold memory
    assert max(limit for _, limit in run.steps) < 256


def test_first_bytes_climbing_without_more_rate_shrink_it_to_no_less_than_its_floor() -> None:
    """Settled past a knee of 12, the server starts to queue: first bytes come ever later
    and the rate falls a little. Fewer requests do as well, so the limit comes down, and
    never below the controller's floor."""
    run = adaptive(4, 256)
    drive(run, 20, far_until(12), steady_ttfb)
    settled = run.limiter.limit
    assert settled > ControllerSettings().minimum

    def queueing_rate(n: int, t: float) -> float:
        return 0.9 * min(n, 12) * 5 * MB

    def queueing_ttfb(n: int, t: float) -> float:
        return 0.1 + 0.05 * max(0, n - 6)  # every request past six waits its turn

    start = run.clock.now
    drive(run, 20, queueing_rate, queueing_ttfb)
    later = run.limits_between(start + 15, start + 20)
    assert max(later) < settled
    assert min(limit for _, limit in run.steps) >= ControllerSettings().minimum
    assert any(c.cause is ConcurrencyCause.LATENCY for c in run.changes)


def test_throttling_halves_it_once_per_burst_down_to_one() -> None:
    run = adaptive(16, 64)
    limiter, clock = run.limiter, run.clock
    clock.now = 10.0
    limiter.on_throttle()
    assert limiter.limit == 8
    assert run.changes[-1].cause is ConcurrencyCause.THROTTLED and run.changes[-1].is_warning
    clock.now = 10.5
    limiter.on_throttle()  # the same burst of 503s
    assert limiter.limit == 8 and len(run.changes) == 1
    for i in range(6):
        clock.now = 12.0 + 1.5 * i
        limiter.on_throttle()
    assert limiter.limit == 1  # below the controller's own floor: the server said so
    assert [c.limit for c in run.changes] == [8, 4, 2, 1]


def test_a_smaller_limit_admits_no_one_until_enough_slots_are_back() -> None:
    """A throttle does not take slots away from requests in flight; it holds back the next
    ones until fewer than the new limit are in flight."""
    clock = FakeClock()
    limiter = AdaptiveLimiter(8, clock=clock)

    async def main() -> None:
        for _ in range(8):
            await limiter.acquire()
        waiting = [asyncio.ensure_future(limiter.acquire()) for _ in range(2)]
        await asyncio.sleep(0)
        limiter.on_throttle()
        assert limiter.limit == 4 and limiter.in_use == 8
        for _ in range(4):
            limiter.release()
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiting) and limiter.in_use == 4
        limiter.release()
        await asyncio.sleep(0)
        assert [w.done() for w in waiting] == [True, False]  # first come, first served
        assert limiter.in_use == 4
        limiter.release()
        await asyncio.gather(*waiting)
        assert limiter.in_use == 4

    asyncio.run(main())


def test_a_cancelled_waiter_never_loses_a_slot() -> None:
    """A waiter cancelled just as a slot was handed to it passes the slot on; one cancelled
    before leaves the queue. Either way every slot comes back."""
    limiter = AdaptiveLimiter(1)

    async def main() -> None:
        await limiter.acquire()
        handed = asyncio.ensure_future(limiter.acquire())
        after = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)
        limiter.release()  # the slot goes to ``handed``...
        handed.cancel()  # ...which is cancelled before it runs
        await asyncio.wait_for(after, timeout=10)  # so ``after`` gets it
        assert handed.cancelled() and limiter.in_use == 1
        gone = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        limiter.release()
        assert limiter.in_use == 0
        await asyncio.wait_for(limiter.acquire(), timeout=10)

    asyncio.run(main())


# --- the fixed limit (--concurrency N) -------------------------------------------------------


def test_fixed_limit_recovers_to_n_and_no_further() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(8, clock=clock)
    limiter.on_throttle()
    assert limiter.limit == 4
    for _ in range(1000):
        limiter.on_success()
    assert limiter.limit == 8


@pytest.mark.parametrize(("maximum", "cuts"), [(1, []), (8, [(0.0, 4), (1.2, 2), (2.4, 1)])])
def test_fixed_limit_halves_at_most_once_per_cooldown_and_never_below_one(
    maximum: int, cuts: list[tuple[float, int]]
) -> None:
    clock = FakeClock()
    seen: list[tuple[float, int]] = []
    limiter = AdaptiveLimiter(
        maximum, clock=clock, cooldown_s=1.0, on_change=lambda e: seen.append((clock.now, e.limit))
    )
    for i in range(20):
        clock.now = round(0.4 * i, 1)
        limiter.on_throttle()
    assert limiter.limit == 1
    assert seen == cuts
