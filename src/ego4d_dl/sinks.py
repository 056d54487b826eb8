"""Run progress without a terminal: the counters every sink keeps, smoothed rates and ETAs,
warning texts, and the two sinks for unattended runs (plain lines for logs, JSON lines for
tools)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol, TextIO

from .events import (
    BytesReceived,
    ConcurrencyChanged,
    Event,
    FileFailed,
    FileRestarted,
    FileSkipped,
    FileVerified,
    IntegrityFailed,
    ManifestLoaded,
    PlanBuilt,
    RangeRetried,
    RunFinished,
    RunStarted,
    RunSummary,
)
from .formatting import eta_s, eta_text, human_bytes, label
from .jsonforms import event_json
from .planned import Plan
from .text import safe

__all__ = [
    "WARNINGS",
    "Display",
    "JsonLinesSink",
    "OutputErrorHandler",
    "PlainProgressSink",
    "Rate",
    "Tally",
    "eta_s",
    "eta_text",
    "is_warning",
    "label",
    "output_error_text",
    "warning_text",
]

# Events worth a line of their own: something went wrong, or the run adapted to it.
WARNINGS = (RangeRetried, FileRestarted, IntegrityFailed, FileFailed, ConcurrencyChanged)


def is_warning(event: Event) -> bool:
    """Whether ``event`` is worth a warning line: one of ``WARNINGS``, except the routine
    moves of adaptive concurrency (only throttling, and recovering from it, are)."""
    if isinstance(event, ConcurrencyChanged):
        return event.is_warning
    return isinstance(event, WARNINGS)


# Below this, two samples of a byte count say more about scheduling jitter than about speed.
_MIN_SAMPLE_S = 0.05


class Display(Protocol):
    """What ``cli`` needs of a sink: the events, the plan once known, and a way to end it."""

    def __call__(self, event: Event) -> None:
        """Take one event (synchronously, from the event-loop thread)."""

    def expect(self, plan: Plan) -> None:
        """The plan the run will carry out (per-dataset totals), before ``RunStarted``."""

    def note(self, message: str) -> None:
        """Show a message from ``cli`` during the run (e.g. "stopping") without garbling the
        display; never on stdout in ``--json`` mode."""

    def close(self) -> None:
        """Stop drawing and any thread; idempotent, also after ``RunFinished``."""


class Rate:
    """Bytes per second of a growing byte count, smoothed exponentially over ``tau_s``.

    Sampled when drawing, at irregular instants: each sample's weight follows the time since
    the previous one, so the smoothing does not depend on the refresh rate. Until ``tau_s``
    has passed it is the plain mean since the start, so the first estimates (and ETAs) are
    not dragged towards zero.
    """

    __slots__ = ("_count", "_started", "_t", "bytes_per_s", "tau_s")

    def __init__(self, tau_s: float) -> None:
        self.tau_s = tau_s
        self.bytes_per_s: float | None = None
        self._started = 0.0
        self._t: float | None = None
        self._count = 0

    def reset(self, now: float, count: int = 0) -> None:
        """Start measuring afresh from ``count`` bytes at ``now``."""
        self.bytes_per_s = None
        self._started = self._t = now
        self._count = count

    def sample(self, now: float, count: int) -> float | None:
        """Update with the byte count at ``now``; return the smoothed rate (None: unknown)."""
        if self._t is None:
            self.reset(now, count)
            return None
        dt = now - self._t
        if dt < _MIN_SAMPLE_S:
            return self.bytes_per_s
        instant = max(0.0, (count - self._count) / dt)
        if self.bytes_per_s is None:
            self.bytes_per_s = instant
        else:
            weight = max(1.0 - math.exp(-dt / self.tau_s), dt / (now - self._started))
            self.bytes_per_s += weight * (instant - self.bytes_per_s)
        self._t, self._count = now, count
        return self.bytes_per_s


class Tally:
    """Run-wide counters every sink keeps. ``done_bytes`` is bumped by the sinks themselves
    on ``BytesReceived`` (the hot path); ``count`` takes every other event."""

    __slots__ = (
        "concurrency",
        "concurrency_why",
        "denied",
        "done_bytes",
        "failed",
        "files",
        "missing",
        "restarts",
        "retries",
        "skipped",
        "started_at",
        "summary",
        "total_bytes",
        "verified",
    )

    def __init__(self) -> None:
        self.done_bytes = 0
        self.total_bytes = 0
        self.files = 0
        self.verified = 0
        self.skipped = 0
        self.failed = 0
        self.missing = 0
        self.denied = 0
        self.retries = 0
        self.restarts = 0
        self.concurrency = 0
        self.concurrency_why = ""  # why the limit last moved (a ConcurrencyCause's words)
        self.started_at: float | None = None
        self.summary: RunSummary | None = None

    def count(self, event: Event, now: float) -> None:
        if isinstance(event, RunStarted):
            self.started_at = now
            self.total_bytes = event.fetch_bytes
            self.files = event.files
            self.concurrency = event.concurrency
        elif isinstance(event, FileVerified):
            self.verified += 1
        elif isinstance(event, FileSkipped):
            self.skipped += 1
        elif isinstance(event, FileFailed):
            if event.status == "missing":
                self.missing += 1
            elif event.status == "denied":
                self.denied += 1
            else:
                self.failed += 1
        elif isinstance(event, RangeRetried):
            self.retries += 1
        elif isinstance(event, FileRestarted):
            self.restarts += 1
            # The discarded bytes were counted as done; they must come again.
            self.total_bytes += event.discarded_bytes
        elif isinstance(event, IntegrityFailed):
            self.total_bytes += event.refetch_bytes
        elif isinstance(event, ConcurrencyChanged):
            self.concurrency = event.limit
            self.concurrency_why = event.cause.value
        elif isinstance(event, RunFinished):
            self.summary = event.summary

    @property
    def files_done(self) -> int:
        return self.verified + self.skipped + self.failed + self.missing + self.denied

    @property
    def percent(self) -> float:
        if self.total_bytes <= 0:
            return 100.0 if self.started_at is not None else 0.0
        return min(100.0, 100.0 * self.done_bytes / self.total_bytes)


def _reason(reason: str, key: str) -> str:
    """The store's reason without its ``s3://bucket/key: `` prefix, already in the label."""
    where, sep, rest = reason.partition(": ")
    return rest if sep and where.startswith("s3://") and where.endswith(key) else reason


