"""``download --processes N``: N worker processes over one plan make exactly the tree one process
makes, under one JSON stream, one summary and one exit code; Ctrl-C, kill and rerun behave as
for one process. Real processes against the sandbox (through a slow link where a run must be
caught mid-transfer)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ego4d_dl.config import Options, build_options
from ego4d_dl.errors import ConfigError
from ego4d_dl.events import FileOutcome, FileStatus, RunSummary, StopKind
from ego4d_dl.fanout import (
    auto_processes,
    merge_summaries,
    split_evenly,
    split_plan,
    worker_options,
    worst_stop,
)
from ego4d_dl.files import part_path
from ego4d_dl.journal import Journal, find_journals
from ego4d_dl.ondisk import ObjectVersion
from ego4d_dl.planned import Action, DatasetPlan, Plan, PlannedFile, Totals
from ego4d_dl.processes import process_count
from ego4d_dl.sandbox import Sandbox, SeededRelease
from ego4d_dl.shard import shard_of
from ego4d_dl.zygote import Zygote
from tests.support.cli import cli_env, cli_process, json_lines
from tests.support.seed import MIB, Dataset, blobs, check_download, seed_dataset, tree_md5
from tests.support.slowlink import ThrottledProxy

GiB = 1 << 30
# Through the slow link a run lasts a few seconds: long enough to be caught mid-transfer.
_RATE_BYTES_S = 8 * MIB
_SUMMARY_COUNTS = (
    "files",
    "verified",
    "skipped",
    "failed",
    "missing",
    "denied",
    "bytes_fetched",
    "size_bytes",
)


# --- pure decisions -----------------------------------------------------------------------


def _options(**kw: Any) -> Options:
    return Options(output_directory=Path("/tmp/x"), version="v2", datasets=("clips",), **kw)


def _file(key: str, size: int, action: Action = Action.FETCH) -> PlannedFile:
    version = ObjectVersion(bucket="b", key=key, etag="e", size_bytes=size)
    return PlannedFile(
        dataset="clips", uid=key, version=version, dest=Path("/tmp/x") / key, action=action
    )


def test_the_automatic_count_follows_the_cores_and_the_plan() -> None:
    big = Totals(fetch_files=100, fetch_bytes=100 * GiB)
    assert auto_processes(big, cores=1) == 1
    assert auto_processes(big, cores=2) == 1  # this machine: one process
    assert auto_processes(big, cores=4) == 2
    assert auto_processes(big, cores=16) == 8
    assert auto_processes(big, cores=64) == 8
    assert auto_processes(Totals(fetch_files=10, fetch_bytes=GiB // 2), cores=16) == 1
    assert auto_processes(Totals(fetch_files=10, fetch_bytes=3 * GiB), cores=16) == 3
    assert auto_processes(Totals(fetch_files=9_000, fetch_bytes=GiB // 2), cores=16) == 4


def test_limits_are_shared_out_and_add_up() -> None:
    assert split_evenly(16, 3) == [6, 5, 5]
    assert split_evenly(2, 2) == [1, 1]
    fixed = _options(concurrency=10, max_bandwidth_bytes_s=90e6)
    shares = [worker_options(fixed, (k, 3)) for k in (1, 2, 3)]
    assert [o.shard for o in shares] == [(1, 3), (2, 3), (3, 3)]
    assert sum(o.concurrency for o in shares) == 10
    assert all(o.max_concurrency is None for o in shares)
    assert sum(o.max_bandwidth_bytes_s or 0 for o in shares) == pytest.approx(90e6)
    adaptive = [worker_options(_options(max_concurrency=256), (k, 4)) for k in (1, 2, 3, 4)]
    assert sum(o.concurrency for o in adaptive) == 16
    assert sum(o.max_concurrency or 0 for o in adaptive) == 256


def test_the_count_never_exceeds_a_fixed_concurrency_and_is_one_with_a_shard() -> None:
    plan = Plan(version="v2", output_directory=Path("/tmp/x"), datasets=())
    assert process_count(_options(processes=4, concurrency=2), plan) == 2
    assert process_count(_options(processes=4, max_concurrency=256), plan) == 4
    assert process_count(_options(processes=None, shard=(1, 2)), plan, cores=64) == 1
    assert process_count(_options(max_concurrency=256), plan, cores=2) == 1


def test_the_parts_are_disjoint_and_cover_the_plan() -> None:
    files = tuple(_file(f"k{i}", i) for i in range(200))
    plan = Plan(
        version="v2",
        output_directory=Path("/tmp/x"),
        datasets=(DatasetPlan(name="clips", files=files),),
        manifests={"m": b"x"},
    )
    parts = split_plan(plan, 3)
    keys = [f.key for p in parts for f in p.files]
    assert sorted(keys) == sorted(f.key for f in files)
    for k, part in enumerate(parts, start=1):
        assert all(shard_of(f.key, 3) == k for f in part.files)
        assert part.manifests == {}


def _summary(**kw: Any) -> RunSummary:
    return dataclasses.replace(RunSummary.empty(), **kw)


def test_one_summary_from_many_with_the_worst_stop() -> None:
    problem = FileOutcome(
        dataset="d", uid="u", key="k", dest=Path("/x"), status=FileStatus.MISSING, reason="404"
    )
    a = _summary(files=3, verified=2, missing=1, levels={"etag": 2}, problems=(problem,))
    b = _summary(
        files=2,
        verified=1,
        levels={"etag": 1},
        stopped_by="interrupted",
        stop_kind=StopKind.INTERRUPTED,
    )
    c = _summary(files=1, stopped_by="keys expired", stop_kind=StopKind.CREDENTIALS)
    merged = merge_summaries([a, b, c], elapsed_s=2.0)
    assert (merged.files, merged.verified, merged.missing) == (6, 3, 1)
    assert merged.levels == {"etag": 3}
    assert merged.problems == (problem,)
    assert merged.stop_kind is StopKind.CREDENTIALS
    assert merged.stopped_by == "keys expired"
    assert worst_stop([None, StopKind.INTERRUPTED, StopKind.DISK]) is StopKind.DISK
    assert worst_stop([None, None]) is None
    died = merge_summaries([a], elapsed_s=1.0, stopped=["process 2 of 2 ended"])
    assert died.stop_kind is None and died.stopped_by == "process 2 of 2 ended"
    assert not died.ok


def test_processes_are_checked() -> None:
    for bad in (0, 65):
        with pytest.raises(ConfigError, match="--processes must be between 1 and 64"):
            build_options({"output_directory": "/tmp/x", "processes": bad})
    with pytest.raises(ConfigError, match="--processes and --shard do not combine"):
        build_options({"output_directory": "/tmp/x", "processes": 2, "shard": "1/2"})
    options, _ = build_options({"output_directory": "/tmp/x", "processes": 1, "shard": "1/2"})
    assert options.processes == 1


# --- against the sandbox --------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_dataset(sandbox: Sandbox, release: SeededRelease) -> Dataset:
    """Multipart and single-part files, an empty one, and one the manifest lists that the
    server does not have (a file that fails: exit 1)."""
    sizes = [10 * MIB, 9 * MIB, 3 * MIB, 2 * MIB, 1 * MIB, 700_000, 300_000, 100_000, 1, 0]
    sizes += [50_000 + 1000 * i for i in range(14)]
    return seed_dataset(sandbox, "processes_mixed", blobs("processes_mixed", sizes), missing=1)


@pytest.fixture(scope="module")
def slow_dataset(sandbox: Sandbox, release: SeededRelease) -> Dataset:
    sizes = [12 * MIB, 12 * MIB, 9 * MIB, 9 * MIB, 4 * MIB, 2 * MIB, 1 * MIB, 1 * MIB, 200_000, 0]
    return seed_dataset(sandbox, "processes_slow", blobs("processes_slow", sizes))


@pytest.fixture
def proxy(sandbox: Sandbox) -> Iterator[ThrottledProxy]:
    with ThrottledProxy(sandbox.endpoint_url, rate_bytes_s=_RATE_BYTES_S) as running:
        yield running


def _args(out: Path, dataset: Dataset, endpoint: str, *extra: str) -> list[str]:
    # fmt: off
    return [
        "download", "-o", str(out), "--datasets", dataset.name, "--no-metadata",
        "--endpoint-url", endpoint, "--yes", "--json", "--progress-interval", "0.2", *extra,
    ]
    # fmt: on


def _stream(stdout: str) -> list[dict[str, Any]]:
    """The ``--json`` stream: every line one JSON document, one ``RunStarted``, and the
    ``RunFinished`` last."""
    lines = stdout.splitlines()
    docs = [json.loads(line) for line in lines]  # every line parses
    assert len(docs) == len(json_lines(stdout))
    events = [d["event"] for d in docs]
    assert events.count("RunStarted") == 1
    assert events.count("RunFinished") == 1
    assert events[-1] == "RunFinished"
    return docs


def _counts(summary: dict[str, Any]) -> dict[str, Any]:
    return {name: summary[name] for name in _SUMMARY_COUNTS}


@pytest.mark.parametrize("count", [2, 3])
def test_n_processes_make_exactly_the_tree_of_one(
    aws_env: dict[str, str],
    sandbox: Sandbox,
    mixed_dataset: Dataset,
    tmp_path: Path,
    count: int,
) -> None:
    one, many = tmp_path / "one", tmp_path / "many"
    single = cli_process(*_args(one, mixed_dataset, sandbox.endpoint_url, "--processes", "1"))
    multi = cli_process(
        *_args(many, mixed_dataset, sandbox.endpoint_url, "--processes", str(count))
    )
    # The object the server lacks fails in one process; the others complete: exit 1 in both.
    assert single.code == multi.code == 1, multi.stderr
    one_docs, many_docs = _stream(single.stdout), _stream(multi.stdout)
    summary = many_docs[-1]["summary"]
    assert _counts(summary) == _counts(one_docs[-1]["summary"])
    assert summary["missing"] == 1 and summary["verified"] == len(mixed_dataset.md5_by_relpath)
    assert [p["key"] for p in summary["problems"]] == [
        p["key"] for p in one_docs[-1]["summary"]["problems"]
    ]
    assert check_download(many, mixed_dataset) == []
    assert tree_md5(many) == tree_md5(one)  # manifests and manifest.ver included
    plain, sharded = find_journals(many)
    assert plain is None and set(sharded) <= {(k, count) for k in range(1, count + 1)}
    assert len(sharded) > 1
    started = next(d for d in many_docs if d["event"] == "RunStarted")
    assert started["files"] == summary["files"]
    verified = [d for d in many_docs if d["event"] == "FileVerified"]
    assert len(verified) == summary["verified"]


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (its workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        found.extend(int(p) for p in text.split())
    return found


def _workers(pid: int) -> list[int]:
    """The workers of the run ``pid``: the processes its zygote forked."""
    return [w for zygote in _children(pid) for w in _children(zygote)]


@pytest.mark.parametrize("busy", [False, True])
def test_the_zygote_forks_workers_and_says_how_they_ended(busy: bool) -> None:
    release = threading.Event()
    if busy:  # a process with a thread cannot fork its zygote: it starts one afresh
        threading.Thread(target=release.wait, daemon=True).start()
    forkable = threading.active_count() == 1
    try:
        zygote = Zygote(cli_env())
    finally:
        release.set()
    assert zygote.forked == forkable
    try:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            killed = zygote.spawn(theirs.fileno())
        assert killed.pid is not None and _children(zygote.pid) == [killed.pid]
        os.kill(killed.pid, signal.SIGKILL)
        assert killed.wait(timeout=30) == -signal.SIGKILL
        ours, theirs = socket.socketpair()
        with ours, theirs:
            left = zygote.spawn(theirs.fileno())  # its parent leaves before sending a job
        assert left.wait(timeout=30) == 0
    finally:
        zygote.close()
    assert not _alive(zygote.pid)


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _mid_transfer(docs: list[dict[str, Any]]) -> bool:
    verified = any(d["event"] == "FileVerified" for d in docs)
    flowing = any(d["event"] == "Progress" and 0 < d["bytes"] < d["total_bytes"] / 2 for d in docs)
    return verified and flowing


class _Run:
    """A download in a subprocess whose JSON lines are read as they come."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ego4d_dl", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        self.docs: list[dict[str, Any]] = []

    def until_mid_transfer(self, timeout_s: float = 120) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while not _mid_transfer(self.docs):
            line = self.proc.stdout.readline()
            assert line, "the download ended first"
            assert time.monotonic() < deadline
            self.docs.append(json.loads(line))

    def close(self) -> None:
        """However the test went: no process left, no pipe open."""
        self.proc.kill()
        self.proc.communicate(timeout=30)

    def finish(self) -> tuple[int, list[dict[str, Any]], str]:
        out, err = self.proc.communicate(timeout=90)
        self.docs.extend(json.loads(line) for line in out.splitlines())
        return self.proc.returncode, self.docs, err


