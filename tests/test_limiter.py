"""The adaptive concurrency controller against fake links, and the limiter that applies it.

A fake link answers rate as a function of requests in flight: each request gets its own rate
(a far link paces each connection by its window), the total is capped (the machine, or the
pipe), and past the cap requests queue so their first byte comes later. New requests start
bytes only after a handshake. Time is simulated: nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ego4d_dl.concurrency import ConcurrencyController, ControllerSettings, Decision
from ego4d_dl.config import DEFAULT_MAX_CONCURRENCY, Options
from ego4d_dl.engine import EngineSettings
from ego4d_dl.events import ConcurrencyCause, ConcurrencyChanged
from ego4d_dl.limiter import AdaptiveLimiter, make_limiter
from tests.support.events import FakeClock
from tests.support.examples import examples

MB = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeLink:
    """``rate(n)``: bytes/s with ``n`` requests streaming; ``ttfb(n)``: their first-byte time.

    Each request alone gets ``per_request_bytes_s``; together they approach
    ``capacity_bytes_s`` with diminishing returns (a soft minimum: requests that pause to
    write, or wait for the CPU, leave their share of the link idle, so a few more than the
    plain quotient still help a little). Past the capacity, first bytes come later.
    """

    per_request_bytes_s: float
    capacity_bytes_s: float
    rtt_s: float
    # Extra first-byte delay per 100 % of overload (requests queueing for the CPU or server).
    queue_s: float

    def load(self, n: int) -> float:
        return n * self.per_request_bytes_s / self.capacity_bytes_s

    def rate(self, n: int) -> float:
        x = self.load(n)
        return self.capacity_bytes_s * x / math.cbrt(1 + x**3)

    def ttfb(self, n: int) -> float:
        return self.rtt_s + self.queue_s * max(0.0, self.load(n) - 1)


# 50 ms each way, 8 MB/s per connection (91 % of it with 8 MiB pieces and one round trip
# each), and a client that takes at most 220 MB/s.
FAR_VIDEOS = FakeLink(
    per_request_bytes_s=7.3 * MB, capacity_bytes_s=220 * MB, rtt_s=0.1, queue_s=0.02
)
# The same link with 160 KiB files: a request is mostly its round trip.
FAR_SMALL = FakeLink(
    per_request_bytes_s=1.3 * MB, capacity_bytes_s=80 * MB, rtt_s=0.1, queue_s=0.02
)
# 10 ms each way, 25 MB/s per connection: 16 requests already give 94 % of the machine's rate.
NEAR = FakeLink(per_request_bytes_s=22 * MB, capacity_bytes_s=230 * MB, rtt_s=0.02, queue_s=0.02)
# Loopback: two requests fill the machine; every one more only waits its turn.
LOOPBACK = FakeLink(
    per_request_bytes_s=150 * MB, capacity_bytes_s=250 * MB, rtt_s=0.002, queue_s=0.003
)


@dataclass(slots=True, kw_only=True)
class Trace:
    """What a simulated run did: (time, limit, rate) every step, and every decision."""

    steps: list[tuple[float, int, float]] = field(default_factory=list)
    decisions: list[tuple[float, Decision]] = field(default_factory=list)

    def limits_after(self, t: float) -> list[int]:
        return [limit for when, limit, _ in self.steps if when >= t]

    def mean_rate_after(self, t: float) -> float:
        return statistics.fmean(rate for when, _, rate in self.steps if when >= t)

    @property
    def max_limit(self) -> int:
        return max(limit for _, limit, _ in self.steps)


def simulate(
    link: FakeLink | Callable[[float], FakeLink],
    controller: ConcurrencyController,
    seconds: float,
    *,
    demand: int = 10**6,
    noise: float = 0.0,
    seed: int = 0,
    dt: float = 0.01,
    start_s: float = 0.0,
) -> Trace:
    """Run ``controller`` against ``link`` for ``seconds`` of simulated time.

    ``demand`` caps the requests there is work for; ``noise`` scales each 100 ms of rate by
    a factor in [1 - noise, 1 + noise] (another process taking the CPU); ``start_s`` is
    the time of the first step (to go on with a controller that already ran). ``link`` may be
    a function of the time, for a link that changes.
    """
    rng = random.Random(seed)
    trace = Trace()
    started: list[float] = []  # when each request in flight was sent
    factor = 1.0
    in_use = -1
    steps = round(seconds / dt)
    for i in range(steps):
        now = start_s + i * dt
        here = link(now) if callable(link) else link
        if i % 10 == 0 and noise:
            factor = rng.uniform(1 - noise, 1 + noise)
        want = min(controller.limit, demand)
        while len(started) < want:
            started.append(now)  # a new connection: a handshake before its first byte
        del started[want:]
        decisions = []
        if len(started) != in_use:
            in_use = len(started)
            decisions.append(controller.on_slots(in_use, now))
        streaming = sum(1 for sent in started if now - sent >= 2 * here.rtt_s)
        rate = here.rate(streaming) * factor
        decisions.append(controller.on_bytes(round(rate * dt), now))
        if streaming:
            decisions.append(controller.on_first_byte(here.ttfb(streaming), now))
        trace.steps.append((now, controller.limit, rate))
        trace.decisions += [(now, d) for d in decisions if d is not None]
    return trace


# --- finding the link's rate -------------------------------------------------------------


@pytest.mark.parametrize("link", [FAR_VIDEOS, FAR_SMALL], ids=["far-videos", "far-small-files"])
def test_far_link_grows_until_the_rate_stops_growing(link: FakeLink) -> None:
    """From the default of 16, requests in flight grow far past it, the rate ends within
    10 % of what the link can give, and growth stops well short of the ceiling."""
    trace = simulate(link, ConcurrencyController(), 30)
    assert trace.max_limit >= 48
    assert trace.mean_rate_after(10) >= 0.9 * link.capacity_bytes_s
    # Settled (probes aside) within a few times the requests that fill the link.
    assert (
        statistics.median(trace.limits_after(10))
        <= 3.5 * link.capacity_bytes_s / link.per_request_bytes_s
    )
    causes = {d.cause for _, d in trace.decisions}
    assert ConcurrencyCause.GREW in causes


def test_near_link_stays_close_to_the_default() -> None:
    """Near the buckets 16 requests give most of the rate: it may take a few more, and ends
    within 10 % of the link's rate."""
    trace = simulate(NEAR, ConcurrencyController(), 30)
    assert trace.mean_rate_after(10) >= 0.9 * NEAR.capacity_bytes_s
    assert min(trace.limits_after(10)) >= 16 and max(trace.limits_after(10)) <= 64