def warning_text(event: Event) -> str:
    """One line on a retry, stall, restart, integrity failure, failed file or new limit,
    made ``safe`` for display."""
    return safe(_warning_text(event))


def _warning_text(event: Event) -> str:
    if isinstance(event, ConcurrencyChanged):
        return f"concurrency now {event.limit} ({event.reason})"
    if not isinstance(event, RangeRetried | FileRestarted | IntegrityFailed | FileFailed):
        return type(event).__name__
    name = label(event.dataset, event.key)
    if isinstance(event, RangeRetried):
        what = "stalled" if event.stalled else "throttled" if event.throttled else "retry"
        return (
            f"{what}: {name}: {_reason(event.reason, event.key)} (attempt {event.attempt}, "
            f"again in {event.delay_s:.1f}s; bytes {event.start:,}-{event.stop - 1:,})"
        )
    if isinstance(event, FileRestarted):
        return (
            f"changed on the server (412), restarting: {name} ({event.old_etag} -> "
            f"{event.new_etag}, {human_bytes(event.discarded_bytes)} discarded)"
        )
    if isinstance(event, IntegrityFailed):
        return (
            f"integrity: {name}: {_reason(event.reason, event.key)}; refetching "
            f"{human_bytes(event.refetch_bytes)}"
        )
    return f"{event.status}: {name}: {_reason(event.reason, event.key)}"


class _Ticker:
    """Calls ``tick`` every ``interval_s`` from a daemon thread until stopped."""

    def __init__(self, interval_s: float, tick: Callable[[], None]) -> None:
        self._interval_s = interval_s
        self._tick = tick
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ego4d-dl-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self._interval_s):
            self._tick()

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()


# Told, once, that an output stream cannot be written, with a line saying why; called from
# whichever thread was writing (the event loop's or a ticker's).
OutputErrorHandler = Callable[[str], None]


def output_error_text(exc: BaseException) -> str:
    """Why a write failed, in words: ``No space left on device``, ``the pipe was closed``."""
    if isinstance(exc, BrokenPipeError):
        return "the reading end of the pipe was closed"
    if isinstance(exc, ValueError):
        return "the stream is closed"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _LineWriter:
    """Whole lines to a stream from two threads. The first write that fails (a full disk,
    a closed pipe or stream) silences it for good and is reported to ``on_error``; the sink
    never raises into the engine, and the command decides how the run ends."""

    def __init__(
        self, stream: TextIO, *, name: str = "", on_error: OutputErrorHandler | None = None
    ) -> None:
        self._stream = stream
        # sys.stdout is named "<stdout>"; a file, by its path.
        self._name = name or str(getattr(stream, "name", "") or "output").strip("<>")
        self._on_error = on_error
        self._lock = threading.Lock()
        self.error: str | None = None

    def write(self, line: str) -> None:
        with self._lock:
            if self.error is not None:
                return
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
                return
            except (OSError, ValueError) as exc:
                self.error = f"cannot write to {self._name}: {output_error_text(exc)}"
        if self._on_error is not None:
            self._on_error(self.error)


