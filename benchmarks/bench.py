"""`nox -s bench`: what users wait for, ego4d-dl beside s5cmd, rclone and the original CLI.

Starts a SeaweedFS sandbox, seeds three profiles (``large``, ``small``, ``mixed``, see
``profiles.py``), then for each link and profile runs every tool into a fresh folder, round
after round with ego4d-dl and the peers alternating (the order reverses every other round),
checks every downloaded byte against the seeded MD5s, and reports for every tool its *time to
durable data* (the tool, then ``sync``: the headline ratio), its wall time, and its client
CPU seconds per GiB measured in separate runs with the server pinned to one core and the
client to the other. Then ``--max-bandwidth`` at ``--caps``, the start-up timings of
``startup.py``, the scripts of other benchmarks if present (``--hooks``), and a table of
issue 16's targets, met or short. Each block is written between its markers in BENCHMARKS.md.

Links: ``loopback`` (the tools talk to the sandbox directly), and ``far`` and ``near``, emulated
by ``farlink.py`` (a proxy in a process of its own, started here: a delay each way, each
connection paced). Through an emulated link the peers run at their defaults, and ego4d-dl runs
at its default (adaptive concurrency) and at each ``--sweep`` concurrency, to find the best
fixed one; on loopback it runs at ``--loopback-fixed`` as well.

``--quick`` is a smoke test of the bench (small profiles, one round, about two minutes; it
writes nothing unless ``--output`` is given). ``--serve`` seeds the profiles and keeps the
server up, printing the commands to run by hand (for a profiler).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from caps import caps_table, measure_caps
from farlink import LINKS, Link  # beside this file: the far-link emulator
from profiles import PROFILES, VERSION, MiB, Seeded, make_profile, seed
from report import (
    ProfileResult,
    Target,
    issue_targets,
    link_table,
    link_targets,
    loopback_targets,
    machine_lines,
    profile_table,
    rounds_table,
    targets_table,
    write_report,
)
from startup import measure, startup_table, startup_targets
from tools import DEFAULT_TOOLS, Launcher, Tool, make_tools, pin_process, run_tool, tool_env

from ego4d_dl.sandbox import Sandbox

REPO = Path(__file__).resolve().parent.parent
# Other benchmarks that join `nox -s bench` when they exist (written beside this file).
HOOKS = ("egoexo_bench.py", "processes.py")
QUICK_HOOK_ARGS = {
    "egoexo_bench.py": "--runs 1 --small-files 200 --large-files 2 --large-mib 16",
    "processes.py": "--runs 1",
}
PARTS = ("timed", "cpu", "caps", "startup", "hooks")


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
        default=["loopback", "far"],
        choices=["loopback", *LINKS],
        help="loopback, and links emulated by farlink.py (default: loopback far)",
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
    parser.add_argument("--runs", type=int, default=3, help="timed rounds per profile")
    parser.add_argument("--cpu-runs", type=int, default=3, help="pinned rounds per CPU profile")
    parser.add_argument(
        "--cpu-profiles",
        nargs="*",
        default=["large"],
        choices=list(PROFILES),
        help="profiles whose client CPU is measured pinned, on loopback (default: large)",
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="the server's core, pinned")
    parser.add_argument("--client-cpu", type=int, default=1, help="the client's core, pinned")
    parser.add_argument(
        "--caps", nargs="*", type=float, default=[50, 200, 500], help="--max-bandwidth, MB/s"
    )
    parser.add_argument("--cap-seconds", type=float, default=8.0, help="length of a capped run")
    parser.add_argument(
        "--startup-runs", type=int, default=5, help="runs of each startup.py command"
    )
    parser.add_argument(
        "--original-on-small",
        action="store_true",
        help="the original CLI on `small` too, on loopback (75 s a run)",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS, help="parts left out")
    for hook in HOOKS:
        parser.add_argument(
            f"--{hook.removesuffix('.py').replace('_', '-')}-args",
            default="",
            help=f"arguments for benchmarks/{hook}, if it exists",
        )
    parser.add_argument("--hook-timeout", type=float, default=600.0, help="seconds per hook")
    parser.add_argument("--quick", action="store_true", help="a smoke test of the bench (~2 min)")
    parser.add_argument("--output", type=Path, default=None, help="default: BENCHMARKS.md")
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
    args = parser.parse_args(argv)
    if args.quick:
        # Every part, once, small: the bench's own smoke test. Its numbers mean nothing.
        args.runs = args.cpu_runs = args.startup_runs = 1
        args.sweep = [64]
        args.loopback_fixed = []
        args.caps = [200]
        args.cap_seconds = 1.0
        # The other benchmarks' own smallest runs, unless told otherwise.
        args.egoexo_bench_args = args.egoexo_bench_args or QUICK_HOOK_ARGS["egoexo_bench.py"]
        args.processes_args = args.processes_args or QUICK_HOOK_ARGS["processes.py"]
        if args.output is None:
            args.no_write = True
    if args.output is None:
        args.output = REPO / "BENCHMARKS.md"
    if min(args.runs, args.cpu_runs, args.startup_runs) < 1:
        raise SystemExit("bench: --runs, --cpu-runs and --startup-runs must be at least 1")
    return args


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
    # The cores of the pinned CPU runs (server, client); None: none were made.
    pinned: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    """What every run of a link shares."""

    sandbox: Sandbox
    launcher: Launcher
    scratch: Path
    args: argparse.Namespace


def _rounds(
    ctx: Context,
    result: ProfileResult,
    *,
    label: str,
    endpoint: str,
    link_pid: int,
    pinned: tuple[int, int] | None,
) -> None:
    """The rounds of every tool on one profile: timed, or pinned (server, client cores)."""
    seeded = result.seeded
    env = tool_env(endpoint, ctx.scratch / f"home-{label}")
    tools = [t for t in result.tools if not (t.videos_only and seeded.profile.kind != "video")]
    if pinned is not None:
        # CPU, not the concurrency sweep: the fixed-concurrency runs are left out.
        tools = [t for t in tools if not t.name.startswith("ego4d-dl c=")]
        pin_process(ctx.sandbox.pid, {pinned[0]})
    rounds = ctx.args.cpu_runs if pinned else ctx.args.runs
    try:
        for round_ in range(rounds):
            for tool in _round_order(tools, round_):
                run = run_tool(
                    tool,
                    seeded,
                    launcher=ctx.launcher,
                    round_=round_,
                    scratch=ctx.scratch,
                    env=env,
                    server_pid=ctx.sandbox.pid,
                    timeout_s=ctx.args.timeout,
                    link_pid=link_pid,
                    client_cpus={pinned[1]} if pinned else (),
                )
                result.runs.append(run)
                status = "ok" if run.ok else f"FAILED: {run.problem}"
                limits = f", limits {' '.join(map(str, run.limits))}" if run.limits else ""
                print(
                    f"bench: {label} {seeded.profile.name} "
                    f"{'pinned ' if pinned else ''}round {round_ + 1}/{rounds} "
                    f"{tool.name}: {run.wall_s:.2f} s, durable {run.durable_s:.2f} s, "
                    f"CPU {run.cpu_s:.2f} s, RSS {run.max_rss_bytes / MiB:.0f} MiB, "
                    f"server CPU {run.server_cpu_s:.2f} s, link CPU {run.link_cpu_s:.2f} s"
                    f"{limits}: {status}",
                    flush=True,
                )
    finally:
        if pinned is not None:
            pin_process(ctx.sandbox.pid, None)


def _pinned_cores(args: argparse.Namespace) -> tuple[int, int] | None:
    """(server, client) cores for the CPU runs, or None if this machine cannot give them."""
    allowed = os.sched_getaffinity(0)
    if "cpu" in args.skip or args.server_cpu == args.client_cpu:
        return None
    if not {args.server_cpu, args.client_cpu} <= allowed:
        print(f"bench: cores {args.server_cpu}, {args.client_cpu} not all in {sorted(allowed)}; "
              "no pinned CPU runs", flush=True)  # fmt: skip
        return None
    return args.server_cpu, args.client_cpu


def _run_link(ctx: Context, link: Link | None, seeded: Sequence[Seeded]) -> LinkResult:
    """Every round of every tool on every profile, over ``link``; pinned runs on loopback."""
    started = time.monotonic()
    label = link.name if link else "loopback"
    args = ctx.args
    pinned = None if link else _pinned_cores(args)
    with emulated_link(link, ctx.sandbox.endpoint_url) as (endpoint, link_pid):
        tools = make_tools(
            endpoint,
            args.tools,
            link=link,
            fixed=args.sweep if link else args.loopback_fixed,
            baseline_python=args.baseline_python,
            original_on_files=args.original_on_small,
        )
        (ctx.scratch / f"home-{label}").mkdir()
        results = []
        for s in seeded:
            result = ProfileResult(seeded=s, tools=tools)
            _rounds(ctx, result, label=label, endpoint=endpoint, link_pid=link_pid, pinned=None)
            if pinned and s.profile.name in args.cpu_profiles:
                _rounds(
                    ctx, result, label=label, endpoint=endpoint, link_pid=link_pid, pinned=pinned
                )
            results.append(result)
    return LinkResult(
        link=link,
        tools=tools,
        profiles=results,
        elapsed_s=time.monotonic() - started,
        pinned=pinned if any(r.pinned for p in results for r in p.runs) else None,
    )


def _command() -> str:
    return "nox -s bench" + (" -- " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")


def _report(result: LinkResult, args: argparse.Namespace, load: tuple[float, float, float]) -> str:
    cpu = (
        f"; {args.cpu_runs} more per CPU profile ({', '.join(args.cpu_profiles)}) with the server "
        f"pinned to core {result.pinned[0]} and the client to core {result.pinned[1]}"
        if result.pinned
        else ""
    )
    intro = (
        f"Command: `{_command()}` ({args.runs} round{'s' if args.runs > 1 else ''} per profile"
        f"{cpu}; this link's part "
        f"{result.elapsed_s / 60:.1f} min). Every run's files were checked byte for byte "
        "against the seeded MD5s."
    )
    machine = machine_lines(result.tools, load)
    link = result.link
    if link is None:
        blocks = ["## Results on loopback", intro, "\n".join(machine)]
        for r in result.profiles:
            blocks += [profile_table(r), rounds_table(r)]
        if args.loopback_fixed:
            blocks += [
                "### The adaptive default against the old fixed 16",
                loopback_targets(result.profiles),
            ]
        return "\n\n".join(blocks)
    machine.append(
        f"- link: {link.label}, emulated by `benchmarks/farlink.py` (a process of its own on "
        "the same cores; its CPU is the *link CPU s* column), between every tool and the server"
    )
    blocks = [f"### `{link.name}` link: {link.label}", intro, "\n".join(machine)]
    for r in result.profiles:
        blocks += [link_table(r), rounds_table(r, ("ego4d-dl",))]
    blocks += [f"#### Targets on the `{link.name}` link", link_targets(result.profiles)]
    return "\n\n".join(blocks)


def _hooks(args: argparse.Namespace) -> str:
    """Run the other benchmarks that exist beside this file; their output's tail, or a note."""
    blocks = ["## Other benchmarks run by the bench"]
    for hook in HOOKS:
        path = Path(__file__).with_name(hook)
        if not path.is_file():
            blocks.append(f"- `benchmarks/{hook}`: absent in this checkout, skipped.")
            continue
        extra = shlex.split(getattr(args, f"{hook.removesuffix('.py')}_args"))
        argv = [sys.executable, str(path), *extra]
        print(f"bench: running {shlex.join(argv)}", flush=True)
        started = time.monotonic()
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=args.hook_timeout, check=False
            )
            code, output = str(done.returncode), done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            code = f"timed out after {args.hook_timeout:g} s"
            output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        tail = "\n".join(output.strip().splitlines()[-40:])
        blocks.append(
            f"- `benchmarks/{hook} {shlex.join(extra)}`: exit {code}, "
            f"{time.monotonic() - started:.0f} s; the last lines of its output:\n\n```\n{tail}\n```"
        )
    return "\n\n".join(blocks)


