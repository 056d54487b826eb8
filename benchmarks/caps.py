"""How closely ``--max-bandwidth`` holds at the caps users set (50, 200, 500 MB/s by default).

Each cap downloads enough of the ``large`` profile's videos (``--video-uids``) to last about
``seconds`` at the cap, with ``--json --progress-interval 0.5``, and takes the rate between the
first and the last ``Progress`` record (stamped as each line arrives: planning and the last
renames are neither paced nor counted). Right after each capped run the same videos are
downloaded without a cap: the machine's own limit at that moment (the machine is shared, so
it moves). A cap above that limit cannot be reached, and the report says so.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from profiles import VERSION, Profile

__all__ = ["CapRun", "caps_table", "measure_caps"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CapRun:
    """One capped (or uncapped: ``cap_bytes_s`` None) download and the rates it held."""

    cap_bytes_s: float | None
    files: int
    size_bytes: int
    wall_s: float
    # Between the first and the last Progress record; None if fewer than two came.
    held_bytes_s: float | None
    held_over_s: float
    exit_code: int


def _run(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path
) -> tuple[float, list[tuple[float, int]], int]:
    """Wall seconds, the (arrival time, bytes) of every Progress record, the exit code."""
    progress: list[tuple[float, int]] = []
    started = time.monotonic()
    with subprocess.Popen(
        argv,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if record.get("event") == "Progress":
                progress.append((time.monotonic(), int(record["bytes"])))
    return time.monotonic() - started, progress, proc.returncode


def _one(
    endpoint: str,
    env: Mapping[str, str],
    large: Profile,
    *,
    count: int,
    cap_mb_s: float | None,
    scratch: Path,
) -> CapRun:
    rows = large.rows[:count]
    out = scratch / f"caps-{cap_mb_s or 'none'}"
    # fmt: off
    argv = [
        sys.executable, "-m", "ego4d_dl", "download", "-o", str(out),
        "--datasets", large.dataset, "--version", VERSION, "--endpoint-url", endpoint,
        "--no-metadata", "--yes", "--json", "--progress-interval", "0.5",
        "--video-uids", *(r.name.removesuffix(".mp4") for r in rows),
    ]
    # fmt: on
    if cap_mb_s is not None:
        argv += ["--max-bandwidth", f"{cap_mb_s:g}MB/s"]
    wall, progress, code = _run(argv, env, scratch)
    shutil.rmtree(out, ignore_errors=True)
    held, over = None, 0.0
    if len(progress) >= 2:
        (t0, b0), (t1, b1) = progress[0], progress[-1]
        over = t1 - t0
        held = (b1 - b0) / over if over > 0 else None
    run = CapRun(
        cap_bytes_s=None if cap_mb_s is None else cap_mb_s * 1e6,
        files=len(rows),
        size_bytes=sum(r.size_bytes for r in rows),
        wall_s=wall,
        held_bytes_s=held,
        held_over_s=over,
        exit_code=code,
    )
    rate = "-" if held is None else f"{held / 1e6:.1f} MB/s"
    print(
        f"bench: cap {cap_mb_s or 'none'} MB/s, {len(rows)} files: held {rate} over {over:.1f} s, "
        f"wall {wall:.1f} s, exit code {code}",
        flush=True,
    )
    return run


def measure_caps(
    endpoint: str,
    env: Mapping[str, str],
    large: Profile,
    *,
    caps_mb_s: Sequence[float],
    seconds: float,
    scratch: Path,
) -> list[tuple[CapRun, CapRun]]:
    """Per cap (decimal MB/s): the capped run, and the same videos uncapped right after."""
    pairs = []
    for cap in caps_mb_s:
        size = large.rows[0].size_bytes
        count = max(2, min(len(large.rows), math.ceil(cap * 1e6 * seconds / size)))
        one = functools.partial(_one, endpoint, env, large, count=count, scratch=scratch)
        pairs.append((one(cap_mb_s=cap), one(cap_mb_s=None)))
    return pairs


def caps_table(pairs: Sequence[tuple[CapRun, CapRun]]) -> str:
    """The markdown table: each cap, the rate held, its share of the cap, the machine's limit."""
    lines = [
        "| cap | files | held (between Progress records) | of the cap | uncapped right after "
        "| whole capped run (bytes / wall) | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for capped, free in pairs:
        assert capped.cap_bytes_s is not None
        cap = capped.cap_bytes_s
        held = capped.held_bytes_s
        limit = free.held_bytes_s
        notes = [f"exit code {r.exit_code}" for r in (capped, free) if r.exit_code != 0]
        if limit is not None and limit < cap:
            notes.append(
                f"above the machine's own limit ({limit / 1e6:.0f} MB/s uncapped)"
                + (f": held {held / limit:.0%} of that" if held is not None else "")
            )
        over = f"over {capped.held_over_s:.1f} s"
        lines.append(
            f"| {cap / 1e6:g} MB/s | {capped.files} "
            f"| {'-' if held is None else f'{held / 1e6:.1f} MB/s {over}'} "
            f"| {'-' if held is None else f'{held / cap:.1%}'} "
            f"| {'-' if limit is None else f'{limit / 1e6:.1f} MB/s'} "
            f"| {capped.size_bytes / capped.wall_s / 1e6:.1f} MB/s | {'; '.join(notes)} |"
        )
    return "\n".join(lines)
