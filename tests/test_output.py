"""Unattended output: plain progress lines and JSON lines (the sinks, then the real CLI in a
pipe), --quiet, the confirmation prompt and its text, and a --help that teaches."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from ego4d_dl.cli import app
from ego4d_dl.events import (
    BytesReceived,
    ConcurrencyChanged,
    Event,
    FileFailed,
    FileSkipped,
    FileStarted,
    FileStatus,
    ManifestLoaded,
    PlanBuilt,
    RangeRetried,
    RunFinished,
    RunStarted,
    RunSummary,
)
from ego4d_dl.ondisk import ObjectVersion
from ego4d_dl.planned import Action, DatasetPlan, Plan, PlannedFile
from ego4d_dl.render import confirmation_text
from ego4d_dl.sandbox import Sandbox, SeededRelease
from ego4d_dl.sinks import JsonLinesSink, PlainProgressSink
from tests.support.cli import cli, cli_env, cli_process
from tests.support.events import FakeClock, summary
from tests.support.seed import MIB, Dataset, blobs, check_download, seed_dataset
from tests.support.slowlink import ThrottledProxy

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
KEY = "public/v2/full_scale/v1.mp4"
DEST = Path("/data/ego4d/v2/full_scale/v1.mp4")


def _summary(**kw: object) -> RunSummary:
    return summary(**{"files": 3, "verified": 1, "elapsed_s": 10.0, "levels": {"md5": 1}, **kw})


def _script(clock: FakeClock) -> Iterator[Event]:
    """Planning, a 100 MiB run at 8 MiB/s with a skip, a missing file and a retry."""
    yield ManifestLoaded(dataset="full_scale", rows=3, selected=3, malformed=0)
    yield PlanBuilt(
        files=3, size_bytes=101 * MIB, fetch_bytes=100 * MIB, heads=0, list_pages=1, elapsed_s=0.2
    )
    yield RunStarted(
        files=3,
        size_bytes=101 * MIB,
        present_bytes=0,
        fetch_bytes=100 * MIB,
        skipped_files=1,
        concurrency=16,
    )
    yield FileSkipped(dataset="full_scale", key="k0", dest=DEST, size_bytes=MIB, reason="complete")
    yield FileFailed(  # the store names the object; the line does not say it twice
        dataset="full_scale", key="public/v2/full_scale/v3.mp4", dest=DEST,
        status=FileStatus.MISSING,
        reason="s3://ego4d-cmu/public/v2/full_scale/v3.mp4: 404 Not Found",
    )  # fmt: skip
    yield FileStarted(
        dataset="full_scale", key=KEY, dest=DEST, size_bytes=100 * MIB, present_bytes=0
    )
    for _ in range(5):
        clock.now += 1.0
        yield BytesReceived(dataset="full_scale", key=KEY, count=8 * MIB)
    yield RangeRetried(
        dataset="full_scale",
        key=KEY,
        start=0,
        stop=MIB,
        attempt=1,
        delay_s=0.5,
        reason="connection reset",
    )
    yield ConcurrencyChanged(limit=8, reason="throttled by the server")


def test_plain_lines_carry_progress_rate_eta_and_warnings() -> None:
    clock = FakeClock(50.0)
    out = io.StringIO()
    sink = PlainProgressSink(
        out, interval_s=10, clock=clock, wallclock=lambda: 1.7e9, ticking=False
    )
    for event in _script(clock):
        sink(event)
    sink.progress()
    sink(RunFinished(summary=_summary()))
    sink.progress()  # after the end: nothing more
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    lines = text.splitlines()
    assert all(re.match(STAMP, line) for line in lines), lines
    bodies = [line[20:] for line in lines]
    assert bodies == [
        "manifest full_scale: 3 of 3 rows selected",
        "plan: 3 files, 100.0 MiB to fetch (planned in 0.2s)",
        "missing: full_scale/v3.mp4: 404 Not Found",
        "retry: full_scale/v1.mp4: connection reset (attempt 1, again in 0.5s; bytes 0-1,048,575)",
        "concurrency now 8 (throttled by the server)",
        "progress 40.0%: 40.0 MiB of 100.0 MiB, 8.0 MiB/s, ETA 0:00:07, files 2/3 (1 failed), "
        "1 retries",
    ]


def test_quiet_lines_are_only_errors() -> None:
    clock = FakeClock(50.0)
    out = io.StringIO()
    sink = PlainProgressSink(out, quiet=True, clock=clock, ticking=False)
    for event in _script(clock):
        sink(event)
    sink(RunFinished(summary=_summary()))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("missing: full_scale/v3.mp4: 404 Not Found")


def test_plain_progress_lines_come_on_their_own_clock_and_stop_with_the_run() -> None:
    out = io.StringIO()
    sink = PlainProgressSink(out, interval_s=0.02)
    sink(
        RunStarted(
            files=1, size_bytes=MIB, present_bytes=0, fetch_bytes=MIB, skipped_files=0,
            concurrency=4,
        )
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while out.getvalue().count("progress") < 3 and time.monotonic() < deadline:
        time.sleep(0.01)  # no event arrives, yet the lines keep coming
    sink(RunFinished(summary=_summary()))
    written = out.getvalue()
    assert written.count("progress 0.0%: 0 B of 1.0 MiB") >= 3
    time.sleep(0.1)
    assert out.getvalue() == written
    assert not any(t.name == "ego4d-dl-progress" for t in threading.enumerate())


def test_json_lines_are_json_to_the_last_one() -> None:
    clock = FakeClock(50.0)
    out, log = io.StringIO(), io.StringIO()
    sink = JsonLinesSink(out, clock=clock, ticking=False, log=log)
    for event in _script(clock):
        sink(event)
    sink.progress()
    sink.note("stopping: saving progress")
    sink(RunFinished(summary=_summary()))
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [d["event"] for d in docs] == [
        "ManifestLoaded",
        "PlanBuilt",
        "RunStarted",
        "FileSkipped",
        "FileFailed",
        "FileStarted",
        "RangeRetried",
        "ConcurrencyChanged",
        "Progress",
        "RunFinished",
    ]
    progress = docs[-2]
    assert progress["bytes"] == 40 * MIB
    assert progress["total_bytes"] == 100 * MIB
    assert progress["bytes_per_s"] == 8 * MIB
    assert progress["eta_s"] == 7.5
    assert progress["files_done"] == 2
    assert docs[-1]["summary"]["verified"] == 1
    assert docs[-1]["summary"]["problems"] == []
    assert log.getvalue() == "stopping: saving progress\n"


def test_a_closed_pipe_never_stops_the_run() -> None:
    """The reader of the output went away (``| head``): the first write fails, the sink goes
    quiet for the rest of the run instead of raising into it or writing on and on."""

    class Closed(io.StringIO):
        writes = 0

        def write(self, s: str) -> int:
            self.writes += 1
            raise BrokenPipeError(32, "Broken pipe")

    clock = FakeClock(50.0)
    for stream, sink in (
        (plain := Closed(), PlainProgressSink(plain, clock=clock, ticking=False)),
        (lines := Closed(), JsonLinesSink(lines, clock=clock, ticking=False)),
    ):
        for event in _script(clock):
            sink(event)
        sink.progress()
        sink(RunFinished(summary=_summary()))
        assert stream.writes == 1, type(sink).__name__


# --- the confirmation --------------------------------------------------------------------------


def _planned(name: str, size: int, action: Action, present: int = 0) -> PlannedFile:
    return PlannedFile(
        dataset="full_scale",
        uid=name,
        version=ObjectVersion(
            bucket="ego4d-cmu", key=f"public/v2/full_scale/{name}", etag="0" * 32, size_bytes=size
        ),
        dest=Path("/data/ego4d/v2/full_scale") / name,
        action=action,
        present_bytes=present,
    )


def test_confirmation_shows_size_count_free_space_and_what_resumes() -> None:
    plan = Plan(
        version="v2_1",
        output_directory=Path("/data/ego4d"),
        datasets=(
            DatasetPlan(
                name="full_scale",
                files=(
                    _planned("a.mp4", 100 * MIB, Action.FETCH),
                    _planned("b.mp4", 50 * MIB, Action.RESUME, present=20 * MIB),
                    _planned("c.mp4", 10 * MIB, Action.SKIP),
                    _planned("d.mp4", 0, Action.MISSING),
                ),
            ),
        ),
    )
    assert confirmation_text(plan, free_bytes=200 * MIB) == (
        "Ego4D v2_1 -> /data/ego4d: 2 files to fetch, 130.0 MiB\n"
        "  resuming 1 file partly downloaded: 20.0 MiB on disk, 30.0 MiB to go\n"
        "  already complete, skipped: 1 file (10.0 MiB)\n"
        "  not available: 1 file (listed in the summary)\n"
        "  free space: 200.0 MiB, enough"
    )
    assert confirmation_text(plan, free_bytes=100 * MIB).endswith("100.0 MiB, NOT enough")
    assert confirmation_text(plan, free_bytes=None).endswith("free space: unknown")


# --- the command line, in pipes ----------------------------------------------------------------


@pytest.fixture(scope="module")
def paced(sandbox: Sandbox, release: SeededRelease) -> Dataset:
    """About 29 MiB: some 3 s through a 10 MiB/s link."""
    return seed_dataset(
        sandbox,
        "output_paced",
        blobs("output_paced", [12 * MIB, 9 * MIB, 6 * MIB, 2 * MIB, 300_000, 0]),
    )


@pytest.fixture(scope="module")
def with_missing(sandbox: Sandbox, release: SeededRelease) -> Dataset:
    return seed_dataset(sandbox, "output_missing", blobs("output_missing", [100_000]), missing=1)


@pytest.fixture
def proxy(sandbox: Sandbox) -> Iterator[ThrottledProxy]:
    with ThrottledProxy(sandbox.endpoint_url, rate_bytes_s=10 * MIB) as running:
        yield running


def test_in_a_pipe_progress_lines_go_to_stderr_and_the_summary_to_stdout(
    aws_env: dict[str, str], paced: Dataset, proxy: ThrottledProxy, tmp_path: Path
) -> None:
    # fmt: off
    done = cli_process(
        "download", "-o", str(tmp_path), "--datasets", paced.name, "--no-metadata",
        "--endpoint-url", proxy.url, "--yes", "--progress-interval", "0.25",
    )
    # fmt: on
    assert done.code == 0, done.stderr
    for stream in (done.stdout, done.stderr):
        assert "\x1b" not in stream
        assert "\r" not in stream
    progress = [line for line in done.stderr.splitlines() if " progress " in line]
    assert len(progress) >= 3, done.stderr
    assert all(re.match(STAMP + r"progress [\d.]+%: ", line) for line in progress)
    percents = [float(re.findall(r"progress ([\d.]+)%", line)[0]) for line in progress]
    assert percents == sorted(percents)
    assert percents[0] < 100.0
    assert "Starting (--yes)." in done.stderr
    assert "6 downloaded and verified, 0 already complete, 0 failed" in done.stdout
    assert "progress" not in done.stdout
    assert check_download(tmp_path, paced) == []


def test_json_every_stdout_line_is_json(
    aws_env: dict[str, str], paced: Dataset, proxy: ThrottledProxy, tmp_path: Path
) -> None:
    # fmt: off
    done = cli_process(
        "download", "-o", str(tmp_path), "--datasets", paced.name, "--endpoint-url",
        proxy.url, "--yes", "--json", "--progress-interval", "0.25",
    )
    # fmt: on
    assert done.code == 0, done.stderr
    docs = [json.loads(line) for line in done.stdout.splitlines()]
    kinds = [d["event"] for d in docs]
    assert kinds[0] == "ManifestLoaded"
    assert {"PlanBuilt", "RunStarted", "FileStarted", "FileVerified"} <= set(kinds)
    assert kinds.count("FileVerified") == 7  # the dataset's six and ego4d.json
    progress = [d["bytes"] for d in docs if d["event"] == "Progress"]
    assert len(progress) >= 3
    assert progress == sorted(progress)
    assert kinds[-1] == "RunFinished"
    summary = docs[-1]["summary"]
    assert summary["verified"] == 7
    assert summary["stop_kind"] is None
    assert summary["problems"] == []
    assert check_download(tmp_path, paced) == []


def test_quiet_prints_only_errors_warnings_and_the_summary(
    aws_env: dict[str, str], sandbox: Sandbox, with_missing: Dataset, tmp_path: Path
) -> None:
    # fmt: off
    done = cli_process(
        "download", "-o", str(tmp_path), "--datasets", with_missing.name, "--no-metadata",
        "--endpoint-url", sandbox.endpoint_url, "--yes", "--quiet", "--progress-interval",
        "0.01",
    )
    # fmt: on
    assert done.code == 1  # a file is missing
    lines = done.stderr.splitlines()
    failed = [line for line in lines if re.match(STAMP + "missing: output_missing/gone-00", line)]
    assert len(failed) == 1
    # Besides the error, only warnings about the request itself (here: an unknown dataset).
    assert [line for line in lines if line not in failed] == [
        "warning: output_missing: not a dataset this tool knows; downloading it anyway"
    ]
    assert "1 downloaded and verified, 0 already complete, 0 failed, 1 missing" in done.stdout
    assert "missing: output_missing/output_missing-gone-00" in done.stdout


def test_without_yes_and_with_nothing_on_stdin_nobody_answers(
    aws_env: dict[str, str], sandbox: Sandbox, with_missing: Dataset, tmp_path: Path
) -> None:
    # fmt: off
    done = cli_process(
        "download", "-o", str(tmp_path), "--datasets", with_missing.name,
        "--endpoint-url", sandbox.endpoint_url,
    )
    # fmt: on
    # End of input at the question: exit 1, as the original CLI (without its traceback).
    assert done.code == 1
    assert done.stderr.splitlines()[-1] == (
        "error: no answer to the question (end of input); nothing was downloaded. Pass --yes "
        "to start without asking"
    )
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(("typed", "downloads"), [(b"n\n", False), (b"\x04", False), (b"\n", True)])
def test_the_prompt_at_a_terminal(
    aws_env: dict[str, str],
    sandbox: Sandbox,
    with_missing: Dataset,
    tmp_path: Path,
    typed: bytes,
    downloads: bool,
) -> None:
    master, slave = pty.openpty()
    # fmt: off
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "ego4d_dl", "download", "-o", str(tmp_path), "--datasets",
            with_missing.name, "--no-metadata", "--endpoint-url", sandbox.endpoint_url,
        ],
        stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )
    # fmt: on
    os.close(slave)
    try:
        os.write(master, typed)  # the terminal holds it until the prompt reads
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        os.close(master)
    assert "Ego4D v2_1 -> " in err
    assert "1 file to fetch, 97.7 KiB" in err
    assert "not available: 1 file" in err
    assert re.search(r"free space: [\d.]+ [KMGT]iB, enough", err)
    assert "Start the download? [Y/n] " in err
    if downloads:
        assert proc.returncode == 1  # the missing file
        assert "1 downloaded and verified" in out
        assert check_download(tmp_path, with_missing) == []
    elif typed == b"\x04":  # Ctrl-D: no answer, exit 1 as the original CLI
        assert proc.returncode == 1
        assert "error: no answer to the question (end of input)" in err
        assert out == ""
        assert check_download(tmp_path, with_missing) != []
    else:
        assert proc.returncode == 0
        assert "Aborting the download operation." in err
        assert out == ""
        assert check_download(tmp_path, with_missing) != []


# --- --help --------------------------------------------------------------------------------------


def _help(*args: str) -> str:
    done = cli(*args, "--help", env={"COLUMNS": "80"})
    assert done.code == 0, done.stdout + done.stderr
    return done.stdout


def test_main_help_teaches_with_three_examples() -> None:
    text = _help()
    assert text.startswith("Usage: ego4d-dl [OPTIONS] COMMAND [ARGS]...")
    examples = [line.strip() for line in text.splitlines() if line.startswith("    ego4d-dl")]
    assert examples == [
        "ego4d-dl demo",
        "ego4d-dl --output_directory ~/ego4d_data --datasets full_scale annotations",
        "ego4d-dl plan -o ~/ego4d_data --datasets clips --benchmarks FHO",
    ]
    for command in ("plan", "download", "datasets", "demo"):
        line = next(line for line in text.splitlines() if line.startswith(f"  {command} "))
        assert not line.endswith("..."), line  # each command's line is whole


@pytest.mark.parametrize(
    "command",
    [(), ("plan",), ("download",), ("datasets",), ("demo",), ("verify",), ("status",), ("doctor",)],
)
def test_help_fits_80_columns(command: tuple[str, ...]) -> None:
    text = _help(*command)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "\x1b" not in text


def test_every_option_has_a_one_line_help_with_its_default() -> None:
    group: Any = typer.main.get_command(app)
    root = group.make_context("ego4d-dl", [], resilient_parsing=True)
    commands = {name: group.get_command(root, name) for name in group.list_commands(root)}
    assert set(commands) == {
        "plan",
        "download",
        "datasets",
        "demo",
        "verify",
        "status",
        "doctor",
    }
    for name, command in commands.items():
        assert command.short_help, name
        ctx = command.make_context(name, [], parent=root, resilient_parsing=True)
        for param in command.params:
            if getattr(param, "hidden", False):
                continue  # the original CLI's switches, accepted but not advertised
            record = param.get_help_record(ctx)
            assert record is not None, (name, param.name)
            term, text = record
            # What it is when not given; an option without a default says it is required.
            assert "[default: " in text or text.endswith("[required]."), (name, term, text)
            assert "\n" not in (param.help or ""), (name, term)
