"""Ego-Exo4D downloads: ``egoexo-dl`` vs the original ``egoexo`` command on a local S3 sandbox.

Seeds a fake release of its own (``--release egoexobench``) in a fresh sandbox: many small
JSON and CSV files (the ``annotations`` and ``take_trajectory`` parts: ``--small-files`` of
2-16 KiB) plus a few large multipart videos (the ``takes`` part: ``--large-files`` of
``--large-mib`` MiB each). Then, alternating and into a fresh folder each time, ``--runs``
times each:

- ``egoexo-dl``: ``egoexo-dl -o OUT --release egoexobench --parts ... -y --quiet``
  (adaptive concurrency, every file verified against its ETag);
- ``original``: ``python -m ego4d.egoexo.download.cli -o OUT --release egoexobench --parts
  ... -y`` (its default 15 workers; sizes checked only), pointed at the sandbox through
  ``AWS_ENDPOINT_URL_S3``.

Every file of every run is checked against the seeded bytes; the median wall time, files/s
and MiB/s of each tool and their ratio are printed. Client and server share the machine.

    python benchmarks/egoexo_bench.py --runs 3
    python benchmarks/egoexo_bench.py --runs 1 --small-files 500 --large-files 2 --large-mib 32
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ego4d_dl.sandbox import (
    ACCESS_KEY_ID,
    CONSORTIUM_BUCKET,
    SECRET_ACCESS_KEY,
    EgoExoEntrySpec,
    EgoExoPathSpec,
    EgoExoReleaseSpec,
    EgoExoSeededRelease,
    Sandbox,
)

RELEASE = "egoexobench"
PARTS = ("annotations", "take_trajectory", "takes")
MIB = 1 << 20
PART_MIB = 8  # the large files' multipart part size


def release_spec(small_files: int, large_files: int, large_mib: int) -> EgoExoReleaseSpec:
    """Small JSON (annotations) and CSV (trajectories) files, and a few large videos."""
    root = f"egoexo-public/{RELEASE}"
    notes, trajectories, videos = [], [], []
    for n in range(small_files):
        size = 2048 + (n * 7919) % (14 * 1024)
        if n % 2:
            rel = f"annotations/bench/{n // 100:03d}/note_{n:05d}.json"
            notes.append(
                EgoExoEntrySpec(
                    uid=f"note{n}",
                    paths=(EgoExoPathSpec(bucket=CONSORTIUM_BUCKET, key=f"{root}/{rel}",
                                          relative_path=rel, size_bytes=size),),
                    benchmarks=("keystep",),
                )
            )  # fmt: skip
        else:
            rel = f"takes/take_{n // 20:04d}/trajectory/track_{n:05d}.csv"
            trajectories.append(
                EgoExoEntrySpec(
                    uid=f"track{n}",
                    paths=(EgoExoPathSpec(bucket="ego4d-cmu", key=f"{root}/{rel}",
                                          relative_path=rel, size_bytes=size,
                                          universities=("cmu",)),),
                )
            )  # fmt: skip
    for n in range(large_files):
        rel = f"takes/take_{n:04d}/frame_aligned_videos/cam01.mp4"
        size = large_mib * MIB
        whole = (PART_MIB * MIB,) * (size // (PART_MIB * MIB))
        parts = whole + ((size - sum(whole),) if size > sum(whole) else ())
        videos.append(
            EgoExoEntrySpec(
                uid=f"take{n}",
                paths=(EgoExoPathSpec(bucket="ego4d-penn", key=f"{root}/{rel}", relative_path=rel,
                                      size_bytes=size, part_sizes_bytes=parts,
                                      views=("exo",), universities=("upenn",)),),
            )
        )  # fmt: skip
    return EgoExoReleaseSpec(
        release=RELEASE,
        parts=(
            ("annotations", tuple(notes)),
            ("take_trajectory", tuple(trajectories)),
            ("takes", tuple(videos)),
        ),
    )


def write_profile(home: Path) -> None:
    """A ``[default]`` profile with the sandbox's keys, as ``aws configure`` writes it."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "credentials").write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY_ID}\n"
        f"aws_secret_access_key = {SECRET_ACCESS_KEY}\n",
        encoding="utf-8",
    )
    (home / "config").write_text("[default]\nregion = us-east-1\n", encoding="utf-8")