def test_far_link_is_found_within_a_few_seconds() -> None:
    """A 6-video download far away lasts seconds: the knee must be reached in the first few."""
    trace = simulate(FAR_VIDEOS, ConcurrencyController(), 10)
    reached = next(t for t, limit, _ in trace.steps if limit >= 48)
    assert reached <= 3.0


@pytest.mark.parametrize(
    ("ttfb_s", "in_use", "start"),
    [
        (0.200, 16, 64),  # 50 ms each way, a new connection: four times, at most
        (0.080, 16, 32),  # in proportion to the first-byte time
        (0.030, 16, 16),  # a neighbouring region, or a busy loopback: as it was
        (0.200, 10, 16),  # not the work for more: no reason to start higher
    ],
)
def test_the_search_starts_higher_the_farther_the_link(
    ttfb_s: float, in_use: int, start: int
) -> None:
    controller = ConcurrencyController()
    controller.on_slots(in_use, 0.0)
    decisions = [controller.on_first_byte(ttfb_s, 0.5 + i * 0.01) for i in range(3)]
    assert controller.limit == start
    moved = [d for d in decisions if d is not None]
    assert [d.limit for d in moved] == ([start] if start != 16 else [])
    assert all(d.cause is ConcurrencyCause.PROBING and "a far link" in d.reason for d in moved)


