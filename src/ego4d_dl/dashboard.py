"""Event sinks that show a run: plain periodic lines, JSON lines, and checks' progress.

With ``report``, the only modules that import rich. Sinks are called synchronously by the
engine for every event, so they only update counters there and render on their own clock.
Imports ``events`` and ``report``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from .events import (
    BytesHashed,
    BytesReceived,
    CheckStarted,
    ConcurrencyChanged,
    Event,
    FileChecked,
    FileFailed,
    FileRestarted,
    FileSkipped,
    FileVerified,
    IntegrityFailed,
    RangeRetried,
    RunStarted,
)
from .report import event_json, human_bytes

__all__ = ["CheckProgressSink", "JsonLinesSink", "PlainProgressSink"]


class PlainProgressSink:
    """For logs and pipes: one progress line every ``interval_s``, warnings as they happen."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interval_s: float = 10.0,
        quiet: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._interval_s = interval_s
        self._quiet = quiet
        self._clock = clock
        self._started = clock()
        self._last = self._started
        self._total = 0
        self._done = 0
        self._files = 0
        self._finished = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, BytesReceived):
            self._done += event.count
        elif isinstance(event, RunStarted):
            self._started = self._last = self._clock()
            self._total = event.fetch_bytes
            self._files = event.files
            self._finished = event.skipped_files
        elif isinstance(event, FileVerified | FileFailed | FileSkipped):
            if not isinstance(event, FileSkipped):
                self._finished += 1
            if isinstance(event, FileFailed):
                self._line(f"{event.status}: {event.dataset}: {event.reason}", force=True)
        elif isinstance(event, RangeRetried | FileRestarted | IntegrityFailed | ConcurrencyChanged):
            self._line(_warning_text(event), force=True)
        now = self._clock()
        if now - self._last >= self._interval_s:
            self._last = now
            self._progress(now)

    def _progress(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        pct = 100.0 * self._done / self._total if self._total else 100.0
        self._line(
            f"progress: {human_bytes(self._done)} of {human_bytes(self._total)} ({pct:.1f}%), "
            f"{human_bytes(rate)}/s, files {self._finished:,}/{self._files:,}"
        )

    def _line(self, text: str, *, force: bool = False) -> None:
        if self._quiet and not force:
            return
        self._stream.write(text + "\n")
        self._stream.flush()


def _warning_text(event: Event) -> str:
    if isinstance(event, RangeRetried):
        what = "stalled" if event.stalled else "throttled" if event.throttled else "retry"
        return (
            f"{what}: {event.key} bytes {event.start}-{event.stop - 1}, attempt {event.attempt}, "
            f"next in {event.delay_s:.1f}s: {event.reason}"
        )
    if isinstance(event, FileRestarted):
        return (
            f"changed on the server, restarting: {event.key} ({event.old_etag} -> {event.new_etag})"
        )
    if isinstance(event, IntegrityFailed):
        return f"integrity: {event.key}: {event.reason}; refetching"
    if isinstance(event, ConcurrencyChanged):
        return f"concurrency now {event.limit} ({event.reason})"
    return type(event).__name__


class JsonLinesSink:
    """``--json``: one JSON object per line on ``stream``; bytes are batched per interval."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._interval_s = interval_s
        self._clock = clock
        self._last = clock()
        self._bytes = 0
        self._total = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, BytesReceived):
            self._bytes += event.count
            now = self._clock()
            if now - self._last >= self._interval_s:
                self._last = now
                self._write({"event": "Progress", "bytes": self._bytes, "total_bytes": self._total})
            return
        if isinstance(event, RunStarted):
            self._total = event.fetch_bytes
        self._write(event_json(event))

    def _write(self, doc: dict[str, object]) -> None:
        self._stream.write(json.dumps(doc) + "\n")
        self._stream.flush()


class CheckProgressSink:
    """Progress of reading files back (``verify``, adoption): a bar on a terminal, periodic
    lines elsewhere; with ``list_damaged``, a file found damaged is reported at once. Ignores
    every other event."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interval_s: float = 10.0,
        bar: bool | None = None,
        quiet: bool = False,
        list_damaged: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._list_damaged = list_damaged
        self._interval_s = interval_s
        self._quiet = quiet
        self._clock = clock
        self._bar = (stream.isatty() if bar is None else bar) and not quiet
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._started = self._last = clock()
        self._total = self._done = 0
        self._files = self._finished = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, CheckStarted):
            self._started = self._last = self._clock()
            self._total, self._done = event.size_bytes, 0
            self._files, self._finished = event.files, 0
            if self._bar and event.files:
                self._progress = Progress(
                    TextColumn("checking"),
                    BarColumn(),
                    DownloadColumn(binary_units=True),
                    TransferSpeedColumn(),
                    TextColumn("{task.fields[files]}"),
                    TimeRemainingColumn(),
                    console=Console(file=self._stream),
                    transient=True,
                )
                self._task = self._progress.add_task("", total=event.size_bytes, files="")
                self._progress.start()
        elif isinstance(event, BytesHashed):
            self._done += event.count
        elif isinstance(event, FileChecked):
            self._finished += 1
            if event.verdict != "ok" and self._list_damaged:
                self._write(f"{event.verdict}: {event.dest}: {event.reason}")
        else:
            return
        if self._progress is not None and self._task is not None:
            files = f"{self._finished:,}/{self._files:,} files"
            self._progress.update(self._task, completed=self._done, files=files)
            if self._finished >= self._files:
                self.close()
            return
        now = self._clock()
        if not self._quiet and (now - self._last >= self._interval_s):
            self._last = now
            rate = self._done / max(now - self._started, 1e-9)
            pct = 100.0 * self._done / self._total if self._total else 100.0
            self._write(
                f"checking: {human_bytes(self._done)} of {human_bytes(self._total)} read back "
                f"({pct:.1f}%), {human_bytes(rate)}/s, files {self._finished:,}/{self._files:,}"
            )

    def _write(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
            return
        self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Take the bar off the screen (idempotent)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
