"""How closely ``--max-bandwidth`` holds at the caps users set (50, 200, 500 MB/s by default).

Each cap downloads enough of the ``large`` profile's videos (``--video-uids``) to last about
``seconds`` at the cap, with ``--json --progress-interval 0.5``, and takes the rate between the
first and the last ``Progress`` record (stamped as each line arrives: planning and the last
renames are neither paced nor counted). One run without a cap, on every video, gives the
machine's own limit: a cap above it cannot be reached, and the report says so.
"""

from __future__ import annotations

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


def measure_caps(
    endpoint: str,
    env: Mapping[str, str],
    large: Profile,
    *,
    caps_mb_s: Sequence[float],
    seconds: float,
    scratch: Path,
) -> list[CapRun]:
    """The uncapped run, then one run per cap (decimal MB/s)."""
    results = []
    for cap in (None, *caps_mb_s):
        file_size = large.rows[0].size_bytes
        count = len(large.rows)
        if cap is not None:
            count = max(2, min(count, math.ceil(cap * 1e6 * seconds / file_size)))
        rows = large.rows[:count]
        out = scratch / f"caps-{cap or 'none'}"
        # fmt: off
        argv = [
            sys.executable, "-m", "ego4d_dl", "download", "-o", str(out),
            "--datasets", large.dataset, "--version", VERSION, "--endpoint-url", endpoint,
            "--no-metadata", "--yes", "--json", "--progress-interval", "0.5",
            "--video-uids", *(r.name.removesuffix(".mp4") for r in rows),
        ]
        # fmt: on
        if cap is not None:
            argv += ["--max-bandwidth", f"{cap:g}MB/s"]
        wall, progress, code = _run(argv, env, scratch)
        shutil.rmtree(out, ignore_errors=True)
        held, over = None, 0.0
        if len(progress) >= 2:
            (t0, b0), (t1, b1) = progress[0], progress[-1]
            over = t1 - t0
            held = (b1 - b0) / over if over > 0 else None
        results.append(
            CapRun(
                cap_bytes_s=None if cap is None else cap * 1e6,
                files=len(rows),
                size_bytes=sum(r.size_bytes for r in rows),
                wall_s=wall,
                held_bytes_s=held,
                held_over_s=over,
                exit_code=code,
            )
        )
        print(f"bench: caps {cap or 'none'} MB/s: {results[-1]}", flush=True)
    return results


def caps_table(runs: Sequence[CapRun]) -> str:
    """The markdown table: each cap, the rate held, its share of the cap, the machine's limit."""
    limit = next((r.held_bytes_s for r in runs if r.cap_bytes_s is None), None)
    lines = [
        "| cap | files | held (between Progress records) | of the cap | whole run (bytes / wall) "
        "| note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        whole = r.size_bytes / r.wall_s / 1e6
        held = "-" if r.held_bytes_s is None else f"{r.held_bytes_s / 1e6:.1f} MB/s"
        held += f" over {r.held_over_s:.1f} s" if r.held_bytes_s is not None else ""
        note = "" if r.exit_code == 0 else f"exit code {r.exit_code}"
        if r.cap_bytes_s is None:
            lines.append(
                f"| none (the machine's own limit) | {r.files} | {held} | | {whole:.1f} MB/s "
                f"| {note} |"
            )
            continue
        share = "-" if r.held_bytes_s is None else f"{r.held_bytes_s / r.cap_bytes_s:.1%}"
        if limit is not None and limit < r.cap_bytes_s:
            note = (note + "; " if note else "") + (
                f"above the machine's own limit ({limit / 1e6:.0f} MB/s uncapped): "
                f"held {r.held_bytes_s / limit:.0%} of that"
                if r.held_bytes_s is not None
                else "above the machine's own limit"
            )
        lines.append(
            f"| {r.cap_bytes_s / 1e6:g} MB/s | {r.files} | {held} | {share} | {whole:.1f} MB/s "
            f"| {note} |"
        )
    return "\n".join(lines)
