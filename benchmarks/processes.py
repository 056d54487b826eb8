"""Client CPU-seconds per GiB of ``ego4d-dl download --processes N``, for N = 1 and 2.

Seeds the bench's ``large`` profile (6 x 256 MiB videos, multipart with 8 MiB parts) into a
fresh SeaweedFS sandbox, then downloads it ``--runs`` times per N (alternating), checking every
file's MD5 (``--videos 3 6``: the first 3, then all 6, to separate the fixed cost from the
per-byte cost by the slope between the two sizes). The client's CPU is its own and its
workers' (``wait4``: the user and system seconds of the command and every process it waited
for); with two cores or more the server is pinned to the first and the client to the others,
so the two do not take each other's time.
If the figure does not grow with N, throughput scales with the cores a machine has.

    python benchmarks/processes.py --runs 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ego4d_dl.sandbox import CONSORTIUM_BUCKET, Sandbox, fake_bytes

MiB = 1 << 20
GiB = 1 << 30
VERSION = "v2_1"
DATASET = "full_scale"
_VIDEOS = 6
_VIDEO_BYTES = 256 * MiB
_PART_BYTES = 8 * MiB


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One download: its process count, wall and client CPU seconds, and whether it was right."""

    processes: int
    videos: int
    wall_s: float
    cpu_s: float
    ok: bool
    # The same command again, with nothing left to do: the fixed cost of the run (start-up of
    # the command and its workers, planning, the journals), which does not grow with the data.
    rerun_cpu_s: float = 0.0


