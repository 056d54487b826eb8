"""The live dashboard for a terminal (a Rich ``Live`` view of a run), and the progress of
reading files back (``verify``, adoption).

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
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.spinner import Spinner
from rich.text import Text

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
from .progress import Rate, Tally, eta_s, eta_text, is_warning, label, warning_text
from .report import human_bytes, human_duration

__all__ = ["CheckProgressSink", "Dashboard"]

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
    """A dataset's line: totals from the plan (``planned``), else grown from the events."""

    name: str
    size_bytes: int = 0
    files: int = 0
    done_bytes: int = 0
    files_done: int = 0
    files_failed: int = 0
    planned: bool = False


@dataclass(slots=True, kw_only=True)
class _Transfer:
    """A file in flight; ``seen_bytes`` and ``idle_since`` are the drawing thread's own."""

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
            _header(self._title, summary, tally, now - tally.started_at, width),
            _overall(tally, rate, summary, width, plain),
        ]
        bottom = [Text(""), _counters(tally, self._retrying)]
        if warnings:
            bottom += _warnings_box(warnings, warning_count, tally.started_at, width)
        datasets_height = len(self._datasets) + 1
        room = height - len(top) - len(bottom) - datasets_height - 3
        rows, shown, in_flight = self._snapshot(now, max(1, min(self._max_transfers, room)))
        lines = top
        if rows:
            lines += [Text(""), *_datasets(rows, width, plain)]
        if in_flight:
            lines += [Text(""), *_transfers(shown, in_flight, summary is not None, width, plain)]
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


def _bar(done: float, total: float, width: int, plain: bool) -> Text:
    """A progress bar as text, drawn as Rich's ``ProgressBar`` is: half-cell resolution, the
    rest dimmed (or blank when the terminal has no colour, where dimming would not show)."""
    fraction = min(1.0, done / total) if total > 0 else 1.0
    full, half = divmod(int(width * 2 * fraction), 2)
    style = "bar.finished" if fraction >= 1.0 else "bar.complete"
    bar = Text("━" * full, style=style)
    if half:
        bar.append("╸", style=style)
    rest = width - full - half
    if plain:
        bar.append(" " * rest)
    elif rest:
        if full and not half:
            bar.append("╺", style="bar.back")
            rest -= 1
        bar.append("━" * rest, style="bar.back")
    return bar