class _LineSink:
    """What both line sinks share: the tally, the rate, the ticker that calls ``progress``.

    ``__call__`` counts every event, then hands it to ``_show`` (``BytesReceived`` is only
    summed); ``progress`` hands the tally and the current rate to ``_progress``.
    """

    def __init__(
        self,
        out: _LineWriter,
        *,
        interval_s: float,
        clock: Callable[[], float],
        ticking: bool,
    ) -> None:
        self._out = out
        self._clock = clock
        self._tally = Tally()
        self._rate = Rate(max(5.0, interval_s))
        self._ticker = _Ticker(interval_s, self.progress) if ticking else None
        self._ticking = False

    def __call__(self, event: Event) -> None:
        if type(event) is BytesReceived:
            self._tally.done_bytes += event.count
            return
        now = self._clock()
        if isinstance(event, RunFinished):
            self.close()  # first, so that no progress line can follow the summary
        self._tally.count(event, now)
        if isinstance(event, RunStarted):
            self._rate.reset(now)
        self._show(event)
        if isinstance(event, RunStarted) and self._ticker is not None and not self._ticking:
            self._ticking = True
            self._ticker.start()

    def expect(self, plan: Plan) -> None:
        """Nothing to prepare: lines carry run-wide totals only."""

    def note(self, message: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()

    def progress(self) -> None:
        """Write one progress line now (the ticker's job; public for tests)."""
        t = self._tally
        if t.started_at is None or t.summary is not None:
            return
        self._progress(t, self._rate.sample(self._clock(), t.done_bytes))

    def _show(self, event: Event) -> None:
        raise NotImplementedError

    def _progress(self, t: Tally, rate: float | None) -> None:
        raise NotImplementedError


class PlainProgressSink(_LineSink):
    """For logs and pipes: a progress line every ``interval_s`` and warnings as they happen,
    no colour, no carriage return. ``quiet``: only failed files.

    Lines start with the local date and time, since Slurm and cron logs have none of their
    own. With ``ticking`` a thread writes the progress lines; tests call ``progress()``.
    ``on_output_error`` is told once if the stream cannot be written.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        interval_s: float = 10.0,
        quiet: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
        ticking: bool = True,
        on_output_error: OutputErrorHandler | None = None,
    ) -> None:
        super().__init__(
            _LineWriter(stream, on_error=on_output_error),
            interval_s=interval_s,
            clock=clock,
            ticking=ticking and not quiet,
        )
        self._quiet = quiet
        self._wallclock = wallclock

    def note(self, message: str) -> None:
        self._line(message)

    def _show(self, event: Event) -> None:
        if isinstance(event, FileFailed):
            self._line(warning_text(event))
        elif self._quiet:
            pass
        elif is_warning(event):
            self._line(warning_text(event))
        elif isinstance(event, ManifestLoaded):
            self._line(
                f"manifest {event.dataset}: {event.selected:,} of {event.rows:,} rows selected"
                + (f", {event.malformed:,} malformed" if event.malformed else "")
            )
        elif isinstance(event, PlanBuilt):
            self._line(
                f"plan: {event.files:,} files, {human_bytes(event.fetch_bytes)} to fetch "
                f"(planned in {event.elapsed_s:.1f}s)"
            )

    def _progress(self, t: Tally, rate: float | None) -> None:
        speed = "--" if rate is None else f"{human_bytes(rate)}/s"
        problems = t.failed + t.missing + t.denied
        self._line(
            f"progress {t.percent:.1f}%: {human_bytes(t.done_bytes)} of "
            f"{human_bytes(t.total_bytes)}, {speed}, "
            f"{eta_text(eta_s(t.total_bytes - t.done_bytes, rate))}, files "
            f"{t.files_done:,}/{t.files:,}"
            + (f" ({problems:,} failed)" if problems else "")
            + (f", {t.retries:,} retries" if t.retries else "")
        )

    def _line(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._wallclock()))
        self._out.write(f"{stamp} {safe(text)}")


class JsonLinesSink(_LineSink):
    """``--json``: one JSON object per line: every event but ``BytesReceived``, which is
    summed into a ``Progress`` object every ``interval_s``; the last line is ``RunFinished``
    with the summary. Notes go to ``log`` as text. ``on_output_error`` is told once if
    ``stream`` (or ``log``) cannot be written."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        ticking: bool = True,
        log: TextIO | None = None,
        on_output_error: OutputErrorHandler | None = None,
    ) -> None:
        super().__init__(
            _LineWriter(stream, on_error=on_output_error),
            interval_s=interval_s,
            clock=clock,
            ticking=ticking,
        )
        self._log = _LineWriter(log, on_error=on_output_error) if log is not None else None

    def note(self, message: str) -> None:
        """To ``log`` (stderr), as plain text: the JSON stream stays JSON."""
        if self._log is not None:
            self._log.write(safe(message))

    def _show(self, event: Event) -> None:
        self._write(event_json(event))

    def _progress(self, t: Tally, rate: float | None) -> None:
        self._write(
            {
                "event": "Progress",
                "bytes": t.done_bytes,
                "total_bytes": t.total_bytes,
                "bytes_per_s": None if rate is None else round(rate, 1),
                "eta_s": _round(eta_s(t.total_bytes - t.done_bytes, rate)),
                "files_done": t.files_done,
                "files": t.files,
                "retries": t.retries,
            }
        )

    def _write(self, doc: dict[str, object]) -> None:
        self._out.write(json.dumps(doc))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