def _emit(args: argparse.Namespace, body: str, block: str) -> None:
    print("\n" + body, flush=True)
    if not args.no_write:
        write_report(args.output, body, block)
        print(f"\nbench: wrote {args.output} ({block or 'loopback'})", flush=True)


def _seed_all(sandbox: Sandbox, args: argparse.Namespace) -> list[Seeded]:
    seeded = []
    for name in args.profiles:
        profile = make_profile(name, quick=args.quick)
        t0 = time.monotonic()
        seeded.append(seed(sandbox, profile))
        print(
            f"bench: seeded {profile.name} ({len(profile.rows):,} objects, "
            f"{profile.size_bytes / MiB:,.0f} MiB) in {time.monotonic() - t0:.1f} s",
            flush=True,
        )
    return seeded


def _extras(
    ctx: Context, seeded: Sequence[Seeded], load: tuple[float, float, float]
) -> list[Target]:
    """Caps and start-up (on loopback), then the hooks; the start-up targets."""
    args = ctx.args
    by_name = {s.profile.name: s.profile for s in seeded}
    env = tool_env(ctx.sandbox.endpoint_url, ctx.scratch / "home-loopback")
    where = f"load average at the bench's start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    targets = []
    if "caps" not in args.skip and args.caps and "large" in by_name:
        runs = measure_caps(
            ctx.sandbox.endpoint_url,
            env,
            by_name["large"],
            caps_mb_s=args.caps,
            seconds=args.cap_seconds,
            scratch=ctx.scratch,
        )
        intro = (
            f"`--max-bandwidth` on loopback, part of `{_command()}` ({where}): each cap "
            f"downloads enough `large` videos for about {args.cap_seconds:g} s at the cap (at "
            "least 2), then the same videos again without a cap (the machine's own limit at "
            "that moment); rates are taken between the first and the last `Progress` record "
            "(`--json --progress-interval 0.5`). MB = 10^6 bytes."
        )
        _emit(args, "\n\n".join(["## Bandwidth caps", intro, caps_table(runs)]), "caps")
    if "startup" not in args.skip and {"small", "mixed"} <= by_name.keys():
        timings = measure(
            ctx.sandbox.endpoint_url,
            env,
            small=by_name["small"],
            mixed=by_name["mixed"],
            runs=args.startup_runs,
            scratch=ctx.scratch,
        )
        intro = (
            f"`benchmarks/startup.py --runs {args.startup_runs}`, run by `{_command()}` ({where}):"
            " the `ego4d-dl` console script, a fresh process per run, one untimed warm-up each, "
            "the commands alternating; `plan` on the `small` profile "
            f"({len(by_name['small'].rows):,} objects), `download` on `mixed` "
            f"({len(by_name['mixed'].rows)} objects) already on disk."
        )
        _emit(args, "\n\n".join(["## Start-up", intro, startup_table(timings)]), "startup")
        targets = startup_targets(timings, by_name["mixed"])
    if "hooks" not in args.skip:
        _emit(args, _hooks(args), "hooks")
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 if every run of every tool downloaded every byte right."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
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
        seeded = _seed_all(sandbox, args)
        if args.serve:
            _serve(sandbox, seeded, scratch)
            return 0
        ctx = Context(sandbox=sandbox, launcher=launcher, scratch=scratch, args=args)
        ok = True
        measured: dict[str, dict[str, ProfileResult]] = {}
        for name in args.links if "timed" not in args.skip else []:
            result = _run_link(ctx, LINKS.get(name), seeded)
            measured[name] = {r.seeded.profile.name: r for r in result.profiles}
            # Each block is written as soon as it is measured: a bench of several links lasts
            # long enough to be interrupted.
            _emit(args, _report(result, args, load), result.link.name if result.link else "")
            ok = ok and all(r.ok for p in result.profiles for r in p.runs)
        if not (scratch / "home-loopback").exists():
            (scratch / "home-loopback").mkdir()
        startup = _extras(ctx, seeded, load)
        targets = issue_targets(measured.get("loopback", {}), measured.get("far", {}), startup)
        intro = (
            f"From `{_command()}` on {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC (load "
            f"average at its start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}); the tables "
            "below have the details. Ratios are ego4d-dl's throughput over the peer's, per round, "
            "then the median."
        )
        _emit(
            args, "\n\n".join(["## Targets of issue 16", intro, targets_table(targets)]), "targets"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