def _journaled(out: Path, dataset: Dataset) -> tuple[int, int, int]:
    """Every journal of the folder opens and claims nothing the disk does not hold; the
    complete files, their bytes, and the journaled bytes of partial ones."""
    data_by_key = {dataset.key(name): f.data for name, f in dataset.files.items()}
    complete = complete_bytes = partial_bytes = 0
    plain, sharded = find_journals(out)
    for path in [p for p in (plain, *sharded.values()) if p is not None]:
        with Journal(path, readonly=True) as journal:
            assert journal.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            for entry in journal.entries():
                source = data_by_key[entry.key]
                size = len(source)
                dest = out / entry.dest
                part = part_path(dest)
                # A kill between a file's rename and its journal record leaves it verified at
                # its final name, unrecorded: the rerun adopts it (reads it back), as designed.
                renamed = not entry.complete and not part.exists() and dest.is_file()
                if entry.complete or (renamed and dest.read_bytes() == source):
                    assert dest.read_bytes() == source, entry.dest
                    complete += 1
                    complete_bytes += size
                    continue
                for r in journal.ranges(entry.id):
                    data = part.read_bytes() if part.exists() else dest.read_bytes()
                    assert data[r.start : r.stop] == source[r.start : r.stop], (entry.dest, r)
                    if r.md5 is not None:
                        assert hashlib.md5(data[r.start : r.stop]).digest() == r.md5
                    if part.exists():
                        partial_bytes += r.stop - r.start
    return complete, complete_bytes, partial_bytes


