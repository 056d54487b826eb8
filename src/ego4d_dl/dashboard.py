"""The live dashboard for a terminal: a Rich ``Live`` view of a run, drawn from the events."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from . import panels
from .events import (
    BytesReceived,
    Event,
    FileFailed,
    FileSkipped,
    FileStarted,
    FileVerified,
    ManifestLoaded,
    ObjectsLookedUp,
    PlanBuilt,
    RangeRetried,
    RunFinished,
    RunStarted,
)
from .formatting import label
from .planned import Plan
from .sinks import Rate, Tally, is_warning
from .text import safe

__all__ = ["Dashboard"]


class Dashboard:
    """The live view for a terminal: overall bar with rate and ETA, a line per dataset, the
    largest transfers in flight, counters, concurrency and the latest warnings.

    ``render()`` builds one frame at ``clock()``; with ``live`` a Rich ``Live`` on ``console``
    draws frames ``refresh_per_second`` times a second from its own thread (one transient
    status line while planning, then the dashboard from ``RunStarted`` to ``RunFinished``,
    whose last frame stays on screen). ``redirect_stderr``: show what is written to
    ``sys.stderr`` during the run above the frame; only right when stderr is that terminal.
    """

    def __init__(
        self,
        console: Console,
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_per_second: float = 4.0,
        max_transfers: int = 8,
        max_warnings: int = 4,
        live: bool = True,
        redirect_stderr: bool = True,
    ) -> None:
        self._console = console
        self._clock = clock
        self._refresh_per_second = refresh_per_second
        self._max_transfers = max_transfers
        self._use_live = live
        self._redirect_stderr = redirect_stderr
        self._lock = threading.Lock()
        self._tally = Tally()
        self._rate = Rate(5.0)
        self._datasets: dict[str, panels.DatasetRow] = {}
        self._active: dict[tuple[str, str], panels.TransferRow] = {}
        self._retrying = 0
        self._warnings: deque[tuple[float, Event]] = deque(maxlen=max_warnings)
        self._warning_count = 0
        self._title = ""
        self._planning: list[str] = []
        self._lookups = (0, 0)
        self._live: Live | None = None

    # --- events (event-loop thread) --------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if type(event) is BytesReceived:
            n = event.count
            self._tally.done_bytes += n
            t = self._active.get((event.dataset, event.key))
            if t is not None:
                t.done_bytes += n
                t.row.done_bytes += n
                if t.retrying:
                    t.retrying = False
                    self._retrying -= 1
            return
        now = self._clock()
        self._tally.count(event, now)
        if isinstance(event, FileStarted):
            self._started(event)
        elif isinstance(event, FileVerified | FileFailed):
            self._ended(event)
        elif isinstance(event, FileSkipped):
            with self._lock:
                row = self._row(event.dataset)
                if not row.planned:
                    row.size_bytes += event.size_bytes
                    row.files += 1
                row.done_bytes += event.size_bytes
                row.files_done += 1
        elif isinstance(event, RangeRetried):
            t = self._active.get((event.dataset, event.key))
            if t is not None:
                t.retries += 1
                if not t.retrying:
                    t.retrying = True
                    self._retrying += 1
        if is_warning(event):
            self._warn(now, event)
        elif isinstance(event, ManifestLoaded | ObjectsLookedUp):
            self._planning_step(event)
        elif isinstance(event, PlanBuilt):
            self._stop_live()
        elif isinstance(event, RunStarted):
            self._rate.reset(now)
            self._start_live(transient=False)
        elif isinstance(event, RunFinished):
            self._stop_live()

    def expect(self, plan: Plan) -> None:
        with self._lock:
            self._title = safe(f"{plan.family} {plan.version} -> {plan.output_directory}")
            for ds in plan.datasets:
                totals = ds.totals
                row = self._row(ds.name)
                row.size_bytes, row.files, row.planned = totals.size_bytes, totals.files, True

    def note(self, message: str) -> None:
        # Through the live console, so the message lands above the frame, not inside it.
        self._console.print(Text(safe(message), style="yellow"))

    def close(self) -> None:
        self._stop_live()

    def _row(self, name: str) -> panels.DatasetRow:
        row = self._datasets.get(name)
        if row is None:
            row = self._datasets[name] = panels.DatasetRow(name=safe(name))
        return row

    def _started(self, event: FileStarted) -> None:
        key = (event.dataset, event.key)
        with self._lock:
            t = self._active.get(key)
            if t is None:
                row = self._row(event.dataset)
                if not row.planned:
                    row.size_bytes += event.size_bytes
                    row.files += 1
                t = self._active[key] = panels.TransferRow(
                    label=label(event.dataset, event.key),
                    row=row,
                    size_bytes=event.size_bytes,
                    done_bytes=0,
                )
            else:
                # Started again (its object changed, or its bytes failed verification).
                t.row.size_bytes += event.size_bytes - t.size_bytes
                t.size_bytes = event.size_bytes
            t.row.done_bytes += event.present_bytes - t.done_bytes
            t.done_bytes = event.present_bytes
            t.seen_bytes = -1

    def _ended(self, event: FileVerified | FileFailed) -> None:
        with self._lock:
            t = self._active.pop((event.dataset, event.key), None)
            row = t.row if t is not None else self._row(event.dataset)
            if t is not None and t.retrying:
                self._retrying -= 1
            if isinstance(event, FileVerified):
                row.files_done += 1
                if t is not None:
                    row.done_bytes += t.size_bytes - t.done_bytes
            else:
                row.files_failed += 1
                if not row.planned and t is None:
                    row.files += 1
                if t is not None:
                    # Its bytes will not end up in the dataset; keep the bar honest.
                    row.done_bytes -= t.done_bytes

    def _warn(self, now: float, event: Event) -> None:
        with self._lock:
            self._warnings.append((now, event))
            self._warning_count += 1

    def _planning_step(self, event: ManifestLoaded | ObjectsLookedUp) -> None:
        with self._lock:
            if isinstance(event, ManifestLoaded):
                self._planning.append(f"{safe(event.dataset)} ({event.selected:,} files)")
            else:
                done, _ = self._lookups
                self._lookups = (done + event.count, event.total)
        if self._live is None:
            self._start_live(transient=True)

    # --- drawing ---------------------------------------------------------------------------

    def _start_live(self, *, transient: bool) -> None:
        self._stop_live()
        if not self._use_live:
            return
        live = Live(
            console=self._console,
            get_renderable=self.render,
            refresh_per_second=self._refresh_per_second,
            transient=transient,
            redirect_stderr=self._redirect_stderr,
        )
        self._live = live
        live.start(refresh=True)

    def _stop_live(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    def render(self) -> RenderableType:
        """One frame as of ``clock()``: the planning status before ``RunStarted``, else the
        dashboard, with as many transfers as the console's height leaves room for."""
        now = self._clock()
        tally = self._tally
        if tally.started_at is None:
            return self._planning_status()
        summary = tally.summary
        rate = self._rate.sample(now, tally.done_bytes)
        if summary is not None:
            rate = summary.throughput_bytes_s
        with self._lock:
            warnings, warning_count = list(self._warnings), self._warning_count
        width, height = self._console.width, self._console.height
        # Laid out by hand as lines of text: Rich Tables measure every cell of every row on
        # every frame, which cost four times the CPU (13 ms a frame against 3.5 ms with 64
        # transfers in flight; benchmarks/dashboard_sink_cost.py).
        plain = self._console.no_color or self._console.color_system is None
        top = [
            panels.header(self._title, summary, tally, now - tally.started_at, width),
            panels.overall(tally, rate, summary, width, plain),
        ]
        bottom = [Text(""), panels.counters(tally, self._retrying)]
        if warnings:
            bottom += panels.warnings_box(warnings, warning_count, tally.started_at, width)
        datasets_height = len(self._datasets) + 1
        room = height - len(top) - len(bottom) - datasets_height - 3
        rows, shown, in_flight = self._snapshot(now, max(1, min(self._max_transfers, room)))
        lines = top
        if rows:
            lines += [Text(""), *panels.datasets(rows, width, plain)]
        if in_flight:
            lines += [
                Text(""),
                *panels.transfers(shown, in_flight, summary is not None, width, plain),
            ]
        frame = Text("\n").join(lines + bottom)
        frame.no_wrap, frame.overflow = True, "ellipsis"
        # In a Group, because Console.print re-joins bare Texts and drops no_wrap.
        return Group(frame)

    def _planning_status(self) -> RenderableType:
        with self._lock:
            manifests = ", ".join(self._planning)
            done, total = self._lookups
        text = "planning"
        if manifests:
            text += f": manifests of {manifests}"
        if total:
            text += f"; looked up {done:,} of {total:,} objects"
        return Spinner("dots", text=Text(text))

    def _snapshot(
        self, now: float, limit: int
    ) -> tuple[list[panels.DatasetRow], list[panels.Shown], int]:
        """Copies of what the frame shows, and the number of transfers in flight."""
        with self._lock:
            rows = [
                panels.DatasetRow(
                    name=r.name,
                    size_bytes=r.size_bytes,
                    files=r.files,
                    done_bytes=r.done_bytes,
                    files_done=r.files_done,
                    files_failed=r.files_failed,
                )
                for r in self._datasets.values()
            ]
            active = list(self._active.values())
        shown = []
        for t in active:
            done = t.done_bytes
            rate = t.rate.sample(now, done)
            if done != t.seen_bytes:
                t.seen_bytes, t.idle_since = done, now
            shown.append(
                panels.Shown(
                    label=t.label,
                    size_bytes=t.size_bytes,
                    done_bytes=done,
                    bytes_per_s=rate,
                    idle_s=now - t.idle_since,
                    retries=t.retries,
                    retrying=t.retrying,
                )
            )
        shown.sort(key=lambda s: (-s.size_bytes, s.label))
        return rows, shown[:limit], len(active)
