"""Interrupting a real download (the CLI in a subprocess, mid-transfer through a slow link):
SIGINT or SIGTERM exit 130 after flushing the journal, a second Ctrl-C exits at once, and in
every case the journal is consistent and the next run resumes and finishes."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ego4d_dl.files import part_path
from ego4d_dl.journal import Journal, journal_path
from ego4d_dl.sandbox import Sandbox, SeededRelease
from tests.support.cli import cli_env, cli_process
from tests.support.faultproxy import Delay, FaultProxy, Match, Rule
from tests.support.seed import MIB, Dataset, blobs, check_download, seed_dataset
from tests.support.slowlink import ThrottledProxy

# A second and a half at most per file through the link; several files verify early, the big
# ones are still in flight when the signal comes.
_RATE_BYTES_S = 8 * MIB


@pytest.fixture(scope="module")
def interrupted_dataset(sandbox: Sandbox, release: SeededRelease) -> Dataset:
    sizes = [16 * MIB, 12 * MIB, 9 * MIB, 4 * MIB, 2 * MIB, 1 * MIB, 200_000, 0]
    return seed_dataset(sandbox, "signals_test", blobs("signals_test", sizes))


@pytest.fixture
def proxy(sandbox: Sandbox) -> Iterator[ThrottledProxy]:
    with ThrottledProxy(sandbox.endpoint_url, rate_bytes_s=_RATE_BYTES_S) as running:
        yield running


def _download_args(out: Path, dataset: Dataset, endpoint: str) -> list[str]:
    # fmt: off
    return [
        "download", "-o", str(out), "--datasets", dataset.name, "--no-metadata",
        "--endpoint-url", endpoint, "--yes", "--json", "--progress-interval", "0.2",
    ]
    # fmt: on


class _Lines:
    """A subprocess's stdout lines, read by a thread so that waiting can time out."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def until(self, done: Any, timeout_s: float = 120) -> None:
        while not done(self.seen):
            line = self._queue.get(timeout=timeout_s)
            if line is None:
                raise AssertionError(f"the download ended first:\n{''.join(self.seen)}")
            self.seen.append(line)

    def rest(self) -> list[str]:
        self._thread.join(timeout=60)
        while (line := self._queue.get_nowait()) is not None:
            self.seen.append(line)
        return self.seen


def _mid_transfer(lines: list[str]) -> bool:
    """A file is verified and a progress line shows bytes still to come."""
    docs = [json.loads(line) for line in lines]
    verified = any(d["event"] == "FileVerified" for d in docs)
    flowing = any(d["event"] == "Progress" and 0 < d["bytes"] < d["total_bytes"] / 2 for d in docs)
    return verified and flowing


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalState:
    complete: int
    complete_bytes: int
    partial_bytes: int  # journaled ranges of unfinished files that the next run resumes


def check_journal(out: Path, dataset: Dataset) -> JournalState:
    """The journal opens and claims nothing the disk does not hold: every complete file is
    there with the right bytes, every journaled range of a partial file matches the source
    (and its recorded MD5)."""
    by_key = {dataset.key(name): source.data for name, source in dataset.files.items()}
    complete = complete_bytes = partial_bytes = 0
    with Journal(journal_path(out), readonly=True) as journal:
        assert journal.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for entry in journal.entries():
            source = by_key[entry.key]
            size = len(source)
            assert entry.size_bytes == size
            dest = out / entry.dest
            if entry.complete:
                assert dest.read_bytes() == source, entry.dest
                assert not part_path(dest).exists()
                complete += 1
                complete_bytes += size
                continue
            ranges = journal.ranges(entry.id)
            if not ranges:
                continue
            part = part_path(dest)
            # An exit between a batch's renames and its commit leaves the file renamed but
            # journaled as partial: its ranges must then hold in the renamed file, and the
            # next run fetches it again whole.
            resumable = part.exists()
            data = (part if resumable else dest).read_bytes()
            for r in ranges:
                assert data[r.start : r.stop] == source[r.start : r.stop], (entry.dest, r)
                if r.md5 is not None:
                    assert hashlib.md5(data[r.start : r.stop]).digest() == r.md5
                if resumable:
                    partial_bytes += r.stop - r.start
    return JournalState(
        complete=complete, complete_bytes=complete_bytes, partial_bytes=partial_bytes
    )


