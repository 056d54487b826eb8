"""The live dashboard's panels as Rich renderables: bars, the header, datasets, transfers,
counters, warnings. Pure functions of the values the dashboard keeps; only Rich and formatting.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text

from .events import (
    ConcurrencyChanged,
    Event,
    FileFailed,
    FileRestarted,
    IntegrityFailed,
    RangeRetried,
    RunSummary,
)
from .formatting import eta_s, eta_text, human_bytes, human_duration
from .sinks import Rate, Tally, warning_text

# A transfer with no new byte for this long is shown as stalled (the engine's own stall
# timeout, 60 s by default, then retries it on a fresh connection).
IDLE_SHOWN_S = 5.0

WARNING_STYLE = {
    RangeRetried: "yellow",
    FileRestarted: "magenta",
    IntegrityFailed: "red",
    FileFailed: "red",
    ConcurrencyChanged: "cyan",
}


@dataclass(slots=True, kw_only=True)
class DatasetRow:
    """A dataset's line: totals from the plan (``planned``), else grown from the events."""

    name: str
    size_bytes: int = 0
    files: int = 0
    done_bytes: int = 0
    files_done: int = 0
    files_failed: int = 0
    planned: bool = False


@dataclass(slots=True, kw_only=True)
class TransferRow:
    """A file in flight; ``seen_bytes`` and ``idle_since`` are the drawing thread's own."""

    label: str
    row: DatasetRow
    size_bytes: int
    done_bytes: int
    retries: int = 0
    retrying: bool = False
    rate: Rate = field(default_factory=lambda: Rate(3.0))
    seen_bytes: int = -1
    idle_since: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Shown:
    """One active transfer as drawn (copied under the lock)."""

    label: str
    size_bytes: int
    done_bytes: int
    bytes_per_s: float | None
    idle_s: float
    retries: int
    retrying: bool


def progress_bar(done: float, total: float, width: int, plain: bool) -> Text:
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


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells with an ellipsis, or padded to it."""
    if len(text) > width:
        return text[: max(0, width - 1)] + "…"
    return text.ljust(width)


def header(
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
    left = fit(f"ego4d-dl  {title}", max(8, width - len(state) - len(right) - 1))
    line = Text(left)
    line.stylize("bold", 0, 8)
    line.append(" ")
    line.append(state, style=style)
    line.append(right)
    return line


def overall(
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
    bar = progress_bar(tally.done_bytes, tally.total_bytes, max(5, width - len(figures) - 1), plain)
    return Text.assemble(bar, " ", figures)


def datasets(rows: list[DatasetRow], width: int, plain: bool) -> list[Text]:
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
        line = Text(fit(r.name, name_w) + " ")
        line.append(progress_bar(pct, 100.0, bar_w, plain))
        line.append(f" {pct:5.1f}% {amount.rjust(amount_w)} ")
        line.append(files, style="red" if r.files_failed else "")
        lines.append(line)
    return lines


def transfers(
    shown: list[Shown], in_flight: int, stopped: bool, width: int, plain: bool
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
        elif s.idle_s >= IDLE_SHOWN_S and s.done_bytes < s.size_bytes:
            rate = Text(f"{f'stalled {s.idle_s:.0f}s':>12}", style="bold red")
        else:
            speed = "--" if s.bytes_per_s is None else f"{human_bytes(s.bytes_per_s)}/s"
            rate = Text(f"{speed:>12}")
        line = Text(fit(s.label, label_w) + " ")
        line.append(progress_bar(s.done_bytes, s.size_bytes, bar_w, plain))
        line.append(f" {min(100.0, pct):5.1f}% {human_bytes(s.size_bytes):>9} ")
        line.append(rate)
        line.append(f" {s.retries:>7}", style="yellow" if s.retries else "dim")
        lines.append(line)
    return lines


def counters(tally: Tally, retrying: int) -> Text:
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


def warnings_box(
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
            fit(warning_text(event), inner - len(stamp)),
            style=WARNING_STYLE.get(type(event), ""),
        )
        line.append(" │", "yellow")
        lines.append(line)
    lines.append(Text("╰" + "─" * (inner + 2) + "╯", "yellow"))
    return lines
