"""Static Rich renderings of values: the plan, the datasets, the summary, status, verify, doctor."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .events import RunSummary
from .formatting import human_bytes, plural
from .planned import Action, Plan, Totals
from .results import Diagnosis, Severity, Status, StatusCounts, VerifyResult
from .shard import format_shard
from .text import safe

__all__ = [
    "confirmation_text",
    "render_datasets",
    "render_doctor",
    "render_plan",
    "render_status",
    "render_summary",
    "render_verify",
    "shown",
]


def shown(value: object) -> Text:
    """Untrusted ``value`` as Rich ``Text``: no markup, control characters escaped."""
    return Text(safe(str(value)))


def _line(*parts: str | tuple[str, str]) -> Text:
    """One line from pieces, each plain or ``(text, style)``; every piece is made ``safe``,
    none is parsed as markup."""
    return Text.assemble(*((safe(p[0]), p[1]) if isinstance(p, tuple) else safe(p) for p in parts))


def confirmation_text(plan: Plan, *, free_bytes: int | None) -> str:
    """What a download is about to do, for the prompt: size, file count, free space, what
    resumes and what is already complete (several lines, no trailing newline)."""
    t = plan.totals
    lines = [
        f"{safe(plan.family)} {safe(plan.version)} -> {safe(str(plan.output_directory))}: "
        f"{plural(t.fetch_files)} to fetch, "
        f"{human_bytes(t.fetch_bytes)}"
    ]
    resume = [f for f in plan.files if f.action is Action.RESUME]
    if resume:
        present = sum(f.present_bytes for f in resume)
        lines.append(
            f"  resuming {plural(len(resume))} partly downloaded: {human_bytes(present)} on disk, "
            f"{human_bytes(sum(f.bytes_to_fetch for f in resume))} to go"
        )
    if t.complete_files:
        lines.append(
            f"  already complete, skipped: {plural(t.complete_files)} "
            f"({human_bytes(t.complete_bytes)})"
        )
    if t.adopt_files:
        lines.append(
            f"  on disk already, adopted after a check: {plural(t.adopt_files)} "
            f"({human_bytes(t.adopt_bytes)})"
        )
    if t.problem_files:
        lines.append(f"  not available: {plural(t.problem_files)} (listed in the summary)")
    if free_bytes is None:
        lines.append("  free space: unknown")
    else:
        verdict = "enough" if free_bytes >= t.fetch_bytes else "NOT enough"
        lines.append(f"  free space: {human_bytes(free_bytes)}, {verdict}")
    return "\n".join(lines)


def _totals_row(name: str, t: Totals) -> list[Text | str]:
    resume = f", {t.resume_files:,} resume" if t.resume_files else ""
    return [
        shown(name),
        f"{t.files:,}",
        human_bytes(t.size_bytes),
        f"{t.complete_files:,} ({human_bytes(t.complete_bytes)})",
        f"{t.fetch_files:,} ({human_bytes(t.fetch_bytes)}{resume})",
        f"{t.problem_files:,}" if t.problem_files else "",
    ]


def render_plan(console: Console, plan: Plan, *, free_bytes: int | None) -> None:
    """The plan as a table per dataset with totals, free space and every problem file."""
    table = Table(
        title=_line(f"{plan.family} {plan.version} -> {plan.output_directory}"),
        title_justify="left",
    )
    table.add_column("dataset", overflow="fold")
    for header in ("files", "size", "complete", "to fetch", "failing"):
        table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    for ds in plan.datasets:
        table.add_row(*_totals_row(ds.name, ds.totals))
    total = plan.totals
    table.add_section()
    table.add_row(*_totals_row("total", total), style="bold")
    console.print(table)
    if free_bytes is not None:
        enough = free_bytes >= total.fetch_bytes
        console.print(
            _line(
                f"Needs {human_bytes(total.fetch_bytes)}; {human_bytes(free_bytes)} free: ",
                ("enough", "green") if enough else ("NOT enough", "red"),
            )
        )
    problems = [f for f in plan.files if f.action.is_problem]
    for f in problems[:50]:
        console.print(_line((f.action.value, "red"), f": {f.dataset}/{f.uid}: {f.note}"))
    if len(problems) > 50:
        console.print(_line(f"... and {len(problems) - 50} more problem files (see --json)"))


def render_datasets(console: Console, version: str, rows: Sequence[tuple[str, str]]) -> None:
    """The release's datasets.csv as a table."""
    table = Table(title=_line(f"Ego4D {version} datasets"), title_justify="left")
    table.add_column("dataset")
    table.add_column("description")
    for name, description in rows:
        table.add_row(shown(name), shown(description))
    console.print(table)