def test_loopback_stays_where_it_started() -> None:
    """Where 16 already fill the machine, more only queue: the limit does not wander up,
    and the rate stays at the machine's."""
    trace = simulate(LOOPBACK, ConcurrencyController(), 30)
    assert max(trace.limits_after(3)) <= 20
    assert min(trace.limits_after(0)) >= 16
    assert trace.mean_rate_after(3) >= 0.99 * LOOPBACK.capacity_bytes_s
    # It tried, and said why it went back.
    assert any(d.cause is ConcurrencyCause.NO_GAIN for _, d in trace.decisions)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("link", [FAR_VIDEOS, FAR_SMALL], ids=["far-videos", "far-small-files"])
def test_noise_does_not_lose_the_link(link: FakeLink, seed: int) -> None:
    """Another process taking the CPU makes every 100 ms up to 15 % slower or faster: the
    controller still ends within 15 % of the link's rate (averaged over the noise; some
    probes that would have paid are judged on unlucky windows)."""
    trace = simulate(link, ConcurrencyController(), 40, noise=0.15, seed=seed)
    assert trace.mean_rate_after(15) >= 0.85 * link.capacity_bytes_s
    assert max(trace.limits_after(15)) <= 256


def test_one_slow_window_does_not_send_it_back() -> None:
    """A doubling measured during a hiccup (another process took the CPU for 0.4 s) is
    measured again before it is undone."""
    hiccup = FakeLink(per_request_bytes_s=1 * MB, capacity_bytes_s=40 * MB, rtt_s=0.1, queue_s=0)
    calm = simulate(FAR_SMALL, ConcurrencyController(), 10)
    doubled_at, doubled = next(
        (t, d) for t, d in calm.decisions if d.reason.startswith("finding the link's rate")
    )

    def link(t: float) -> FakeLink:
        return hiccup if doubled_at + 0.3 <= t < doubled_at + 0.7 else FAR_SMALL

    trace = simulate(link, ConcurrencyController(), 10)
    assert not [d for t, d in trace.decisions if t > doubled_at and d.limit < doubled.limit]
    assert trace.max_limit > doubled.limit


def test_requests_that_already_wait_stop_the_growth() -> None:
    """Far away, on a machine that is the bottleneck: first bytes take four times the link's
    latency at the start already, so it does not double however a window's rate looks."""
    busy_machine = FakeLink(
        per_request_bytes_s=7.3 * MB, capacity_bytes_s=150 * MB, rtt_s=0.1, queue_s=0.3
    )
    trace = simulate(busy_machine, ConcurrencyController(), 20)
    assert trace.max_limit <= 80
    assert statistics.median(trace.limits_after(5)) <= 50
    assert trace.mean_rate_after(5) >= 0.9 * busy_machine.capacity_bytes_s


def test_few_waiting_requests_do_not_make_it_grow() -> None:
    """With work for only 10 requests the limit cannot be used, so it says nothing about
    more: the limit stays where it started."""
    trace = simulate(FAR_SMALL, ConcurrencyController(), 20, demand=10)
    assert trace.max_limit == 16
    assert not trace.decisions


def test_latency_climbing_without_more_rate_makes_it_shrink() -> None:
    """Settled at a far link's knee, the server slows down: the rate falls, first bytes come
    ever later, and fewer requests do as well: the limit comes down."""
    congested = FakeLink(
        per_request_bytes_s=7.3 * MB, capacity_bytes_s=60 * MB, rtt_s=0.1, queue_s=0.4
    )
    trace = simulate(lambda t: FAR_VIDEOS if t < 20 else congested, ConcurrencyController(), 40)
    settled = trace.limits_after(19.9)[0]
    assert trace.limits_after(39.9)[0] < settled
    assert any(d.cause is ConcurrencyCause.LATENCY for t, d in trace.decisions if t >= 20)
    assert min(trace.limits_after(0)) >= ControllerSettings().minimum


