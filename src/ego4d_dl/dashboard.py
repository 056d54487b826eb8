"""The live dashboard for a terminal: a Rich ``Live`` view of a run.

With ``report``, the only modules that import rich. ``__call__`` runs in the event-loop
thread for every event and only updates counters (``BytesReceived`` touches three integers
and no lock); frames are drawn by Rich's refresh thread at a bounded rate. Mutable state
shared with that thread is guarded by one lock, taken only by the rare events that add or
remove entries. Imports ``progress``, ``events``, ``plan`` and ``report``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from .events import (
    BytesReceived,
    ConcurrencyChanged,
    Event,
    FileFailed,
    FileRestarted,
    FileSkipped,
    FileStarted,
    FileVerified,
    IntegrityFailed,
    ManifestLoaded,
    ObjectsLookedUp,
    PlanBuilt,
    RangeRetried,
    RunFinished,
    RunStarted,
    RunSummary,
)
from .plan import Plan
from .progress import WARNINGS, Rate, Tally, eta_s, eta_text, label, warning_text
from .report import human_bytes, human_duration

__all__ = ["Dashboard"]

# A transfer with no new byte for this long is shown as stalled (the engine's own stall
# timeout, 60 s by default, then retries it on a fresh connection).
_IDLE_SHOWN_S = 5.0


_WARNING_STYLE = {
    RangeRetried: "yellow",
    FileRestarted: "magenta",
    IntegrityFailed: "red",
    FileFailed: "red",
    ConcurrencyChanged: "cyan",
}


@dataclass(slots=True, kw_only=True)
class _DatasetRow:
    name: str
    size_bytes: int = 0
    files: int = 0
    done_bytes: int = 0
    files_done: int = 0
    files_failed: int = 0
    planned: bool = False


@dataclass(slots=True, kw_only=True)
class _Transfer:
    label: str
    row: _DatasetRow
    size_bytes: int
    done_bytes: int
    retries: int = 0
    retrying: bool = False
    rate: Rate = field(default_factory=lambda: Rate(3.0))
    seen_bytes: int = -1
    idle_since: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Shown:
    """One active transfer as drawn (copied under the lock)."""

    label: str
    size_bytes: int
    done_bytes: int
    bytes_per_s: float | None
    idle_s: float
    retries: int
    retrying: bool


class Dashboard:
    """The live view for a terminal: overall bar with rate and ETA, a line per dataset, the
    largest transfers in flight, counters, concurrency and the latest warnings.

    ``render()`` builds one frame at ``clock()``; with ``live`` a Rich ``Live`` on ``console``
    draws frames ``refresh_per_second`` times a second from its own thread (one transient
    status line while planning, then the dashboard from ``RunStarted`` to ``RunFinished``,
    whose last frame stays on screen).
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
        self._datasets: dict[str, _DatasetRow] = {}
        self._active: dict[tuple[str, str], _Transfer] = {}
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
        if isinstance(event, WARNINGS):
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
            self._title = f"Ego4D {plan.version} -> {plan.output_directory}"
            for ds in plan.datasets:
                totals = ds.totals
                row = self._row(ds.name)
                row.size_bytes, row.files, row.planned = totals.size_bytes, totals.files, True

    def note(self, message: str) -> None:
        # Through the live console, so the message lands above the frame, not inside it.
        self._console.print(Text(message, style="yellow"))

    def close(self) -> None:
        self._stop_live()

    def _row(self, name: str) -> _DatasetRow:
        row = self._datasets.get(name)
        if row is None:
            row = self._datasets[name] = _DatasetRow(name=name)
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
                t = self._active[key] = _Transfer(
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
                self._planning.append(f"{event.dataset} ({event.selected:,} files)")
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
        elapsed = summary.elapsed_s if summary is not None else now - tally.started_at
        rate = self._rate.sample(now, tally.done_bytes)
        if summary is not None:
            rate = summary.throughput_bytes_s
        with self._lock:
            warnings, warning_count = list(self._warnings), self._warning_count
        # header, overall, blank, datasets, blank, transfers' title and header, blank,
        # counters, warnings with their border
        fixed = 2 + 1 + len(self._datasets) + 1 + 2 + 1 + 1 + (len(warnings) + 2) * bool(warnings)
        limit = max(1, min(self._max_transfers, self._console.height - fixed))
        rows, shown, in_flight = self._snapshot(now, limit)
        parts: list[RenderableType] = [
            _header(self._title, summary, tally.concurrency, elapsed),
            _overall(tally, rate, summary),
        ]
        if rows:
            parts += [Text(""), _datasets(rows, self._console.width)]
        if in_flight:
            parts += [Text(""), _transfers(shown, in_flight, stopped=summary is not None)]
        parts += [Text(""), _counters(tally, self._retrying)]
        if warnings:
            parts.append(_warnings_panel(warnings, warning_count, tally.started_at))
        return Group(*parts)

    def _planning_status(self) -> RenderableType:
        with self._lock:
            manifests = ", ".join(self._planning)
            done, total = self._lookups
        text = "planning"
        if manifests:
            text += f": manifests of {manifests}"
        if total:
            text += f"; looked up {done:,} of {total:,} objects"
        return Spinner("dots", text=text)

    def _snapshot(self, now: float, limit: int) -> tuple[list[_DatasetRow], list[_Shown], int]:
        """Copies of what the frame shows, and the number of transfers in flight."""
        with self._lock:
            rows = [
                _DatasetRow(
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
                _Shown(
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


def _header(title: str, summary: RunSummary | None, concurrency: int, elapsed: float) -> Table:
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    grid.add_column(no_wrap=True, justify="right")
    left = Text.assemble(("ego4d-dl", "bold"), f"  {title}" if title else "")
    if summary is None:
        state = Text("downloading", style="bold cyan")
    elif summary.stop_kind == "interrupted":
        state = Text("interrupted", style="bold yellow")
    elif summary.stopped_by:
        state = Text("stopped", style="bold red")
    elif summary.ok:
        state = Text("finished", style="bold green")
    else:
        state = Text("finished with problems", style="bold red")
    state.append(f"  {human_duration(elapsed)}  concurrency {concurrency}", style="default")
    grid.add_row(left, state)
    return grid


def _overall(tally: Tally, rate: float | None, summary: RunSummary | None) -> Table:
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1)
    grid.add_column(no_wrap=True, justify="right")
    remaining = tally.total_bytes - tally.done_bytes
    if summary is None:
        eta = eta_text(eta_s(remaining, rate))
    else:
        eta = "stopped" if summary.stopped_by else "done"
    speed = "--" if rate is None else f"{human_bytes(rate)}/s"
    grid.add_row(
        ProgressBar(total=max(1, tally.total_bytes), completed=tally.done_bytes),
        Text.assemble(
            (f"{tally.percent:5.1f}%", "bold"),
            f"  {human_bytes(tally.done_bytes)} / {human_bytes(tally.total_bytes)}",
            f"  {speed}  ",
            (eta, "bold"),
        ),
    )
    return grid


def _datasets(rows: list[_DatasetRow], width: int) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, overflow="ellipsis", max_width=24)
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True, justify="right")
    grid.add_column(no_wrap=True, justify="right")
    grid.add_column(no_wrap=True)
    bar_width = max(10, min(40, width - 70))
    for r in rows:
        if r.size_bytes:
            pct = 100.0 * r.done_bytes / r.size_bytes
        elif r.files:  # only empty (or failed) files: count them instead
            pct = 100.0 * (r.files_done + r.files_failed) / r.files
        else:
            pct = 100.0
        pct = min(100.0, pct)
        files = f"{r.files_done:,}/{r.files:,} files"
        if r.files_failed:
            files += f" ({r.files_failed:,} failed)"
        grid.add_row(
            r.name,
            ProgressBar(total=100.0, completed=pct, width=bar_width),
            f"{pct:5.1f}%",
            f"{human_bytes(r.done_bytes)} / {human_bytes(r.size_bytes)}",
            Text(files, style="red" if r.files_failed else ""),
        )
    return grid


def _transfers(shown: list[_Shown], in_flight: int, *, stopped: bool) -> Table:
    title = f"{in_flight:,} transfers " + (
        "cut short (they resume next time)" if stopped else "in flight"
    )
    if in_flight > len(shown):
        title += f", the largest {len(shown)}"
    table = Table(
        box=None,
        expand=True,
        pad_edge=False,
        padding=(0, 1),
        title=title,
        title_justify="left",
        title_style="bold",
        header_style="dim",
    )
    table.add_column("file", ratio=3, no_wrap=True, overflow="ellipsis")
    table.add_column("", ratio=2, no_wrap=True)
    table.add_column("done", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("rate", justify="right", no_wrap=True)
    table.add_column("retries", justify="right", no_wrap=True)
    for s in shown:
        pct = 100.0 * s.done_bytes / s.size_bytes if s.size_bytes else 100.0
        if s.retrying:
            rate = Text("retrying", style="yellow")
        elif s.idle_s >= _IDLE_SHOWN_S and s.done_bytes < s.size_bytes:
            rate = Text(f"stalled {s.idle_s:.0f}s", style="bold red")
        else:
            rate = Text("--" if s.bytes_per_s is None else f"{human_bytes(s.bytes_per_s)}/s")
        table.add_row(
            s.label,
            ProgressBar(total=max(1, s.size_bytes), completed=s.done_bytes),
            f"{min(100.0, pct):5.1f}%",
            human_bytes(s.size_bytes),
            rate,
            Text(str(s.retries), style="yellow" if s.retries else "dim"),
        )
    return table


def _counters(tally: Tally, retrying: int) -> Text:
    text = Text(f"files {tally.files_done:,}/{tally.files:,}:", style="bold")
    parts = [
        ("verified", tally.verified, "green"),
        ("skipped", tally.skipped, "cyan"),
        ("failed", tally.failed, "red"),
        ("missing", tally.missing, "red"),
        ("denied", tally.denied, "red"),
        ("retrying", retrying, "yellow"),
    ]
    for name, n, style in parts:
        if n or name != "denied":  # denied is rare: shown only when it happens
            text.append(f"  {n:,} {name}", style=style if n else "dim")
    if tally.retries or tally.restarts:
        text.append(f"  ({tally.retries:,} retries, {tally.restarts:,} restarts)", style="yellow")
    return text


def _warnings_panel(warnings: list[tuple[float, Event]], count: int, started: float) -> Panel:
    lines = Text(no_wrap=True, overflow="ellipsis")
    for i, (at, event) in enumerate(warnings):
        if i:
            lines.append("\n")
        lines.append(f"+{human_duration(at - started)} ", style="dim")
        lines.append(warning_text(event), style=_WARNING_STYLE.get(type(event), ""))
    title = "latest warnings" if count <= len(warnings) else f"latest warnings ({count:,} in all)"
    return Panel(lines, title=title, title_align="left", border_style="yellow")