@dataclass(frozen=True)
class Run:
    tool: str
    seconds: float
    ok: bool
    detail: str


def check(release: EgoExoSeededRelease, out: Path) -> str:
    """``""`` when every file is the seeded bytes, else what differs."""
    bad = []
    for f in release.files:
        path = out / f.relative_path
        try:
            digest = hashlib.md5(path.read_bytes()).hexdigest()
        except OSError:
            bad.append(f.relative_path)
            continue
        if digest != f.obj.md5_hex:
            bad.append(f.relative_path)
    return f"{len(bad)} files wrong or missing, e.g. {bad[:3]}" if bad else ""


def commands(endpoint: str, out: Path) -> dict[str, list[str]]:
    common = ["-o", str(out), "--release", RELEASE, "--parts", *PARTS, "-y"]
    ours = [sys.executable, "-c", "from ego4d_dl.cli.egoexo import main; main()"]
    return {
        "egoexo-dl": [*ours, *common, "--quiet", "--endpoint-url", endpoint],
        "original": [sys.executable, "-m", "ego4d.egoexo.download.cli", *common],
    }


def run_once(
    tool: str, argv: list[str], env: dict[str, str], release: EgoExoSeededRelease, out: Path
) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    problem = check(release, out)
    if done.returncode != 0:
        problem = f"exit {done.returncode}: {(done.stdout + done.stderr)[-300:]!r} {problem}"
    return Run(tool=tool, seconds=seconds, ok=not problem, detail=problem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each tool (default 3)")
    parser.add_argument("--small-files", type=int, default=2000)
    parser.add_argument("--large-files", type=int, default=4)
    parser.add_argument("--large-mib", type=int, default=64)
    args = parser.parse_args()
    if importlib.util.find_spec("ego4d") is None:
        sys.exit("the original CLI (pip install ego4d==1.7.3) is not installed here")
    spec = release_spec(args.small_files, args.large_files, args.large_mib)
    with tempfile.TemporaryDirectory(prefix="egoexo-bench-") as tmp, Sandbox() as sandbox:
        work = Path(tmp)
        print(f"seeding {RELEASE}: {args.small_files} small files, "
              f"{args.large_files} x {args.large_mib} MiB ...", flush=True)  # fmt: skip
        release = sandbox.seed_egoexo_release(spec)
        total = sum(f.obj.size_bytes for f in release.files)
        home = work / "home"
        write_profile(home)
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(home),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
            "AWS_CONFIG_FILE": str(home / "config"),
            "AWS_ENDPOINT_URL_S3": sandbox.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        runs: list[Run] = []
        for i in range(args.runs):
            for tool, argv in commands(sandbox.endpoint_url, work / "out").items():
                run = run_once(tool, argv, env, release, work / "out")
                print(f"run {i + 1} {tool:10} {run.seconds:7.2f} s "
                      f"{'ok' if run.ok else 'FAILED: ' + run.detail}", flush=True)  # fmt: skip
                runs.append(run)
        report(runs, files=len(release.files), total_bytes=total)


def report(runs: list[Run], *, files: int, total_bytes: int) -> None:
    print(f"\n{files:,} files, {total_bytes / MIB:,.1f} MiB; median of each tool's runs")
    print(f"{'tool':12} {'seconds':>8} {'files/s':>9} {'MiB/s':>8}  all verified")
    medians = {}
    for tool in ("egoexo-dl", "original"):
        mine = [r for r in runs if r.tool == tool]
        if not mine:
            continue
        median = statistics.median(r.seconds for r in mine)
        medians[tool] = median
        ok = all(r.ok for r in mine)
        print(f"{tool:12} {median:8.2f} {files / median:9.1f} "
              f"{total_bytes / MIB / median:8.1f}  {'yes' if ok else 'NO'}")  # fmt: skip
    if len(medians) == 2:
        print(f"egoexo-dl is {medians['original'] / medians['egoexo-dl']:.2f}x the original")


if __name__ == "__main__":
    main()