def _resume_and_finish(out: Path, dataset: Dataset, sandbox: Sandbox, state: JournalState) -> None:
    """The same command again (at full speed): only what was missing moves, all verifies."""
    done = cli_process(*_download_args(out, dataset, sandbox.endpoint_url))
    assert done.code == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])["summary"]
    assert summary["skipped"] == state.complete
    assert summary["verified"] == len(dataset.md5_by_relpath) - state.complete
    assert summary["bytes_fetched"] == (
        dataset.size_bytes - state.complete_bytes - state.partial_bytes
    )
    assert check_download(out, dataset) == []
    assert not list(out.rglob("*.part"))


def _interrupt(
    out: Path, dataset: Dataset, endpoint: str, signals: list[signal.Signals]
) -> tuple[int, list[dict[str, Any]], str]:
    """Start the download, send ``signals`` once it is mid-transfer; exit code, JSON lines
    and stderr."""
    with subprocess.Popen(
        [sys.executable, "-m", "ego4d_dl", *_download_args(out, dataset, endpoint)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    ) as proc:
        try:
            lines = _Lines(proc)
            lines.until(_mid_transfer)
            for signum in signals:
                proc.send_signal(signum)
                # Two signals sent at once are merged by the kernel; a few milliseconds apart,
                # the second lands while the first one's bookkeeping runs.
                time.sleep(0.005)
            code = proc.wait(timeout=60)
            assert proc.stderr is not None
            err = proc.stderr.read()
            docs = [json.loads(line) for line in lines.rest()]
        finally:
            proc.kill()
    return code, docs, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_cleanly_and_the_next_run_resumes(
    aws_env: dict[str, str],
    sandbox: Sandbox,
    interrupted_dataset: Dataset,
    proxy: ThrottledProxy,
    tmp_path: Path,
    signum: signal.Signals,
) -> None:
    code, docs, err = _interrupt(tmp_path, interrupted_dataset, proxy.url, [signum])
    assert code == 130
    assert docs[-1]["event"] == "RunFinished"
    summary = docs[-1]["summary"]
    assert summary["stop_kind"] == "interrupted"
    assert 1 <= summary["verified"] < len(interrupted_dataset.md5_by_relpath)
    assert "stopping: cancelling requests in flight and saving progress" in err
    assert err.rstrip().endswith(
        f"interrupted: {summary['verified']} files complete, resume with the same command"
    )
    state = check_journal(tmp_path, interrupted_dataset)
    # A file counts as verified once its rename is committed; the last flush may add more.
    assert state.complete >= summary["verified"]
    assert state.complete < len(interrupted_dataset.md5_by_relpath)
    _resume_and_finish(tmp_path, interrupted_dataset, sandbox, state)


def test_a_second_ctrl_c_leaves_at_once_and_loses_nothing_journaled(
    aws_env: dict[str, str],
    sandbox: Sandbox,
    interrupted_dataset: Dataset,
    proxy: ThrottledProxy,
    tmp_path: Path,
) -> None:
    code, _, _ = _interrupt(
        tmp_path, interrupted_dataset, proxy.url, [signal.SIGINT, signal.SIGINT]
    )
    assert code == 130
    # Whether the second signal cut the bookkeeping short (usually) or came after it, what
    # the journal says is on disk is on disk, and the next run completes the download.
    state = check_journal(tmp_path, interrupted_dataset)
    assert state.complete < len(interrupted_dataset.md5_by_relpath)
    _resume_and_finish(tmp_path, interrupted_dataset, sandbox, state)


_WAITS_FOR_SIGNALS = """
import asyncio, os, signal, sys
from ego4d_dl.cli.signals import on_signals

async def main():
    stopped = asyncio.Event()
    on_signals(lambda: print("stop requested", flush=True), "stopping", print)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.sleep(0.5)
    print("still here after the first", flush=True)
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(stopped.wait(), timeout=100)  # a stop that never finishes
    print("not reached", flush=True)

asyncio.run(main())
"""


def test_the_second_signal_does_not_wait_for_the_first_to_finish() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WAITS_FOR_SIGNALS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 130
    assert done.stdout.splitlines() == ["stopping", "stop requested", "still here after the first"]


# --- before the transfer: while planning, and at the prompt --------------------------------------


class _Chars:
    """A subprocess stream read by a thread as it comes (a prompt ends without a newline)."""

    def __init__(self, stream: Any) -> None:
        self.text = ""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        while chunk := os.read(stream.fileno(), 4096):
            with self._lock:
                self.text += chunk.decode(errors="replace")

    def wait_for(self, text: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if text in self.text:
                    return
            time.sleep(0.01)
        raise AssertionError(f"{text!r} never came:\n{self.text}")

    def rest(self) -> str:
        self._thread.join(timeout=60)
        return self.text


def _nothing_transferred(out: Path, dataset: Dataset, proxy: FaultProxy) -> None:
    """No object of the dataset was requested, nothing of it is on disk, and the journal
    (if the run got to open it) is sound and empty."""
    assert proxy.wait_idle()
    assert not [s for s in proxy.seen if s.method == "GET" and f"/{dataset.name}/blob-" in s.key]
    assert not list(out.rglob("blob-*")), list(out.rglob("*"))
    if journal_path(out).exists():
        with Journal(journal_path(out), readonly=True) as journal:
            assert journal.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert list(journal.entries()) == []


@pytest.fixture
def fault_proxy(sandbox: Sandbox) -> Iterator[FaultProxy]:
    with FaultProxy(sandbox.endpoint_url) as running:
        yield running


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("held", ["manifest", "lookups"])
def test_a_signal_while_planning_stops_before_any_transfer(
    aws_env: dict[str, str],
    interrupted_dataset: Dataset,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    held: str,
    signum: signal.Signals,
) -> None:
    """Ctrl-C (or SIGTERM) while the plan is being made, its manifest GET or its object
    lookups held by the server: exit 130 at once with one line saying nothing was downloaded,
    no traceback, no object requested, nothing on disk."""
    name = interrupted_dataset.name
    if held == "manifest":
        match = Match(method="GET", key=f"public/{interrupted_dataset.version}/{name}/manifest.csv")
    else:
        match = Match(method="HEAD", key=f"public/v2/{name}/blob-*")
    hold = fault_proxy.add(Rule(match=match, fault=Delay(seconds=120), times=None))
    out = tmp_path / "out"
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ego4d_dl",
            *_download_args(out, interrupted_dataset, fault_proxy.url),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    ) as proc:
        try:
            assert fault_proxy.wait_fired(hold, timeout_s=60), "planning never asked"
            proc.send_signal(signum)
            code = proc.wait(timeout=60)
            assert proc.stdout is not None and proc.stderr is not None
            err = proc.stderr.read().decode()
            stdout = proc.stdout.read().decode()
        finally:
            proc.kill()
    assert code == 130, err
    assert "Traceback" not in err
    assert err.rstrip().endswith("interrupted: nothing was downloaded yet"), err
    assert "RunStarted" not in stdout
    fault_proxy.clear()
    _nothing_transferred(out, interrupted_dataset, fault_proxy)


def test_ctrl_c_at_the_prompt_stops_before_any_transfer(
    aws_env: dict[str, str],
    interrupted_dataset: Dataset,
    fault_proxy: FaultProxy,
    tmp_path: Path,
) -> None:
    """Ctrl-C while the confirmation waits for an answer at a terminal: exit 130, one line
    saying nothing was downloaded, no traceback, and no object requested."""
    out = tmp_path / "out"
    master, slave = pty.openpty()
    args = [a for a in _download_args(out, interrupted_dataset, fault_proxy.url) if a != "--yes"]
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "ego4d_dl", *args],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(),
        ) as proc:
            try:
                assert proc.stderr is not None
                err = _Chars(proc.stderr)
                err.wait_for("Start the download? [Y/n] ")
                proc.send_signal(signal.SIGINT)
                code = proc.wait(timeout=60)
                text = err.rest()
            finally:
                proc.kill()
    finally:
        os.close(slave)
        os.close(master)
    assert code == 130, text
    assert "Traceback" not in text
    assert text.rstrip().endswith("interrupted: nothing was downloaded yet"), text
    _nothing_transferred(out, interrupted_dataset, fault_proxy)