def uid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def seed(sandbox: Sandbox) -> dict[str, str]:
    """The large profile in the sandbox; ``{relative path: MD5}`` of what a download makes."""
    sandbox.create_bucket(CONSORTIUM_BUCKET)
    rows = ["video_uid,canonical_s3_location,type"]
    truth = {}
    for i in range(_VIDEOS):
        key = f"public/v2/{DATASET}/{uid(i)}.mp4"
        data = b"".join(
            fake_bytes(f"{key}#{offset}", min(16 * MiB, _VIDEO_BYTES - offset))
            for offset in range(0, _VIDEO_BYTES, 16 * MiB)
        )
        parts = [_PART_BYTES] * (_VIDEO_BYTES // _PART_BYTES)
        sandbox.put_object(CONSORTIUM_BUCKET, key, data, part_sizes_bytes=parts)
        rows.append(f"{uid(i)},s3://{CONSORTIUM_BUCKET}/{key},mp4")
        truth[f"v2/{DATASET}/{uid(i)}.mp4"] = hashlib.md5(data).hexdigest()
    manifest = ("\n".join(rows) + "\n").encode()
    sandbox.put_object(CONSORTIUM_BUCKET, f"public/{VERSION}/{DATASET}/manifest.csv", manifest)
    return truth


def _md5(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def download(
    endpoint: str, env: dict[str, str], out: Path, processes: int, extra: Sequence[str]
) -> tuple[float, float, int]:
    """Wall seconds, client CPU seconds (the command and its workers) and exit code."""
    # fmt: off
    argv = [
        sys.executable, "-m", "ego4d_dl", "download", "-o", str(out), "--datasets", DATASET,
        "--no-metadata", "--endpoint-url", endpoint, "--yes", "--quiet",
        "--processes", str(processes), *extra,
    ]
    # fmt: on
    with (out.parent / f"log-{processes}.txt").open("ab") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def _pin(sandbox: Sandbox) -> bool:
    """The server on the first core, this process (and so every client) on the others."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return False
    os.sched_setaffinity(sandbox.pid, {cores[0]})
    os.sched_setaffinity(0, set(cores[1:]))
    return True


def _one(
    endpoint: str,
    env: dict[str, str],
    out: Path,
    n: int,
    videos: int,
    args: argparse.Namespace,
    truth: dict[str, str],
) -> Run:
    """A download of the first ``videos`` videos with ``n`` processes, checked, then again."""
    shutil.rmtree(out, ignore_errors=True)
    extra = list(args.extra)
    if videos < _VIDEOS:
        extra += ["--video-uids", *(uid(i) for i in range(videos))]
    wall, cpu, code = download(endpoint, env, out, n, extra)
    wanted = {rel: md5 for rel, md5 in truth.items() if any(uid(i) in rel for i in range(videos))}
    ok = code == 0 and all(_md5(out / rel) == md5 for rel, md5 in wanted.items())
    _, fixed, again = download(endpoint, env, out, n, extra)
    return Run(
        processes=n, videos=videos, wall_s=wall, cpu_s=cpu, ok=ok and again == 0, rerun_cpu_s=fixed
    )


def measure(args: argparse.Namespace) -> list[Run]:
    runs: list[Run] = []
    scratch = Path(tempfile.mkdtemp(prefix="ego4d-dl-processes-", dir=args.scratch))
    try:
        with Sandbox() as sandbox:
            truth = seed(sandbox)
            pinned = not args.no_pin and _pin(sandbox)
            print(f"seeded {len(truth)} x {_VIDEO_BYTES // MiB} MiB; pinned: {pinned}", flush=True)
            env = {**os.environ, **sandbox.env()}
            cases = [(n, v) for v in args.videos for n in args.counts]
            for round_ in range(args.runs):
                for n, videos in cases if round_ % 2 == 0 else list(reversed(cases)):
                    out = scratch / f"out-{n}"
                    run = _one(sandbox.endpoint_url, env, out, n, videos, args, truth)
                    runs.append(run)
                    print(
                        f"round {round_ + 1} N={n} videos={videos}: {run.wall_s:.2f} s wall, "
                        f"{run.cpu_s:.2f} s CPU ({run.rerun_cpu_s:.2f} s of it again with "
                        f"nothing to do), ok={run.ok}",
                        flush=True,
                    )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return runs


def report(runs: Sequence[Run], counts: Sequence[int], videos: Sequence[int]) -> str:
    lines = [
        "| --processes | videos | runs | wall s | client CPU s | CPU s per GiB | "
        "of it fixed (rerun) | CPU s per GiB less the fixed cost | MB/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    slopes = []
    for n in counts:
        cpu_at: dict[int, float] = {}
        for v in videos:
            mine = [r for r in runs if r.processes == n and r.videos == v]
            size = v * _VIDEO_BYTES
            wall = statistics.median(r.wall_s for r in mine)
            cpu = cpu_at[v] = statistics.median(r.cpu_s for r in mine)
            fixed = statistics.median(r.rerun_cpu_s for r in mine)
            net = statistics.median(r.cpu_s - r.rerun_cpu_s for r in mine)
            bad = sum(not r.ok for r in mine)
            lines.append(
                f"| {n} | {v} | {len(mine)}{f' ({bad} wrong)' if bad else ''} | {wall:.2f} | "
                f"{cpu:.2f} | {cpu / (size / GiB):.2f} | {fixed:.2f} | {net / (size / GiB):.2f} | "
                f"{size / wall / 1e6:.0f} |"
            )
        if len(videos) > 1:
            small, big = min(videos), max(videos)
            per_gib = (cpu_at[big] - cpu_at[small]) / ((big - small) * _VIDEO_BYTES / GiB)
            fixed_s = cpu_at[small] - per_gib * small * _VIDEO_BYTES / GiB
            slopes.append(
                f"- N={n}: {per_gib:.2f} CPU-s per GiB (slope from {small} to {big} videos), "
                f"{fixed_s:.2f} CPU-s fixed (the line at zero bytes)"
            )
    return "Medians over the runs.\n\n" + "\n".join([*lines, *(["", *slopes] if slopes else [])])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="downloads per process count")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2], help="values of N")
    parser.add_argument(
        "--videos", type=int, nargs="+", default=[_VIDEOS], help="how many videos (1-6) per run"
    )
    parser.add_argument("--no-pin", action="store_true", help="leave CPU affinity alone")
    parser.add_argument("--scratch", type=Path, default=None, help="where downloads land")
    parser.add_argument(
        "extra", nargs="*", help="more flags for ego4d-dl download (after --), e.g. --verify size"
    )
    args = parser.parse_args(argv)
    runs = measure(args)
    print(report(runs, args.counts, args.videos))
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