def _fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells with an ellipsis, or padded to it."""
    if len(text) > width:
        return text[: max(0, width - 1)] + "…"
    return text.ljust(width)


def _header(
    title: str, summary: RunSummary | None, tally: Tally, elapsed: float, width: int
) -> Text:
    if summary is None:
        state, style = "downloading", "bold cyan"
    elif summary.stop_kind == "interrupted":
        state, style = "interrupted", "bold yellow"
    elif summary.stopped_by:
        state, style = "stopped", "bold red"
    elif summary.ok:
        state, style = "finished", "bold green"
    else:
        state, style = "finished with problems", "bold red"
    if summary is not None:
        elapsed = summary.elapsed_s
    why = f" ({tally.concurrency_why})" if tally.concurrency_why else ""
    right = f"  {human_duration(elapsed)}  concurrency {tally.concurrency}{why}"
    left = _fit(f"ego4d-dl  {title}", max(8, width - len(state) - len(right) - 1))
    line = Text(left)
    line.stylize("bold", 0, 8)
    line.append(" ")
    line.append(state, style=style)
    line.append(right)
    return line


def _overall(
    tally: Tally, rate: float | None, summary: RunSummary | None, width: int, plain: bool
) -> Text:
    remaining = tally.total_bytes - tally.done_bytes
    if summary is None:
        eta = eta_text(eta_s(remaining, rate))
    else:
        eta = "stopped" if summary.stopped_by else "done"
    speed = "--" if rate is None else f"{human_bytes(rate)}/s"
    figures = Text.assemble(
        (f"{tally.percent:5.1f}%", "bold"),
        f"  {human_bytes(tally.done_bytes)} / {human_bytes(tally.total_bytes)}",
        f"  {speed}  ",
        (eta, "bold"),
    )
    bar = _bar(tally.done_bytes, tally.total_bytes, max(5, width - len(figures) - 1), plain)
    return Text.assemble(bar, " ", figures)


def _datasets(rows: list[_DatasetRow], width: int, plain: bool) -> list[Text]:
    cells = []
    for r in rows:
        if r.size_bytes:
            pct = 100.0 * r.done_bytes / r.size_bytes
        elif r.files:  # only empty (or failed) files: count them instead
            pct = 100.0 * (r.files_done + r.files_failed) / r.files
        else:
            pct = 100.0
        files = f"{r.files_done:,}/{r.files:,} files"
        if r.files_failed:
            files += f" ({r.files_failed:,} failed)"
        amount = f"{human_bytes(r.done_bytes)} / {human_bytes(r.size_bytes)}"
        cells.append((r, min(100.0, pct), amount, files))
    name_w = min(24, max(len(r.name) for r in rows))
    amount_w = max(len(c[2]) for c in cells)
    files_w = max(len(c[3]) for c in cells)
    bar_w = max(10, min(40, width - name_w - amount_w - files_w - 10))
    lines = []
    for r, pct, amount, files in cells:
        line = Text(_fit(r.name, name_w) + " ")
        line.append(_bar(pct, 100.0, bar_w, plain))
        line.append(f" {pct:5.1f}% {amount.rjust(amount_w)} ")
        line.append(files, style="red" if r.files_failed else "")
        lines.append(line)
    return lines


def _transfers(
    shown: list[_Shown], in_flight: int, stopped: bool, width: int, plain: bool
) -> list[Text]:
    title = f"{in_flight:,} transfers " + (
        "cut short (they resume next time)" if stopped else "in flight"
    )
    if in_flight > len(shown):
        title += f", the largest {len(shown)}"
    # file, bar, then done (6), size (9), rate (12) and retries (7), a space between each.
    free = max(10, width - 6 - 9 - 12 - 7 - 5)
    bar_w = max(5, free * 2 // 5)
    label_w = free - bar_w
    header = f"{'file'.ljust(label_w)} {''.ljust(bar_w)} {'done':>6} {'size':>9} "
    lines = [Text(title, style="bold"), Text(header + f"{'rate':>12} {'retries':>7}", "dim")]
    for s in shown:
        pct = 100.0 * s.done_bytes / s.size_bytes if s.size_bytes else 100.0
        if s.retrying:
            rate = Text(f"{'retrying':>12}", style="yellow")
        elif s.idle_s >= _IDLE_SHOWN_S and s.done_bytes < s.size_bytes:
            rate = Text(f"{f'stalled {s.idle_s:.0f}s':>12}", style="bold red")
        else:
            speed = "--" if s.bytes_per_s is None else f"{human_bytes(s.bytes_per_s)}/s"
            rate = Text(f"{speed:>12}")
        line = Text(_fit(s.label, label_w) + " ")
        line.append(_bar(s.done_bytes, s.size_bytes, bar_w, plain))
        line.append(f" {min(100.0, pct):5.1f}% {human_bytes(s.size_bytes):>9} ")
        line.append(rate)
        line.append(f" {s.retries:>7}", style="yellow" if s.retries else "dim")
        lines.append(line)
    return lines


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
    totals = [
        f"{n:,} {name}"
        for n, name in ((tally.retries, "retries"), (tally.restarts, "restarts"))
        if n
    ]
    if totals:
        text.append(f"  ({', '.join(totals)})", style="yellow")
    return text


def _warnings_box(
    warnings: list[tuple[float, Event]], count: int, started: float, width: int
) -> list[Text]:
    title = "latest warnings" if count <= len(warnings) else f"latest warnings ({count:,} in all)"
    inner = max(10, width - 4)
    lines = [Text(f"╭─ {title} " + "─" * max(0, inner - len(title) - 1) + "╮", "yellow")]
    for at, event in warnings:
        line = Text("│ ", "yellow")
        stamp = f"+{human_duration(at - started)} "
        line.append(stamp, style="dim")
        line.append(
            _fit(warning_text(event), inner - len(stamp)),
            style=_WARNING_STYLE.get(type(event), ""),
        )
        line.append(" │", "yellow")
        lines.append(line)
    lines.append(Text("╰" + "─" * (inner + 2) + "╯", "yellow"))
    return lines


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
