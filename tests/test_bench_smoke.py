"""The bench itself: its arithmetic on made-up runs, and its smallest real path end to end.

`nox -s bench` is what BENCHMARKS.md's numbers come from; a ratio taken the wrong way round or
a target marked met on the wrong side of its threshold would go unnoticed there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

_BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
# The bench's modules import each other by name, as scripts beside each other.
sys.path.insert(0, str(_BENCHMARKS))

import caps  # noqa: E402
import profiles  # noqa: E402
import report  # noqa: E402
import startup  # noqa: E402
import tools  # noqa: E402


def _run(tool: str, round_: int, wall_s: float, sync_s: float = 0.0, **extra: object) -> tools.Run:
    return tools.Run(
        tool=tool,
        round=round_,
        wall_s=wall_s,
        cpu_s=float(extra.get("cpu_s", 1.0)),  # type: ignore[arg-type]
        max_rss_bytes=1,
        server_cpu_s=0.0,
        sync_after_s=sync_s,
        ok=bool(extra.get("ok", True)),
        pinned=bool(extra.get("pinned", False)),
    )


def _result(name: str, runs: list[tools.Run]) -> report.ProfileResult:
    profile = profiles.make_profile(name, quick=True)
    truth = {row.name: (row.size_bytes, "") for row in profile.rows}
    return report.ProfileResult(
        seeded=profiles.Seeded(profile=profile, truth=truth), tools=[], runs=runs
    )


def test_ratios_are_per_round_on_time_to_durable_data() -> None:
    # s5cmd exits first but leaves 2 s of sync: durable, ego4d-dl is ahead in round 0.
    result = _result(
        "large",
        [
            _run("ego4d-dl", 0, 5.0),
            _run("s5cmd", 0, 4.0, sync_s=2.0),
            _run("ego4d-dl", 1, 8.0),
            _run("s5cmd", 1, 3.0, sync_s=1.0),
            _run("ego4d-dl", 2, 4.0),
            _run("s5cmd", 2, 3.0, sync_s=1.0, ok=False),  # a failed round pairs with nothing
        ],
    )
    assert result.ratios("ego4d-dl", "s5cmd") == [pytest.approx(1.2), pytest.approx(0.5)]
    assert result.ratios("ego4d-dl", "s5cmd", durable=False) == [
        pytest.approx(0.8),
        pytest.approx(0.375),
    ]
    assert result.ratio("ego4d-dl", "s5cmd") == pytest.approx(0.85)


def test_targets_are_met_or_short_on_the_right_side_of_their_thresholds() -> None:
    gib = profiles.make_profile("large", quick=True).size_bytes / (1 << 30)
    large = _result(
        "large",
        [
            _run("ego4d-dl", 0, 10.0),
            _run("s5cmd", 0, 8.0),  # 0.80x: exactly the target, met
            _run("rclone", 0, 6.0),  # 0.60x against 0.65x: short
            _run("ego4d-dl", 0, 1.0, cpu_s=2.6 * gib, pinned=True),  # 2.6 s/GiB: short
        ],
    )
    mixed = _result("mixed", [_run("ego4d-dl", 0, 2.0), _run("s5cmd", 0, 1.5)])
    targets = report.issue_targets({"large": large, "mixed": mixed}, {}, [])
    by_what = {t.what: t for t in targets}
    assert by_what["`large`: ego4d-dl at least 0.8x s5cmd (time to durable)"].ok is True
    assert by_what["`large`: ego4d-dl at least 0.65x rclone (time to durable)"].ok is False
    cpu = next(t for t in targets if "CPU" in t.what)
    assert (cpu.ok, cpu.measured) == (False, "2.60 s/GiB")
    assert by_what["`mixed`: ego4d-dl at least 0.8x s5cmd (time to durable)"].ok is False
    # Nothing ran on `small` nor on the far link: said so, never met.
    unmeasured = [t for t in targets if "small" in t.what]
    assert unmeasured
    assert all(t.ok is None for t in unmeasured)
    assert "| - | not measured |" in report.targets_table(unmeasured)


def test_the_far_target_compares_with_the_fastest_fixed_concurrency() -> None:
    far = _result(
        "mixed",
        [
            _run("ego4d-dl", 0, 5.0),
            _run("ego4d-dl c=32", 0, 6.0),
            _run("ego4d-dl c=64", 0, 4.0),  # the best fixed: the default is 0.80x of it
        ],
    )
    (target,) = report.issue_targets({}, {"mixed": far}, [])[-1:]
    assert target.ok is False
    assert target.measured.startswith("0.800x `ego4d-dl c=64`")


def test_startup_targets_count_a_failing_command_as_short() -> None:
    mixed = profiles.make_profile("mixed")
    timings = [
        startup.Timing(label=startup.HELP, argv=(), times_s=(0.1, 0.12, 0.5), exit_codes=(0,) * 3),
        startup.Timing(label=startup.VERSION_FLAG, argv=(), times_s=(0.1,), exit_codes=(2,)),
    ]
    help_, version, nothing = startup.startup_targets(timings, mixed)
    assert help_.ok is True
    assert "0.120 s median, 0.100 s min" in help_.measured
    assert version.ok is False
    assert "exit code 2" in version.measured
    assert nothing.ok is None
    assert "37-file dataset" in nothing.what


def test_a_cap_above_the_machines_own_limit_is_said_so() -> None:
    def cap_run(cap: float | None, held: float) -> caps.CapRun:
        return caps.CapRun(
            cap_bytes_s=cap,
            files=2,
            size_bytes=10**9,
            wall_s=5.0,
            held_bytes_s=held,
            held_over_s=4.0,
            exit_code=0,
        )

    table = caps.caps_table(
        [
            (cap_run(200e6, 199e6), cap_run(None, 300e6)),
            (cap_run(500e6, 290e6), cap_run(None, 300e6)),
        ]
    )
    lines = table.splitlines()
    assert "| 200 MB/s | 2 | 199.0 MB/s over 4.0 s | 99.5% | 300.0 MB/s |" in lines[2]
    assert "machine" not in lines[2]
    assert "above the machine's own limit (300 MB/s uncapped): held 97% of that" in lines[3]


# It starts a sandbox of its own (in the bench's process).
@pytest.mark.slow
@pytest.mark.sandbox
def test_the_quick_bench_of_ego4d_dl_alone_runs_checks_and_reports(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [
            sys.executable,
            str(_BENCHMARKS / "bench.py"),
            "--quick",
            "--profiles",
            "mixed",
            "--links",
            "loopback",
            "--tools",
            "ego4d-dl",
            "--skip",
            "cpu",
            "caps",
            "startup",
            "hooks",
            "--output",
            str(output),
            "--scratch",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "bench: loopback mixed round 1/1 ego4d-dl:" in done.stdout
    assert ": ok" in done.stdout
    text = output.read_text(encoding="utf-8")
    assert "<!-- bench:begin -->" in text
    assert "| **ego4d-dl** |" in text
    assert "<!-- bench:targets:begin -->" in text
    # s5cmd did not run: its targets are not measured rather than met or short.
    assert "| `mixed`: ego4d-dl at least 0.8x s5cmd (time to durable) | - | not measured |" in text


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning apart needs two cores")
def test_pinning_reaches_every_thread_and_is_undone() -> None:
    # A child with threads of its own, as the server has: every one of them must move.
    code = (
        "import threading, time\n" + "threading.Thread(target=time.sleep, args=(30,)).start()\n" * 3
    )
    with subprocess.Popen([sys.executable, "-c", code + "time.sleep(30)"]) as child:
        try:
            tasks = Path(f"/proc/{child.pid}/task")
            deadline = time.monotonic() + 10
            while len(list(tasks.iterdir())) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            one = min(os.sched_getaffinity(0))
            tools.pin_process(child.pid, {one})
            assert {t.name: os.sched_getaffinity(int(t.name)) for t in tasks.iterdir()} == {
                t.name: {one} for t in tasks.iterdir()
            }
            assert len(list(tasks.iterdir())) >= 4
            tools.pin_process(child.pid, None)
            assert all(
                os.sched_getaffinity(int(t.name)) == os.sched_getaffinity(0)
                for t in tasks.iterdir()
            )
        finally:
            child.kill()