def _rerun(
    out: Path, dataset: Dataset, endpoint: str, *extra: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    done = cli_process(*_args(out, dataset, endpoint, *extra))
    assert done.code == 0, done.stderr
    assert check_download(out, dataset) == []
    assert not list(out.rglob("*.part"))
    docs = _stream(done.stdout)
    return docs[-1]["summary"], docs


def _resumes_exactly(out: Path, dataset: Dataset, endpoint: str) -> int:
    """Rerun with two processes after an interrupted run: it skips exactly the files the
    journals call complete and fetches exactly the bytes no journal holds; the number of
    complete files before the rerun."""
    complete, complete_bytes, partial_bytes = _journaled(out, dataset)
    again, _ = _rerun(out, dataset, endpoint, "--processes", "2")
    assert again["skipped"] == complete
    assert again["bytes_fetched"] == dataset.size_bytes - complete_bytes - partial_bytes
    return complete


def test_ctrl_c_stops_every_worker_cleanly_and_the_rerun_resumes(
    aws_env: dict[str, str],
    sandbox: Sandbox,
    slow_dataset: Dataset,
    proxy: ThrottledProxy,
    tmp_path: Path,
) -> None:
    run = _Run(_args(tmp_path, slow_dataset, proxy.url, "--processes", "2"))
    try:
        run.until_mid_transfer()
        zygotes = _children(run.proc.pid)
        # Forked from the command (which had no thread yet), not a fresh interpreter.
        assert [_cmdline(z) for z in zygotes] == [_cmdline(run.proc.pid)]
        workers = _workers(run.proc.pid)
        assert len(workers) == 2
        run.proc.send_signal(signal.SIGINT)
        code, docs, err = run.finish()
    finally:
        run.close()
    assert code == 130, err
    summary = docs[-1]["summary"]
    assert summary["stop_kind"] == "interrupted"
    assert "stopping: cancelling requests in flight and saving progress" in err
    assert err.rstrip().endswith("resume with the same command")
    assert not any(_alive(pid) for pid in [*zygotes, *workers])
    complete = _resumes_exactly(tmp_path, slow_dataset, sandbox.endpoint_url)
    assert complete < len(slow_dataset.md5_by_relpath)


def test_a_killed_worker_fails_the_run_and_the_rerun_resumes(
    aws_env: dict[str, str],
    sandbox: Sandbox,
    slow_dataset: Dataset,
    proxy: ThrottledProxy,
    tmp_path: Path,
) -> None:
    run = _Run(_args(tmp_path, slow_dataset, proxy.url, "--processes", "2"))
    try:
        run.until_mid_transfer()
        victim = _workers(run.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        code, docs, err = run.finish()
    finally:
        run.close()
    assert code == 1, err
    summary = docs[-1]["summary"]
    assert "ended before it finished (killed by SIGKILL)" in summary["stopped_by"]
    assert "killed by SIGKILL" in err and "run the same command to resume" in err
    complete, complete_bytes, _ = _journaled(tmp_path, slow_dataset)
    again, _ = _rerun(tmp_path, slow_dataset, sandbox.endpoint_url, "--processes", "2")
    assert again["skipped"] == complete
    assert again["bytes_fetched"] <= slow_dataset.size_bytes - complete_bytes


def test_a_killed_parent_leaves_its_workers_to_stop_and_a_resumable_folder(
    aws_env: dict[str, str],
    sandbox: Sandbox,
    slow_dataset: Dataset,
    proxy: ThrottledProxy,
    tmp_path: Path,
) -> None:
    run = _Run(_args(tmp_path, slow_dataset, proxy.url, "--processes", "2"))
    try:
        run.until_mid_transfer()
        workers = [*_children(run.proc.pid), *_workers(run.proc.pid)]
        assert len(workers) == 3  # the zygote and two workers
        run.proc.kill()
        run.proc.wait(timeout=30)
        assert run.proc.stderr is not None
        err = run.proc.stderr.read()
    finally:
        run.close()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"a worker outlived its parent: {err}"
        time.sleep(0.1)
    _resumes_exactly(tmp_path, slow_dataset, sandbox.endpoint_url)


def test_a_rerun_with_another_count_fetches_nothing_and_the_commands_agree(
    aws_env: dict[str, str],
    sandbox: Sandbox,
    slow_dataset: Dataset,
    tmp_path: Path,
) -> None:
    endpoint = sandbox.endpoint_url
    first, _ = _rerun(tmp_path, slow_dataset, endpoint, "--processes", "3")
    assert first["verified"] == len(slow_dataset.md5_by_relpath)
    for extra in (("--processes", "2"), ("--processes", "3"), ()):
        again, docs = _rerun(tmp_path, slow_dataset, endpoint, *extra)
        assert again["bytes_fetched"] == 0, extra
        assert again["skipped"] == len(slow_dataset.md5_by_relpath), extra
        assert not [d for d in docs if d["event"] == "FileStarted"], extra
    base = ["-o", str(tmp_path), "--datasets", slow_dataset.name]
    plan = cli_process("plan", *base, "--endpoint-url", endpoint, "--json")
    assert plan.code == 0, plan.stderr
    (planned,) = [d for d in json.loads(plan.stdout)["datasets"] if d["name"] == slow_dataset.name]
    assert planned["totals"]["fetch_files"] == 0
    status = cli_process("status", *base, "--no-metadata", "--json")
    assert status.code == 0, status.stderr
    totals = json.loads(status.stdout)["totals"]
    assert totals["complete_files"] == len(slow_dataset.md5_by_relpath)
    assert totals["fetch_files"] == totals["partial_files"] == 0
    verify = cli_process("verify", *base, "--no-metadata", "--endpoint-url", endpoint)
    assert verify.code == 0, verify.stderr


def test_a_running_processes_run_keeps_other_runs_out(
    aws_env: dict[str, str],
    sandbox: Sandbox,
    slow_dataset: Dataset,
    tmp_path: Path,
) -> None:
    with ThrottledProxy(sandbox.endpoint_url, rate_bytes_s=2 * MIB) as slow:
        run = _Run(_args(tmp_path, slow_dataset, slow.url, "--processes", "2"))
        try:
            run.until_mid_transfer()
            for extra in (("--processes", "2"), ("--processes", "3"), ()):
                other = cli_process(*_args(tmp_path, slow_dataset, sandbox.endpoint_url, *extra))
                assert other.code == 2, (extra, other.stderr)
                assert "an ego4d-dl run with --processes 2 is writing into" in other.stderr, extra
            joiner = cli_process(
                *_args(tmp_path, slow_dataset, sandbox.endpoint_url, "--shard", "1/2")
            )
            assert joiner.code == 2
            assert "shard 1/2 is already running" in joiner.stderr
            assert _alive(run.proc.pid)  # refused without disturbing the run
        finally:
            run.close()


_API_SCRIPT = """
import json, sys
import ego4d_dl
from ego4d_dl.events import RunStarted
out, endpoint, dataset = sys.argv[1:]
events = []
summary = ego4d_dl.download(out, datasets=[dataset], metadata=False, endpoint_url=endpoint,
                            processes=2, on_event=events.append)
print(json.dumps({"ok": summary.ok, "verified": summary.verified,
                  "started": sum(isinstance(e, RunStarted) for e in events)}))
"""


def test_the_python_api_honours_processes(
    aws_env: dict[str, str], sandbox: Sandbox, slow_dataset: Dataset, tmp_path: Path
) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", _API_SCRIPT, str(tmp_path), sandbox.endpoint_url, slow_dataset.name],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == ""  # neither the library nor its workers print
    doc = json.loads(ran.stdout)
    assert doc["ok"] and doc["verified"] == len(slow_dataset.md5_by_relpath)
    assert doc["started"] == 1
    assert check_download(tmp_path, slow_dataset) == []
    plain, sharded = find_journals(tmp_path)
    assert plain is None and set(sharded) == {(1, 2), (2, 2)}  # the work of two processes