def render_summary(console: Console, summary: RunSummary) -> None:
    """The end-of-run summary: counts, bytes, throughput, retries, verification, problems."""
    rate = human_bytes(summary.throughput_bytes_s) + "/s"
    console.print(
        _line(
            (f"{summary.verified:,} downloaded and verified", "bold"),
            f", {summary.skipped:,} already complete, {summary.failed:,} failed, "
            f"{summary.missing:,} missing, {summary.denied:,} denied",
        )
    )
    console.print(
        _line(
            f"{human_bytes(summary.bytes_fetched)} fetched in {summary.elapsed_s:.1f}s ({rate}); "
            f"{summary.retries:,} retries, {summary.restarts:,} restarts"
        )
    )
    if summary.levels:
        levels = ", ".join(f"{n:,} by {level}" for level, n in sorted(summary.levels.items()))
        console.print(_line(f"verified: {levels}"))
    for p in summary.problems[:50]:
        console.print(_line((p.status, "red"), f": {p.dataset}/{p.uid} ({p.key}): {p.reason}"))
    if len(summary.problems) > 50:
        console.print(_line(f"... and {len(summary.problems) - 50} more (see --json)"))


# --- status, verify, doctor -----------------------------------------------------------------


def _status_cells(c: StatusCounts) -> list[str]:
    fetch = f"{c.fetch_files:,}"
    if c.fetch_files:
        known = human_bytes(c.fetch_known_bytes) if c.fetch_known_bytes else ""
        unknown = f"{c.fetch_unknown_files:,} of unknown size" if c.fetch_unknown_files else ""
        fetch += f" ({' + '.join(x for x in (known, unknown) if x)})"
    partial = f"{c.partial_files:,}"
    if c.partial_files:
        partial += f" ({human_bytes(c.partial_done_bytes)} of {human_bytes(c.partial_size_bytes)})"
    return [
        f"{c.files:,}",
        f"{c.complete_files:,} ({human_bytes(c.complete_bytes)})",
        partial,
        fetch,
        f"{c.unjournaled_files:,} ({human_bytes(c.unjournaled_bytes)})"
        if c.unjournaled_files
        else "",
    ]


def render_status(console: Console, status: Status) -> None:
    """Per shard and per dataset: complete, partial, to fetch, on disk without a journal."""
    title = f"{status.family} {status.version} in {status.output_directory}"
    if status.shard_count:
        title += f" ({status.shard_count} shards)"
    table = Table(title=_line(title), title_justify="left")
    table.add_column("shard / dataset", no_wrap=True)
    headers = ["files", "complete", "partial", "to fetch"]
    unjournaled = status.counts.unjournaled_files > 0
    if unjournaled:
        headers.append("on disk, no journal")
    for header in headers:
        table.add_column(header, justify="right", min_width=len(header))

    def row(name: str, counts: StatusCounts, style: str = "") -> None:
        cells = _status_cells(counts)
        table.add_row(shown(name), *(cells if unjournaled else cells[:-1]), style=style)

    for shard in status.shards:
        name = f"shard {format_shard(shard.shard)}" if shard.shard else "all"
        started = "" if shard.journal else " (not started)"
        row(name + started, shard.counts, "bold")
        if len(shard.datasets) > 1 or shard.shard is None:
            for ds in shard.datasets:
                if ds.counts.files:
                    row(f"  {ds.name}", ds.counts)
    if len(status.shards) > 1:
        table.add_section()
        for ds in status.datasets:
            row(ds.name, ds.counts)
        row("total", status.counts, "bold")
    console.print(table)
    c = status.counts
    if c.files and c.complete_files == c.files:
        console.print(_line(("Everything is downloaded.", "green")))
    if c.unjournaled_files:
        console.print(
            _line(
                f"{c.unjournaled_files:,} files are on disk but in no journal (the original "
                "CLI's?); the next download checks and adopts them"
            )
        )


def render_verify(console: Console, result: VerifyResult) -> None:
    """Every file that is not right, then the counts and the repair run's summary."""
    out = result.plan.output_directory
    for c in result.bad[:200]:
        rel = c.planned.dest.relative_to(out)
        console.print(_line((c.verdict.value, "red"), f": {rel}: {c.reason}"))
    if len(result.bad) > 200:
        console.print(_line(f"... and {len(result.bad) - 200} more (see --json)"))
    counts = ", ".join(f"{n:,} {verdict}" for verdict, n in sorted(result.counts.items()))
    rate = result.hashed_bytes / result.elapsed_s if result.elapsed_s > 0 else 0.0
    console.print(
        _line(
            f"checked {len(result.checks):,} files: {counts or 'nothing to check'}; "
            f"{human_bytes(result.hashed_bytes)} read back in {result.elapsed_s:.1f}s "
            f"({human_bytes(rate)}/s)"
        )
    )
    if result.repair is not None:
        render_summary(console, result.repair)
    elif any(c.verdict.repairable for c in result.bad):
        console.print(_line("run again with --repair to fetch the damaged and missing files"))


_SEVERITY_STYLE = {
    Severity.OK: ("  ok", "green"),
    Severity.WARN: ("warn", "yellow"),
    Severity.FAIL: ("FAIL", "bold red"),
    Severity.SKIP: ("skip", "dim"),
}


def render_doctor(console: Console, diagnosis: Diagnosis) -> None:
    """One line per check, then whether a download would start."""
    for f in diagnosis.findings:
        console.print(_line(_SEVERITY_STYLE[f.severity], f"  {f.check}: {f.detail}"))
    if diagnosis.would_start:
        console.print(_line(("A download would start.", "green")))
    else:
        console.print(
            _line(("A download would not start", "bold red"), ": fix the FAIL lines above.")
        )
