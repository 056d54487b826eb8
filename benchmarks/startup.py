"""What a user waits for before any byte moves: start-up and a download with nothing to do.

Times, as a user runs them (the ``ego4d-dl`` console script, a fresh process each time):
``ego4d-dl --help``, ``ego4d-dl --version``, ``ego4d-dl plan --dry-run`` of the 2,000-object
``small`` profile, and ``ego4d-dl download`` of the 37-object ``mixed`` profile once it is all
on disk (nothing to do). The commands alternate round by round after one untimed warm-up each;
medians and minimums, and every command's exit code (a command that fails is timed all the
same, and said so)::

    python benchmarks/startup.py --runs 10

Standalone it starts its own sandbox and seeds the two profiles; ``bench.py`` calls
:func:`measure` with its own.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from profiles import VERSION, Profile, make_profile, seed
from report import Target
from tools import tool_env

from ego4d_dl.sandbox import Sandbox

__all__ = ["Timing", "measure", "startup_table", "startup_targets"]

HELP = "ego4d-dl --help"
VERSION_FLAG = "ego4d-dl --version"
PLAN = "ego4d-dl plan --dry-run"
NOTHING_TO_DO = "ego4d-dl download, nothing to do"


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """One command's timed runs."""

    label: str
    argv: tuple[str, ...]
    times_s: tuple[float, ...]
    exit_codes: tuple[int, ...]

    @property
    def median_s(self) -> float:
        """The median run."""
        return statistics.median(self.times_s)

    @property
    def min_s(self) -> float:
        """The fastest run."""
        return min(self.times_s)


def _console_script() -> list[str]:
    """``ego4d-dl`` as installed beside this interpreter (what a user runs), else ``-m``."""
    script = Path(sys.executable).parent / "ego4d-dl"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ego4d_dl"]


def _timed(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run(
        argv,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=300,
    )
    return time.perf_counter() - started, done.returncode


def commands(endpoint: str, small: Profile, mixed: Profile, out: Path) -> dict[str, list[str]]:
    """The commands timed, by label; ``out`` must hold ``mixed`` already for the last one."""
    exe = _console_script()
    common = ["--version", VERSION, "--endpoint-url", endpoint]
    download = ["download", "-o", str(out), "--datasets", mixed.dataset, *common]
    return {
        HELP: [*exe, "--help"],
        VERSION_FLAG: [*exe, "--version"],
        PLAN: [*exe, "plan", "--dry-run", "-o", str(out), "--datasets", small.dataset, *common],
        NOTHING_TO_DO: [*exe, *download, "--no-metadata", "--yes", "--quiet"],
    }


def measure(
    endpoint: str,
    env: Mapping[str, str],
    *,
    small: Profile,
    mixed: Profile,
    runs: int,
    scratch: Path,
) -> list[Timing]:
    """Download ``mixed`` once, then time every command ``runs`` times, alternating."""
    out = scratch / "startup-out"
    cmds = commands(endpoint, small, mixed, out)
    _, code = _timed(cmds[NOTHING_TO_DO], env, scratch)
    if code != 0:
        raise SystemExit(f"startup: the first download of {mixed.dataset} failed ({code})")
    times: dict[str, list[float]] = {label: [] for label in cmds}
    codes: dict[str, list[int]] = {label: [] for label in cmds}
    for argv in cmds.values():
        _timed(argv, env, scratch)  # warm-up: page cache, .pyc files
    for _ in range(runs):
        for label, argv in cmds.items():
            seconds, code = _timed(argv, env, scratch)
            times[label].append(seconds)
            codes[label].append(code)
    shutil.rmtree(out, ignore_errors=True)
    return [
        Timing(
            label=label,
            argv=tuple(argv),
            times_s=tuple(times[label]),
            exit_codes=tuple(codes[label]),
        )
        for label, argv in cmds.items()
    ]


def startup_table(timings: Sequence[Timing]) -> str:
    """The markdown table: median, minimum, every run, exit codes."""
    lines = [
        "| command | median s | min s | runs (s) | exit code |",
        "|---|---:|---:|---|---|",
    ]
    for t in timings:
        codes = sorted(set(t.exit_codes))
        lines.append(
            f"| `{t.label}` | {t.median_s:.3f} | {t.min_s:.3f} "
            f"| {' '.join(f'{x:.2f}' for x in t.times_s)} "
            f"| {', '.join(map(str, codes))} |"
        )
    return "\n".join(lines)


def startup_targets(timings: Sequence[Timing], mixed: Profile) -> list[Target]:
    """Issue 16's start-up targets: --help and --version under 0.15 s, nothing to do 0.4 s."""
    by_label = {t.label: t for t in timings}
    goals = (
        (HELP, f"`{HELP}` under 0.15 s", 0.15),
        (VERSION_FLAG, f"`{VERSION_FLAG}` under 0.15 s (and exit code 0)", 0.15),
        (
            NOTHING_TO_DO,
            f"a `download` with nothing to do under 0.4 s ({len(mixed.rows)}-file dataset)",
            0.4,
        ),
    )
    targets = []
    for label, what, limit in goals:
        t = by_label.get(label)
        if t is None:
            targets.append(Target(what=what, measured="-", ok=None))
            continue
        failed = any(code != 0 for code in t.exit_codes)
        measured = f"{t.median_s:.3f} s median, {t.min_s:.3f} s min, {len(t.times_s)} runs"
        if failed:
            measured += f"; exit code {max(t.exit_codes)}"
        targets.append(Target(what=what, measured=measured, ok=t.median_s < limit and not failed))
    return targets


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ego4d-dl-startup-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Seed the two profiles into a fresh sandbox, time the commands, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs of each command")
    parser.add_argument("--quick", action="store_true", help="the smaller profiles (a smoke test)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        raise SystemExit("startup: --runs must be at least 1")
    small = make_profile("small", quick=args.quick)
    mixed = make_profile("mixed", quick=args.quick)
    with _scratch() as scratch, Sandbox() as sandbox:
        seed(sandbox, small)
        seed(sandbox, mixed)
        home = scratch / "home"
        home.mkdir()
        env = tool_env(sandbox.endpoint_url, home)
        load = os.getloadavg()
        timings = measure(
            sandbox.endpoint_url, env, small=small, mixed=mixed, runs=args.runs, scratch=scratch
        )
    print(f"load average at the start: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print(startup_table(timings))
    for target in startup_targets(timings, mixed):
        print(f"- {target.what}: {target.measured}: {'met' if target.ok else 'short'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