def test_work_that_wants_more_later_makes_it_grow_again() -> None:
    """Settled where few requests fill the link (a slow server behind a far link), the work
    changes to one that wants many (small files on the same link): the periodic probes find
    it and the limit grows again."""
    slow = FakeLink(per_request_bytes_s=7.3 * MB, capacity_bytes_s=60 * MB, rtt_s=0.1, queue_s=0)
    trace = simulate(lambda t: slow if t < 15 else FAR_SMALL, ConcurrencyController(), 45)
    settled = statistics.median(trace.limits_after(10)[:500])
    assert max(trace.limits_after(35)) > settled
    assert trace.mean_rate_after(35) >= 0.9 * FAR_SMALL.capacity_bytes_s


# --- throttling --------------------------------------------------------------------------


def test_throttling_halves_once_per_burst_down_to_one() -> None:
    controller = ConcurrencyController(ControllerSettings(initial=16))
    first = controller.on_throttle(10.0)
    assert first == Decision(
        limit=8, cause=ConcurrencyCause.THROTTLED, reason="throttled by the server"
    )
    # The rest of the same burst (within the cooldown) counts once.
    assert controller.on_throttle(10.2) is None
    assert controller.on_throttle(10.9) is None
    limits = [d.limit for t in (11.5, 13, 14.5, 16, 17.5) if (d := controller.on_throttle(t))]
    assert limits == [4, 2, 1]  # below the controller's own minimum: the server said so
    assert controller.limit == 1


def test_no_probing_up_while_holding_after_throttling() -> None:
    """After a throttle, the controller holds for a while before it tries more again."""
    controller = ConcurrencyController()
    simulate(FAR_VIDEOS, controller, 10)
    throttled = controller.on_throttle(10.0)
    assert throttled is not None
    hold = controller.settings.throttle_hold_s
    trace = simulate(FAR_VIDEOS, controller, hold - 0.5, start_s=10.0)
    assert all(d.cause is not ConcurrencyCause.PROBING for _, d in trace.decisions)
    assert controller.limit == throttled.limit


# --- invariants --------------------------------------------------------------------------

_observation = st.one_of(
    st.tuples(st.just("slots"), st.integers(0, 300)),
    st.tuples(st.just("bytes"), st.integers(0, 50 * MB)),
    st.tuples(st.just("first_byte"), st.floats(0, 2)),
    st.tuples(st.just("throttle"), st.just(0)),
)


@settings(max_examples=examples(200), deadline=None)
@given(
    steps=st.lists(st.tuples(st.floats(0, 1.5), _observation), max_size=300),
    initial=st.integers(1, 64),
    maximum=st.integers(64, 512),
)
def test_the_limit_stays_in_bounds_and_every_move_is_reported(
    steps: list[tuple[float, tuple[str, float]]], initial: int, maximum: int
) -> None:
    """Whatever it is told, the limit stays between 1 and the ceiling (at or above the
    controller's minimum unless the server throttled), and every change is a Decision."""
    s = ControllerSettings(initial=initial, minimum=min(4, initial), maximum=maximum)
    controller = ConcurrencyController(s)
    now = 0.0
    throttled = False
    for gap, (kind, value) in steps:
        now += gap
        before = controller.limit
        if kind == "slots":
            decision = controller.on_slots(int(value), now)
        elif kind == "bytes":
            decision = controller.on_bytes(int(value), now)
        elif kind == "first_byte":
            decision = controller.on_first_byte(float(value), now)
        else:
            decision = controller.on_throttle(now)
            throttled = throttled or decision is not None
        assert 1 <= controller.limit <= maximum
        if not throttled:
            assert controller.limit >= s.minimum
        if controller.limit != before:
            assert decision is not None and decision.limit == controller.limit
        if decision is not None:
            assert decision.reason


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="minimum <= initial <= maximum"):
        ControllerSettings(initial=300, maximum=256)


# --- the limiter that applies it ---------------------------------------------------------


