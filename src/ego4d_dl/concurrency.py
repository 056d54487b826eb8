"""How many requests to keep in flight: a controller that finds the link's rate by itself.

Requests in flight grow while the total rate grows with them, step back when it stops growing
or when time to first byte climbs without the rate following, and halve when the server
throttles. Far from the buckets each connection is paced by its window, so the rate grows with
the requests up to what the machine can take (the search starts higher the longer the first
bytes take); near them a few requests already fill the link and more only queue. Pure: it
decides from what it is told (bytes received, first-byte times, slots in use, throttling),
each observation carrying its own time; ``limiter`` applies the decisions. Imports only
``events``.
"""

from __future__ import annotations

import collections
import dataclasses
import statistics
from dataclasses import dataclass
from enum import Enum, IntEnum

from .events import ConcurrencyCause

__all__ = ["ConcurrencyController", "ControllerSettings", "Decision"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerSettings:
    """The controller's tunables. Rates are compared between measurement windows taken back
    to back, so that a machine busy for other reasons shifts both sides alike."""

    initial: int = 16
    # The controller's own steps stay within [minimum, maximum]; throttling may go below.
    minimum: int = 4
    maximum: int = 256
    # ``initial`` suits links whose first bytes come within near_ttfb_s: the same or a
    # neighbouring region (a new connection's first byte takes two round trips), or loopback
    # with a busy event loop (35 ms measured here); where they take longer, the search starts
    # proportionally higher, at most far_start_factor times.
    near_ttfb_s: float = 0.040
    far_start_factor: float = 4.0
    # A window lasts min_window_s, or six first-byte times if longer (a far link's requests
    # take that long to show their effect, and its rate comes in bursts), at most
    # max_window_s. After a move it starts only once 2.5 first-byte times have passed, so
    # that requests sent at the old limit, and new connections' handshakes, are not
    # measured as the new limit's.
    min_window_s: float = 0.5
    max_window_s: float = 2.0
    # More requests are kept when each one added brings at least keep_share of what those
    # already there bring on average (a doubling: +10 %; a probe of 25 % more: +2.5 %), and
    # the limit goes on doubling while they bring grow_share (+50 %, +12.5 %). Past the knee
    # of the link more requests bring nothing but memory and queueing. Fewer requests are
    # kept when the rate falls by at most hold_loss.
    keep_share: float = 0.1
    grow_share: float = 0.5
    hold_loss: float = 0.05
    # Settled, it tries probe_step more every probe_every windows (twice as long after each
    # probe that gained nothing, up to max_probe_every; after one that paid, again after one
    # window).
    probe_step: float = 0.25
    probe_every: int = 3
    max_probe_every: int = 48
    # Time to first byte over ``latency_rise`` times what it was when the limit settled,
    # plus ``latency_slack_s``, means requests queue (at the server, or in this machine).
    latency_rise: float = 1.5
    latency_slack_s: float = 0.005
    # First bytes over crowd_factor times the link's own latency (plus the slack): requests
    # already wait their turn, so it grows no further (measured far away: 0.4 s with 49
    # requests against 0.12 s alone, on a machine that gave 32 requests the best time).
    crowd_factor: float = 2.0
    # A window in which fewer than this share of the slots were used says nothing about
    # whether more would help.
    busy_share: float = 0.8
    # One burst of throttled answers counts once; no probing up for a while after one.
    throttle_cooldown_s: float = 1.0
    throttle_hold_s: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.initial <= self.maximum:
            raise ValueError("need 1 <= minimum <= initial <= maximum")


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The limit from now on, and why (it may be the current one, kept for a reason)."""

    limit: int
    cause: ConcurrencyCause
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _Sample:
    """What one window measured at one limit."""

    limit: int
    rate: float  # bytes/s
    ttfb_s: float | None  # median time to first byte, None: too few requests to tell


class _Verdict(IntEnum):
    """What a window says of a limit, worst first."""

    BACK = 0  # no faster (or first bytes markedly later): go back
    KEEP = 1  # a little faster: keep it
    GROW = 2  # faster nearly in proportion: try more still


class _Phase(Enum):
    STARTING = "starting"  # doubling while it pays
    SETTLED = "settled"  # holding; probing up now and then
    PROBING_UP = "probing up"  # one window at probe_step more
    PROBING_DOWN = "probing down"  # one window at probe_step fewer (latency climbed)


class ConcurrencyController:
    """Decides the limit on requests in flight from what the requests measure.

    Feed it ``on_slots`` (requests in flight, each time that changes), ``on_bytes`` (as bytes
    arrive), ``on_first_byte`` (each GET's time to first byte) and ``on_throttle``; each
    returns a ``Decision`` when it has one, else ``None``. ``limit`` is the current limit.
    Times are seconds on any monotonic clock, passed in; nothing here reads a clock.
    """

    def __init__(self, settings: ControllerSettings | None = None) -> None:
        self.settings = settings or ControllerSettings()
        self.limit = self.settings.initial
        self._phase = _Phase.STARTING
        # The window being measured, from _start on. First-byte times count for requests sent
        # from _settled_at on: those sent earlier ran at an older limit, or on connections
        # opened for the new one and still shaking hands. They may arrive windows later.
        self._start: float | None = None
        self._settled_at = -float("inf")
        self._bytes = 0
        self._slot_area = 0.0  # integral of slots in use over the window, slot-seconds
        self._slots = 0
        self._slots_at = 0.0
        self._ttfbs: list[float] = []
        # The link's own latency: the least of the first first-byte times, then the lowest
        # window median of the last twenty windows.
        self.ttfb_floor_s: float | None = None
        self._medians: collections.deque[float] = collections.deque(maxlen=20)
        # STARTING: the limit before the last doubling. PROBING_*: the limit probed from.
        self._before: _Sample | None = None
        # SETTLED: the last window at the current limit, with the first-byte time it settled at.
        self._reference: _Sample | None = None
        self._windows_since_probe = 0
        self._probe_every = self.settings.probe_every
        self._first_look: _Verdict | None = None
        self._last_cut = -float("inf")
        self._hold_until = -float("inf")

    # --- observations ----------------------------------------------------------------------

    def on_slots(self, in_use: int, now: float) -> Decision | None:
        """Requests in flight changed to ``in_use`` at ``now``."""
        self._account_slots(now)
        self._slots = in_use
        return self._tick(now)

    def on_bytes(self, count: int, now: float) -> Decision | None:
        """``count`` bytes of a response arrived at ``now``."""
        if self._start is not None and now >= self._start:
            self._bytes += count
        return self._tick(now)

    def on_first_byte(self, ttfb_s: float, now: float) -> Decision | None:
        """A GET sent ``ttfb_s`` before ``now`` got its first byte at ``now``."""
        if now - ttfb_s >= self._settled_at:
            self._ttfbs.append(ttfb_s)
        return self._tick(now)

    def on_throttle(self, now: float) -> Decision | None:
        """The server asked to slow down: halve, once per burst; hold off probing a while."""
        s = self.settings
        if now - self._last_cut < s.throttle_cooldown_s or self.limit == 1:
            return None
        self._last_cut = now
        self._hold_until = now + s.throttle_hold_s
        self._phase = _Phase.SETTLED
        self._before = self._reference = None
        self._windows_since_probe = 0
        self._first_look = None
        decision = self._move(
            max(1, self.limit // 2), ConcurrencyCause.THROTTLED, "throttled by the server"
        )
        self._restart_window(now, moved=True)
        return decision

    # --- windows -----------------------------------------------------------------------------

    def _account_slots(self, now: float) -> None:
        if self._start is None:
            return
        since = max(self._slots_at, self._start)
        if now > since:
            self._slot_area += self._slots * (now - since)
        self._slots_at = now

    def _window_s(self) -> float:
        s = self.settings
        if self._phase is _Phase.STARTING:
            # Half as long: the search's first seconds are a large share of a short download,
            # and a doubling is a large step (a doubling that looks worse is looked at twice).
            return min(s.max_window_s, max(s.min_window_s / 2, 3 * (self.ttfb_floor_s or 0.0)))
        return min(s.max_window_s, max(s.min_window_s, 6 * (self.ttfb_floor_s or 0.0)))

    def _restart_window(self, now: float, *, moved: bool) -> None:
        self._start = now
        if moved:
            floor = self.ttfb_floor_s if self.ttfb_floor_s is not None else 0.04
            self._start += min(1.0, max(0.05, 2.5 * floor))
            self._settled_at = self._start
        self._ttfbs = []
        self._bytes = 0
        self._slot_area = 0.0
        self._slots_at = now

    def _tick(self, now: float) -> Decision | None:
        if self._start is None:
            self._restart_window(now, moved=True)
            return None
        if self.ttfb_floor_s is None:
            # Nothing is measured before the link's latency is known: the first requests'
            # bytes come after a handshake and a round trip, and a window holding them would
            # make every later one look faster than it is.
            if len(self._ttfbs) < 3:
                return None
            # The least of them: first bytes can come late for many reasons, never early.
            self.ttfb_floor_s = min(self._ttfbs)
            self._medians.append(self.ttfb_floor_s)
            decision = None
            if self._slots >= self.limit:  # else there is not the work for more anyway
                decision = self._start_for_latency(self.ttfb_floor_s)
            self._restart_window(now, moved=True)
            return decision
        if now < self._start + self._window_s():
            return None
        self._account_slots(now)
        elapsed = now - self._start
        busy = self._slot_area / elapsed
        ttfb = statistics.median(self._ttfbs) if len(self._ttfbs) >= 3 else None
        if ttfb is not None:
            # The floor follows the lowest of the recent windows (the first samples' too,
            # until they are old): a path whose latency changes gets a floor that does.
            self._medians.append(ttfb)
            self.ttfb_floor_s = min(self._medians)
        informative = self._bytes > 0 and busy >= self.settings.busy_share * self.limit
        before = self.limit
        sample = _Sample(limit=before, rate=self._bytes / elapsed, ttfb_s=ttfb)
        decision = self._decide(sample, informative, busy)
        self._restart_window(now, moved=self.limit != before)
        return decision

    def _start_for_latency(self, ttfb_s: float) -> Decision | None:
        """Where to start searching, once the link's latency is known.

        A connection paced by its window gets window / round trip, so a link with a long
        round trip needs more requests for the same rate: start that many times more (at
        most ``far_start_factor`` times), and search from there.
        """
        s = self.settings
        scaled = round(s.initial * min(s.far_start_factor, ttfb_s / s.near_ttfb_s))
        limit = min(s.maximum, max(self.limit, scaled))
        why = f"first bytes after {_ms(ttfb_s)}, a far link: starting at {limit}"
        return self._move(limit, ConcurrencyCause.PROBING, why)

    def _move(self, limit: int, cause: ConcurrencyCause, reason: str) -> Decision | None:
        """Go to ``limit``; None if it is the current one."""
        if limit == self.limit:
            return None
        self.limit = limit
        return Decision(limit=limit, cause=cause, reason=reason)

    def _queueing(self, sample: _Sample, then: _Sample | None) -> bool:
        """Whether first bytes now come markedly later than they did ``then``."""
        s = self.settings
        if sample.ttfb_s is None or then is None or then.ttfb_s is None:
            return False
        return sample.ttfb_s > then.ttfb_s * s.latency_rise + s.latency_slack_s

    def _second_look(self, verdict: _Verdict, *, hopeful: bool) -> _Verdict | None:
        """The verdict to act on after two windows agree, or None: look once more.

        One window can be slow or fast for reasons of its own (another process took the CPU
        for a moment). While starting, the better of two looks wins: going back down is the
        costly mistake far from the buckets. When probing, the worse one wins: a probe kept
        on a lucky window would let the limit drift up for nothing.
        """
        first = self._first_look
        if first is None:
            self._first_look = verdict
            return None
        self._first_look = None
        return max(first, verdict) if hopeful else min(first, verdict)

    # --- decisions ---------------------------------------------------------------------------

    def _decide(self, sample: _Sample, informative: bool, busy: float) -> Decision | None:
        if self._phase is _Phase.PROBING_UP:
            return self._probed_up(sample, informative)
        if self._phase is _Phase.PROBING_DOWN:
            return self._probed_down(sample)
        if self._phase is _Phase.STARTING:
            if informative:
                return self._starting(sample, full=True)
            if self._before is not None and busy > self._before.limit:
                # Not every new slot found work, but more did than before the doubling: what
                # they did still tells whether to go back (growing further would be idle).
                return self._starting(sample, full=False)
            return None
        # Too few requests waiting to tell whether more would help.
        return self._settled(sample) if informative else None

    def _verdict(self, sample: _Sample, before: _Sample) -> _Verdict:
        """What going from ``before`` to ``sample`` (more requests) was worth: GROW, KEEP or
        BACK by the rate's gain against the step's size (keep_share, grow_share). First
        bytes coming markedly later than before, or requests already waiting their turn,
        stop the growth there (at most KEEP): the rate says whether the step paid, the
        latency whether another would only queue."""
        s = self.settings
        gain = _gain(sample, before)
        step = sample.limit / before.limit - 1
        if gain < s.keep_share * step:
            return _Verdict.BACK
        if gain < s.grow_share * step or self._queueing(sample, before) or self._crowded(sample):
            return _Verdict.KEEP
        return _Verdict.GROW

    def _crowded(self, sample: _Sample) -> bool:
        """Whether requests already wait their turn: first bytes take ``crowd_factor`` times
        the link's own latency. Then more requests only wait longer (and hold memory), however
        the rate of a window looked: on a far link it comes in bursts."""
        s = self.settings
        if sample.ttfb_s is None or self.ttfb_floor_s is None:
            return False
        return sample.ttfb_s > s.crowd_factor * self.ttfb_floor_s + s.latency_slack_s

    def _starting(self, sample: _Sample, *, full: bool) -> Decision | None:
        before = self._before
        if before is None:
            return self._double(sample, ConcurrencyCause.PROBING, "finding the link's rate")
        verdict = self._verdict(sample, before)
        if verdict is _Verdict.GROW and not full:
            verdict = _Verdict.KEEP
        if verdict is not _Verdict.GROW:
            agreed = self._second_look(verdict, hopeful=True)
            if agreed is None:
                return None
            verdict = agreed
        why = f"rate {_gain(sample, before):+.0%} with {sample.limit} requests, was {before.limit}"
        if verdict is _Verdict.GROW:
            return self._double(sample, ConcurrencyCause.GREW, why)
        if verdict is _Verdict.KEEP:
            # A little faster: keep it, and stop doubling.
            return self._keep(sample, f"{why}: keeping {sample.limit}")
        self._settle(before)
        if self._queueing(sample, before):
            why = f"first byte after {_ms(sample.ttfb_s)}, was {_ms(before.ttfb_s)}"
        return self._move(before.limit, ConcurrencyCause.NO_GAIN, f"{why}: back to {before.limit}")

    def _double(self, sample: _Sample, cause: ConcurrencyCause, why: str) -> Decision | None:
        if sample.limit >= self.settings.maximum:
            return self._keep(sample, f"{why}: keeping {sample.limit}, the most allowed")
        self._phase = _Phase.STARTING
        self._before = sample
        self._first_look = None
        limit = min(self.settings.maximum, sample.limit * 2)
        return self._move(limit, cause, f"{why}: trying {limit}")

    def _settle(self, at: _Sample) -> None:
        self._phase = _Phase.SETTLED
        self._reference = at
        self._before = None
        self._windows_since_probe = 0
        self._first_look = None

    def _keep(self, sample: _Sample, why: str) -> Decision:
        """Settle at the limit just measured, and say so (the limit does not move)."""
        self._settle(sample)
        return Decision(limit=sample.limit, cause=ConcurrencyCause.GREW, reason=why)

    def _settled(self, sample: _Sample) -> Decision | None:
        s = self.settings
        reference = self._reference
        if reference is None or reference.limit != sample.limit:
            self._reference = sample
            return None
        if abs(_gain(sample, reference)) > s.probe_step:
            # The work changed (small files after videos, say): look again soon.
            self._probe_every = s.probe_every
        # Probes are judged against the last windows, not an older mix of files; the
        # first-byte time stays the one the limit settled at, to see it climb.
        previous_rate = reference.rate
        self._reference = _Sample(
            limit=sample.limit,
            rate=sample.rate,
            ttfb_s=reference.ttfb_s if reference.ttfb_s is not None else sample.ttfb_s,
        )
        if self._queueing(sample, reference) and sample.limit > s.minimum:
            if self._second_look(_Verdict.BACK, hopeful=False) is None:
                return None
            self._before = self._reference
            self._phase = _Phase.PROBING_DOWN
            limit = max(s.minimum, sample.limit - self._step(sample.limit))
            why = (
                f"first byte after {_ms(sample.ttfb_s)}, was {_ms(reference.ttfb_s)}: "
                f"trying {limit}"
            )
            return self._move(limit, ConcurrencyCause.LATENCY, why)
        self._first_look = None
        self._windows_since_probe += 1
        if (
            self._windows_since_probe >= self._probe_every
            and self._start is not None
            and self._start >= self._hold_until
            and sample.limit < s.maximum
            and not self._crowded(sample)
        ):
            # Against the better of the last two windows: a probe must beat a dip, not use it.
            self._before = dataclasses.replace(
                self._reference, rate=max(previous_rate, sample.rate)
            )
            self._phase = _Phase.PROBING_UP
            limit = min(s.maximum, sample.limit + self._step(sample.limit))
            return self._move(limit, ConcurrencyCause.PROBING, f"trying {limit}")
        return None

    def _probed_up(self, sample: _Sample, informative: bool) -> Decision | None:
        s = self.settings
        before = self._before
        assert before is not None
        # A gain nearly in proportion to the step is taken at once; anything less is looked
        # at twice, the worse look winning.
        verdict = self._verdict(sample, before) if informative else _Verdict.BACK
        if verdict is not _Verdict.GROW:
            agreed = self._second_look(verdict, hopeful=False)
            if agreed is None:
                return None
            verdict = agreed
        gain = _gain(sample, before)
        why = f"rate {gain:+.0%} with {sample.limit} requests, was {before.limit}"
        if verdict is not _Verdict.BACK:
            # Worth it: keep them, and try more again after one window (in steps, not by
            # doubling: one lucky window must not double the memory in flight).
            self._probe_every = s.probe_every
            decision = self._keep(sample, f"{why}: keeping {sample.limit}")
            self._windows_since_probe = s.probe_every - 1
            return decision
        self._settle(before)
        self._probe_every = min(s.max_probe_every, 2 * self._probe_every)
        if not informative:
            why = f"too few requests waiting to use {sample.limit}"
        return self._move(before.limit, ConcurrencyCause.NO_GAIN, f"{why}: back to {before.limit}")

    def _probed_down(self, sample: _Sample) -> Decision | None:
        before = self._before
        assert before is not None
        gain = _gain(sample, before)
        if gain >= -self.settings.hold_loss:
            # As fast with fewer. Against the first-byte time from before the climb, so that
            # it goes on stepping down while first bytes stay late and the rate holds.
            self._settle(_Sample(limit=sample.limit, rate=sample.rate, ttfb_s=before.ttfb_s))
            return None
        # Fewer requests were slower: the latency is the link's now. Settle back up with no
        # first-byte reference, so that the next window's becomes it.
        self._settle(_Sample(limit=before.limit, rate=before.rate, ttfb_s=None))
        why = f"rate {gain:+.0%} with {sample.limit} requests: back to {before.limit}"
        return self._move(before.limit, ConcurrencyCause.NO_GAIN, why)

    def _step(self, limit: int) -> int:
        return max(1, round(limit * self.settings.probe_step))


def _gain(sample: _Sample, before: _Sample) -> float:
    """How much faster ``sample`` was than ``before`` (0.25: 25 % faster)."""
    return sample.rate / before.rate - 1 if before.rate > 0 else 0.0


def _ms(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds * 1000:.0f} ms"
