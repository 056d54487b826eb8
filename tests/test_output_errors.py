"""Output that cannot be written ends the command with an ``error:`` line and exit code 1,
never a traceback or a silent 0: ``> /dev/full``, a pipe whose reader left (mid-run too, and
the journal then resumes), a closed stdout. Real processes against the sandbox."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from ego4d_dl.sandbox import Sandbox, SeededRelease
from ego4d_dl.sinks import JsonLinesSink, PlainProgressSink
from tests.support.cli import cli_env, cli_process
from tests.support.faultproxy import Delay, FaultProxy, Match, Rule
from tests.support.seed import MIB, Dataset, blobs, check_download, seed_dataset

_DEV_FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not _DEV_FULL.exists(), reason="no /dev/full here")


@pytest.fixture(scope="module")
def dataset(sandbox: Sandbox, release: SeededRelease) -> Dataset:
    return seed_dataset(
        sandbox, "output_errors_test", blobs("output_errors_test", [3 * MIB, 2 * MIB, 1 * MIB])
    )


def _args(out: Path, dataset: Dataset, endpoint: str, *extra: str) -> list[str]:
    # fmt: off
    return [
        "download", "-o", str(out), "--datasets", dataset.name, "--no-metadata",
        "--endpoint-url", endpoint, "--yes", *extra,
    ]
    # fmt: on


def _run(*args: str, stdout: int | IO[str]) -> subprocess.CompletedProcess[str]:
    """``ego4d-dl ARGS`` with stdout on ``stdout`` (a file or descriptor), stderr captured."""
    return subprocess.run(
        [sys.executable, "-m", "ego4d_dl", *args],
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
    )


def _one_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


class _Broken(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_the_sinks_report_a_stream_that_cannot_be_written_once_and_never_raise() -> None:
    told: list[str] = []
    plain = PlainProgressSink(_Broken(), ticking=False, on_output_error=told.append)
    plain.note("first")
    plain.note("second")
    assert told == ["cannot write to output: the reading end of the pipe was closed"]

    told.clear()
    log = io.StringIO()
    log.close()
    json_sink = JsonLinesSink(io.StringIO(), ticking=False, log=log, on_output_error=told.append)
    json_sink.note("stopping")
    json_sink.note("again")
    assert told == ["cannot write to output: the stream is closed"]


@needs_dev_full
def test_download_json_to_a_full_device_fails_before_fetching(
    aws_env: dict[str, str], sandbox: Sandbox, dataset: Dataset, tmp_path: Path
) -> None:
    with _DEV_FULL.open("w") as full:
        ran = _run(*_args(tmp_path, dataset, sandbox.endpoint_url, "--json"), stdout=full)
    assert ran.returncode == 1, ran.stderr
    line = _one_error(ran.stderr)
    assert "cannot write to stdout: No space left on device" in line
    assert "run the same command to resume" in line
    # The first JSON line failed while planning: no file was fetched unseen.
    assert sorted(p.name for p in tmp_path.rglob("blob-*")) == []


@needs_dev_full
def test_plan_and_summary_to_a_full_device_exit_1(
    aws_env: dict[str, str], sandbox: Sandbox, dataset: Dataset, tmp_path: Path
) -> None:
    endpoint = sandbox.endpoint_url
    for extra in ([], ["--json"]):
        with _DEV_FULL.open("w") as full:
            # fmt: off
            ran = _run(
                "plan", "-o", str(tmp_path), "--datasets", dataset.name, "--endpoint-url",
                endpoint, *extra, stdout=full,
            )
            # fmt: on
        assert ran.returncode == 1, ran.stderr
        assert "cannot write to stdout: No space left on device" in _one_error(ran.stderr)

    # A plain download: progress on stderr works, the summary on stdout cannot be written.
    with _DEV_FULL.open("w") as full:
        ran = _run(*_args(tmp_path, dataset, endpoint), stdout=full)
    assert ran.returncode == 1, ran.stderr
    assert "cannot write to stdout: No space left on device" in _one_error(ran.stderr)
    assert check_download(tmp_path, dataset) == []  # the files themselves are fine


def test_a_closed_stdout_is_an_error_not_a_crash(
    aws_env: dict[str, str], sandbox: Sandbox, dataset: Dataset, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "ego4d_dl", *_args(tmp_path, dataset, sandbox.endpoint_url)]
    for extra in (["--json"], []):
        done = subprocess.run(
            ["sh", "-c", 'exec "$@" >&-', "sh", *command, *extra],
            env=cli_env(),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 1, done.stderr
        assert "cannot write to stdout: the stream is closed" in _one_error(done.stderr)


def test_a_pipe_closed_before_the_first_line(
    aws_env: dict[str, str], sandbox: Sandbox, dataset: Dataset, tmp_path: Path
) -> None:
    """``| head -0``: the reader is gone before anything is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        ran = _run(*_args(tmp_path, dataset, sandbox.endpoint_url, "--json"), stdout=write_end)
    finally:
        os.close(write_end)
    assert ran.returncode == 1, ran.stderr
    line = _one_error(ran.stderr)
    assert "cannot write to stdout: the reading end of the pipe was closed" in line


def test_a_pipe_closed_mid_run_stops_the_download_and_the_next_run_resumes(
    aws_env: dict[str, str], sandbox: Sandbox, dataset: Dataset, tmp_path: Path
) -> None:
    """``--json | head``: the reader leaves after the first verified file while the last file
    is held at the proxy; the next event cannot be written, the run stops with exit 1, and the
    same command then finishes without fetching the verified files again."""
    release = threading.Event()

    def hold_until_released() -> None:
        release.wait(60)

    last = sorted(dataset.source_by_relpath.values())[-1][1]  # blob-02
    with FaultProxy(sandbox.endpoint_url) as proxy:
        hold = Rule(
            match=Match(method="GET", key=last),
            fault=Delay(seconds=0),
            on_fire=hold_until_released,
        )
        proxy.add(hold)
        stderr_path = tmp_path / "stderr.txt"
        out = tmp_path / "out"
        with stderr_path.open("w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ego4d_dl", *_args(out, dataset, proxy.url, "--json")],
                env=cli_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            assert proc.stdout is not None
            seen = []
            try:
                for line in proc.stdout:
                    seen.append(json.loads(line))
                    if seen[-1]["event"] == "FileVerified":
                        break
            finally:
                proc.stdout.close()  # the reader leaves
                assert proxy.wait_fired(hold), "the last file was never requested"
                release.set()
            code = proc.wait(timeout=120)
        errors = stderr_path.read_text()
    assert code == 1, errors
    line = _one_error(errors)
    assert "cannot write to stdout: the reading end of the pipe was closed" in line
    assert "run the same command to resume" in line
    verified = {doc["key"] for doc in seen if doc["event"] == "FileVerified"}
    assert verified

    again = cli_process(*_args(out, dataset, sandbox.endpoint_url, "--json"))
    assert again.code == 0, again.stderr
    events = [json.loads(line) for line in again.stdout.splitlines()]
    skipped = {doc["key"] for doc in events if doc["event"] == "FileSkipped"}
    assert verified <= skipped  # journaled complete by the stopped run: not fetched again
    assert check_download(out, dataset) == []


@needs_dev_full
def test_status_json_to_a_full_device_exits_1(tmp_path: Path) -> None:
    with _DEV_FULL.open("w") as full:
        ran = _run("status", "-o", str(tmp_path), "--json", stdout=full)
    assert ran.returncode == 1, ran.stderr
    assert "cannot write to stdout: No space left on device" in _one_error(ran.stderr)