def test_fixed_concurrency_is_exactly_n() -> None:
    """``--concurrency N``: no controller; bytes and first-byte times change nothing."""

    async def main() -> None:
        limiter = make_limiter(5, None)
        assert limiter.controller is None and limiter.limit == 5
        for _ in range(5):
            await limiter.acquire()
        for _ in range(1000):
            limiter.on_bytes(10 * MB)
            limiter.on_first_byte(0.001)
        sixth = asyncio.ensure_future(limiter.acquire())
        await asyncio.sleep(0)
        assert not sixth.done() and limiter.limit == 5
        limiter.release()
        await sixth
        assert limiter.in_use == 5

    asyncio.run(main())


def test_fixed_concurrency_halves_under_throttling_and_grows_back() -> None:
    clock = FakeClock()
    seen: list[ConcurrencyChanged] = []
    limiter = AdaptiveLimiter(8, clock=clock, on_change=seen.append)
    limiter.on_throttle()
    assert limiter.limit == 4 and seen[-1].cause is ConcurrencyCause.THROTTLED
    assert seen[-1].is_warning
    for _ in range(4 + 5 + 6 + 7):
        limiter.on_success()
    assert limiter.limit == 8
    assert [e.limit for e in seen] == [4, 5, 6, 7, 8]
    assert all(e.cause is ConcurrencyCause.RECOVERING for e in seen[1:])


def test_adaptive_limiter_applies_decisions_and_wakes_waiters() -> None:
    """The limiter feeds the controller and hands the slots it allows to those waiting."""
    clock = FakeClock()
    seen: list[ConcurrencyChanged] = []

    async def main() -> None:
        limiter = make_limiter(2, 64, clock=clock, on_change=seen.append)
        assert limiter.controller is not None and limiter.limit == 2
        await limiter.acquire()
        await limiter.acquire()
        waiting = [asyncio.ensure_future(limiter.acquire()) for _ in range(2)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiting)
        # A busy, streaming link: after a window, the controller tries more.
        while limiter.limit == 2:
            clock.now += 0.05
            limiter.on_first_byte(0.01)
            limiter.on_bytes(MB)
        await asyncio.gather(*waiting)
        assert limiter.limit == 4 and limiter.in_use == 4
        assert seen == [
            ConcurrencyChanged(
                limit=4,
                reason="finding the link's rate: trying 4",
                cause=ConcurrencyCause.PROBING,
            )
        ]
        assert not seen[0].is_warning

    asyncio.run(main())


def test_make_limiter_keeps_a_small_start_valid() -> None:
    limiter = make_limiter(2, 256)
    assert limiter.controller is not None
    assert limiter.controller.settings.minimum == 2 and limiter.maximum == 256
    assert make_limiter(300, 256).maximum == 300


# --- a download's settings ---------------------------------------------------------------


def _options(**kw: object) -> Options:
    return Options(output_directory=Path("/x"), version="v2_1", datasets=("annotations",), **kw)  # type: ignore[arg-type]


def test_explicit_concurrency_makes_fixed_settings() -> None:
    settings = EngineSettings.from_options(_options(concurrency=8), fd_limit=1024)
    assert settings.concurrency == 8 and settings.max_concurrency is None
    assert settings.max_requests == 8 and settings.max_open_files == 64


def test_adaptive_settings_open_as_many_files_as_requests_within_the_descriptors() -> None:
    options = _options(concurrency=16, max_concurrency=DEFAULT_MAX_CONCURRENCY)
    roomy = EngineSettings.from_options(options, fd_limit=20_000)
    assert roomy.max_concurrency == roomy.max_requests == DEFAULT_MAX_CONCURRENCY
    assert roomy.max_open_files == DEFAULT_MAX_CONCURRENCY
    # A file and a socket per request, the finished parts held for their rename, the rest.
    tight = EngineSettings.from_options(options, fd_limit=640)
    assert tight.max_concurrency == 128 and tight.max_open_files == 128
    assert tight.max_open_files + tight.max_requests + tight.max_finished_parts + 128 <= 640
    # Never below where it starts (macOS's default of 256 leaves no room to grow).
    assert EngineSettings.from_options(options, fd_limit=256).max_concurrency == 16
