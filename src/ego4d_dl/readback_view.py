"""Progress of reading files back (``verify``, adoption): a Rich bar on a terminal, periodic
plain lines elsewhere, each damaged file as it is found."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from .events import BytesHashed, CheckStarted, Event, FileChecked
from .formatting import human_bytes
from .text import safe

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["CheckProgressSink"]


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
                self._start_bar(event.size_bytes)
        elif isinstance(event, BytesHashed):
            self._done += event.count
        elif isinstance(event, FileChecked):
            self._finished += 1
            if event.verdict != "ok" and self._list_damaged:
                self._write(safe(f"{event.verdict}: {event.dest}: {event.reason}"))
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

    def _start_bar(self, size_bytes: int) -> None:
        # Imported for a terminal only: logs, pipes and --quiet never load the bar.
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

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
        self._task = self._progress.add_task("", total=size_bytes, files="")
        self._progress.start()

    def _write(self, text: str) -> None:
        if self._progress is not None:
            from rich.text import Text

            self._progress.console.print(Text(text))
            return
        # A stream that cannot be written is the progress sink's to report, not this one's.
        with contextlib.suppress(OSError, ValueError):
            self._stream.write(text + "\n")
            self._stream.flush()

    def close(self) -> None:
        """Take the bar off the screen (idempotent)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
