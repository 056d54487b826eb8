"""``ego4d-dl download`` and the engine against the sandbox: bytes, verification, resume."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ego4d_dl.config import Credentials, Options, parse_endpoint
from ego4d_dl.engine import Engine, EngineSettings
from ego4d_dl.events import Event, FileRestarted, IntegrityFailed, RunSummary
from ego4d_dl.journal import Journal, JournalView, journal_path
from ego4d_dl.planning import build_plan
from ego4d_dl.sandbox import CONSORTIUM_BUCKET, Sandbox, SeededObject, SeededRelease, fake_bytes
from ego4d_dl.store import ObjectHead, RangeBody, S3Store
from tests.support.cli import COMMAND, cli, cli_process
from tests.support.seed import put_manifest

MIB = 1 << 20
ALL = ("full_scale", "clips", "annotations", "viz", "av_models", "vq2d_models")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def summary_of(stdout: str) -> dict[str, Any]:
    docs = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    (finished,) = [d for d in docs if d["event"] == "RunFinished"]
    summary: dict[str, Any] = finished["summary"]
    return summary


def test_release_downloads_byte_identical_with_composite_etags(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    ran = cli(
        "download",
        "-y",
        "--json",
        "-o",
        tmp_path,
        "--endpoint-url",
        sandbox.endpoint_url,
        "--datasets",
        *ALL,
    )
    assert ran.code == 0, ran.stderr
    for f in release.files:
        assert md5(tmp_path / f.relpath) == f.obj.md5_hex, f.relpath
    assert md5(tmp_path / "ego4d.json") == release.metadata.md5_hex
    for ds in ALL:
        manifest = tmp_path / "v2" / ds / "manifest.csv"
        assert (
            manifest.read_bytes()
            == sandbox.admin_client()
            .get_object(Bucket=CONSORTIUM_BUCKET, Key=f"public/v2_1/{ds}/manifest.csv")["Body"]
            .read()
        )
    summary = summary_of(ran.stdout)
    multipart = sum(1 for f in release.files if f.obj.part_sizes_bytes) + 0
    assert summary["levels"]["composite-md5"] == multipart
    assert summary["levels"]["md5"] == len(release.files) + 1 - multipart
    assert summary["verified"] == len(release.files) + 1
    assert not list(tmp_path.rglob("*.part"))

    again = cli(
        "download",
        "-y",
        "--json",
        "-o",
        tmp_path,
        "--endpoint-url",
        sandbox.endpoint_url,
        "--datasets",
        *ALL,
    )
    assert again.code == 0
    second = summary_of(again.stdout)
    assert (second["bytes_fetched"], second["verified"], second["skipped"]) == (
        0,
        0,
        len(release.files) + 1,
    )


class CountingStore:
    """A pass-through to the real store that counts object reads and can act on them."""

    def __init__(self, inner: S3Store, before_get: Callable[[str], None] | None = None) -> None:
        self.inner = inner
        self.gets = 0
        self.get_bytes_calls = 0
        self._before_get = before_get

    async def head(
        self, bucket: str, key: str, *, part_number: int | None = None, checksums: bool = False
    ) -> ObjectHead:
        return await self.inner.head(bucket, key, part_number=part_number, checksums=checksums)

    async def list_page(
        self, bucket: str, *, prefix: str, start_after: str = "", token: str | None = None
    ) -> Any:
        return await self.inner.list_page(
            bucket, prefix=prefix, start_after=start_after, token=token
        )

    async def get_bytes(self, bucket: str, key: str, *, cached: bytes | None = None) -> bytes:
        self.get_bytes_calls += 1
        return await self.inner.get_bytes(bucket, key, cached=cached)

    async def list_folders(self, bucket: str, *, prefix: str) -> tuple[str, ...]:
        return await self.inner.list_folders(bucket, prefix=prefix)

    @contextlib.asynccontextmanager
    async def get_range(
        self, bucket: str, key: str, *, start: int, stop: int, size_bytes: int, etag: str
    ) -> AsyncIterator[RangeBody]:
        self.gets += 1
        if self._before_get is not None:
            await asyncio.to_thread(self._before_get, key)
        async with self.inner.get_range(
            bucket, key, start=start, stop=stop, size_bytes=size_bytes, etag=etag
        ) as body:
            yield body


def options_for(sandbox: Sandbox, out: Path, datasets: tuple[str, ...], **kw: Any) -> Options:
    return Options(
        output_directory=out,
        version="v2_1",
        datasets=datasets,
        credentials=Credentials(),
        endpoint=parse_endpoint(sandbox.endpoint_url),
        metadata=False,
        **kw,
    )


async def run_engine(
    options: Options,
    *,
    before_get: Callable[[str], None] | None = None,
    stop_after_gets: int | None = None,
    settings: EngineSettings | None = None,
) -> tuple[RunSummary, list[Event], CountingStore]:
    events: list[Event] = []
    out = options.output_directory
    async with S3Store(
        credentials=options.credentials,
        endpoint=options.endpoint,
        max_connections=8,
        stall_timeout_s=10,
    ) as real:
        engine_ref: list[Engine] = []

        def hook(key: str) -> None:
            if before_get is not None:
                before_get(key)

        store = CountingStore(real, hook)
        with Journal(journal_path(out)) as journal:
            plan = await build_plan(options, store, view=JournalView(out, journal, journal.path))
            engine = Engine(
                store=store,
                journal=journal,
                output_directory=out,
                settings=settings or EngineSettings(concurrency=4, max_piece_bytes=8 * MIB),
                sink=events.append,
            )
            engine_ref.append(engine)
            if stop_after_gets is not None:
                original = store.get_range

                @contextlib.asynccontextmanager
                async def stopping(*a: Any, **k: Any) -> AsyncIterator[RangeBody]:
                    async with original(*a, **k) as body:
                        yield body
                    if store.gets >= stop_after_gets:
                        engine.stop()

                store.get_range = stopping  # type: ignore[method-assign]
            summary = await engine.run(plan.files)
    return summary, events, store


def test_second_run_does_no_get(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    options = options_for(sandbox, tmp_path, ("clips", "full_scale"))
    first, _, store = asyncio.run(run_engine(options))
    assert first.ok and store.gets > 0
    second, _, store = asyncio.run(run_engine(options))
    assert second.ok
    assert (store.gets, second.bytes_fetched, second.skipped) == (0, 0, first.verified)


def test_kill_between_rename_and_commit_costs_a_read_not_a_download(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """A kill after a file's rename but before the journal commit that records it leaves a
    verified file whose journal row still says partial: the next run checks it against the
    ETag instead of fetching it again, and refetches only a file whose bytes do not match."""
    args = ("download", "-y", "--json", "--no-metadata", "-o", tmp_path,
            "--endpoint-url", sandbox.endpoint_url, "--datasets", "full_scale")  # fmt: skip
    assert cli(*args).code == 0
    multipart = [f for f in release.files if f.dataset == "full_scale" and f.obj.part_sizes_bytes]
    kept, damaged = multipart[0], multipart[1]
    db = sqlite3.connect(journal_path(tmp_path))
    with db:
        db.executemany(
            "UPDATE objects SET state = 'partial', verify_level = NULL, file_size = NULL, "
            "file_mtime_ns = NULL WHERE dest = ?",
            [(kept.relpath,), (damaged.relpath,)],
        )
    db.close()
    with (tmp_path / damaged.relpath).open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00" * 16)  # same size, wrong bytes

    ran = cli(*args)
    assert ran.code == 0, ran.stderr
    summary = summary_of(ran.stdout)
    assert summary["bytes_fetched"] == damaged.obj.size_bytes
    skipped = [json.loads(line) for line in ran.stdout.splitlines() if "FileSkipped" in line]
    assert [e["reason"] for e in skipped if e["key"] == kept.obj.key] == [
        "adopted a file renamed complete just before a run stopped (composite-md5)"
    ]
    for f in release.files:
        if f.dataset == "full_scale":
            assert md5(tmp_path / f.relpath) == f.obj.md5_hex, f.relpath
    with Journal(journal_path(tmp_path)) as journal:
        for f in (kept, damaged):
            entry = journal.get(f.relpath)
            assert entry is not None and entry.complete and entry.verify_level == "composite-md5"
    again = cli(*args)
    assert again.code == 0 and summary_of(again.stdout)["bytes_fetched"] == 0


def seed_big(sandbox: Sandbox, dataset: str, count: int, size: int) -> list[SeededObject]:
    sandbox.create_bucket("ego4d-cmu")
    objs = []
    for i in range(count):
        data = fake_bytes(f"{dataset}/{i}", size)
        parts = [8 * MIB] * (size // (8 * MIB)) + ([size % (8 * MIB)] if size % (8 * MIB) else [])
        objs.append(
            sandbox.put_object(
                "ego4d-cmu", f"public/v2/{dataset}/{i}.mp4", data, part_sizes_bytes=parts
            )
        )
    put_manifest(
        sandbox,
        dataset,
        "video_uid,canonical_s3_location",
        [f"v{i},s3://{o.bucket}/{o.key}" for i, o in enumerate(objs)],
    )
    return objs


def journaled_bytes(out: Path) -> int:
    db = sqlite3.connect(f"file:{journal_path(out)}?mode=ro", uri=True)
    try:
        complete = db.execute(
            "SELECT coalesce(sum(size), 0) FROM objects WHERE state='complete'"
        ).fetchone()[0]
        ranges = db.execute(
            "SELECT coalesce(sum(r.stop - r.start), 0) FROM ranges r "
            "JOIN objects o ON o.id = r.object_id WHERE o.state = 'partial'"
        ).fetchone()[0]
    finally:
        db.close()
    return int(complete) + int(ranges)


@pytest.mark.slow
def test_sigkill_then_resume_fetches_only_missing_ranges(
    sandbox: Sandbox, aws_env: dict[str, str], tmp_path: Path
) -> None:
    objs = seed_big(sandbox, "t_kill", 3, 48 * MIB + 5)
    total = sum(o.size_bytes for o in objs)
    args = [
        "download",
        "-y",
        "--json",
        "--no-metadata",
        "-o",
        str(tmp_path),
        "--endpoint-url",
        sandbox.endpoint_url,
        "--datasets",
        "t_kill",
        "--concurrency",
        "2",
        # Slow enough that the kill lands mid-transfer on any machine.
        "--max-bandwidth",
        "40MB/s",
    ]
    proc = subprocess.Popen(
        [*COMMAND, *args],
        env={**os.environ, **aws_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it the moment the journal holds some committed progress: mid-transfer by design.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(sqlite3.Error):
            if journal_path(tmp_path).exists() and journaled_bytes(tmp_path) > 0:
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = journaled_bytes(tmp_path)
    assert 0 < kept < total
    rerun = cli_process(*args, env=aws_env)
    assert rerun.code == 0, rerun.stderr
    summary = summary_of(rerun.stdout)
    assert summary["bytes_fetched"] == total - kept
    for i, o in enumerate(objs):
        assert md5(tmp_path / "v2" / "t_kill" / f"v{i}.mp4") == o.md5_hex


def test_object_replaced_between_runs_is_refetched(
    sandbox: Sandbox, aws_env: dict[str, str], tmp_path: Path
) -> None:
    key = "public/v2/t_between/x.mp4"
    sandbox.create_bucket("ego4d-cmu")
    old = sandbox.put_object("ego4d-cmu", key, fake_bytes("old", 3 * MIB))
    put_manifest(
        sandbox, "t_between", "video_uid,canonical_s3_location", [f"x,s3://ego4d-cmu/{key}"]
    )
    options = options_for(sandbox, tmp_path, ("t_between",))
    first, _, _ = asyncio.run(run_engine(options))
    dest = tmp_path / "v2/t_between/x.mp4"
    assert first.ok and md5(dest) == old.md5_hex
    new = sandbox.put_object(
        "ego4d-cmu", key, fake_bytes("new", 11 * MIB), part_sizes_bytes=[5 * MIB, 6 * MIB]
    )
    second, _, _ = asyncio.run(run_engine(options))
    assert second.ok and second.verified == 1
    assert md5(dest) == new.md5_hex


def test_object_replaced_during_a_run_restarts_against_the_new_version(
    sandbox: Sandbox, aws_env: dict[str, str], tmp_path: Path
) -> None:
    key = "public/v2/t_during/x.mp4"
    sandbox.create_bucket("ego4d-cmu")
    sandbox.put_object("ego4d-cmu", key, fake_bytes("v1", 24 * MIB), part_sizes_bytes=[8 * MIB] * 3)
    put_manifest(
        sandbox, "t_during", "video_uid,canonical_s3_location", [f"x,s3://ego4d-cmu/{key}"]
    )
    replaced: list[SeededObject] = []

    def replace_once(_: str) -> None:
        if not replaced:
            replaced.append(
                sandbox.put_object(
                    "ego4d-cmu",
                    key,
                    fake_bytes("v2", 21 * MIB),
                    part_sizes_bytes=[8 * MIB, 8 * MIB, 5 * MIB],
                )
            )

    summary, events, _ = asyncio.run(
        run_engine(options_for(sandbox, tmp_path, ("t_during",)), before_get=replace_once)
    )
    assert summary.ok and summary.restarts >= 1
    restarts = [e for e in events if isinstance(e, FileRestarted)]
    assert restarts and restarts[0].new_etag == replaced[0].etag
    assert md5(tmp_path / "v2/t_during/x.mp4") == replaced[0].md5_hex


def test_corrupted_part_file_is_detected_and_repaired(
    sandbox: Sandbox, aws_env: dict[str, str], tmp_path: Path
) -> None:
    objs = seed_big(sandbox, "t_corrupt", 1, 40 * MIB)
    options = options_for(sandbox, tmp_path, ("t_corrupt",))
    stopped, _, _ = asyncio.run(
        run_engine(options, stop_after_gets=2, settings=EngineSettings(concurrency=1))
    )
    assert stopped.stop_kind == "interrupted"
    part = tmp_path / "v2/t_corrupt/v0.mp4.part"
    db = sqlite3.connect(journal_path(tmp_path))
    ((start, stop),) = db.execute(
        "SELECT start, stop FROM ranges ORDER BY start LIMIT 1"
    ).fetchall()
    db.close()
    kept = journaled_bytes(tmp_path)
    assert kept >= stop - start
    with part.open("r+b") as f:
        f.seek(start + 1000)
        f.write(b"\x00corrupt\x00")
    summary, events, _ = asyncio.run(run_engine(options))
    assert summary.ok
    assert any(isinstance(e, IntegrityFailed) for e in events)
    assert md5(tmp_path / "v2/t_corrupt/v0.mp4") == objs[0].md5_hex
    # Only what was missing, plus the one damaged range, crossed the network again.
    assert summary.bytes_fetched == 40 * MIB - kept + (stop - start)


# Measured from a small launcher process: a child forked straight from pytest would count
# pytest's own memory in its ru_maxrss (kept across execve).
_LAUNCHER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(code)\n"
)


def peak_rss_mib(args: list[str], env: dict[str, str]) -> float:
    ran = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, sys.executable, "-m", "ego4d_dl", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    return int(ran.stdout.split()[-1]) / 1024


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_object_size(
    sandbox: Sandbox, aws_env: dict[str, str], tmp_path: Path
) -> None:
    peaks = {}
    # At a concurrency both objects saturate, only the object size differs between the runs.
    for size_mib in (48, 384):
        seed_big(sandbox, f"t_rss{size_mib}", 1, size_mib * MIB)
        out = tmp_path / str(size_mib)
        peaks[size_mib] = peak_rss_mib(
            [
                "download",
                "-y",
                "--quiet",
                "--no-metadata",
                "-o",
                str(out),
                "--endpoint-url",
                sandbox.endpoint_url,
                "--datasets",
                f"t_rss{size_mib}",
                "--concurrency",
                "4",
            ],
            aws_env,
        )
        shutil.rmtree(out)
    # Eight times the bytes, (nearly) the same memory: nothing is buffered per object.
    assert peaks[384] < peaks[48] + 12, peaks
    assert peaks[384] < 150, peaks


def test_without_yes_and_without_an_answer_it_stops_instead_of_hanging(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    # An empty stdin: end of input at the question, exit 1 as the original CLI's input().
    ran = cli(
        "download", "-o", tmp_path, "--endpoint-url", sandbox.endpoint_url, "--datasets", "viz"
    )
    assert ran.code == 1
    assert "Pass --yes" in ran.error_line()
    assert not (tmp_path / "v2" / "viz" / "viz_index.html").exists()


def test_manifest_keeps_the_full_scale_manifest_and_goes_on(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    ran = cli(
        "download", "--manifest", "-y", "--no-metadata", "-o", tmp_path,
        "--endpoint-url", sandbox.endpoint_url, "--datasets", "viz",
    )  # fmt: skip
    assert ran.code == 0, ran.stderr
    files = sorted(
        str(p.relative_to(tmp_path))
        for p in tmp_path.rglob("*")
        if p.is_file() and ".ego4d-dl" not in p.parts
    )
    assert files == [
        "manifest.csv",
        "v2/viz/manifest.csv",
        "v2/viz/manifest.ver",
        "v2/viz/viz_index.html",
    ]
    assert md5(tmp_path / "manifest.csv") == release.manifests["full_scale"].md5_hex
    assert f"Manifest downloaded: {tmp_path / 'manifest.csv'}" in ran.stderr
    for name in ("manifest.csv", "v2/viz/manifest.csv", "v2/viz/manifest.ver"):
        # Readable by the group like the data, as the original's (not mkstemp's 0600).
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class PartNumberBlindStore(CountingStore):
    """The sandbox seen through a mirror that ignores ``PartNumber`` (answers with the whole
    object), as some S3-compatible servers do."""

    async def head(
        self, bucket: str, key: str, *, part_number: int | None = None, checksums: bool = False
    ) -> ObjectHead:
        head = await self.inner.head(bucket, key, checksums=checksums)
        if part_number is None:
            return head
        return dataclasses.replace(head, part_range=(0, head.size_bytes), parts_count=None)


def test_a_server_that_ignores_part_numbers_gets_size_checks_not_failures(
    sandbox: Sandbox, aws_env: dict[str, str], tmp_path: Path
) -> None:
    objs = seed_big(sandbox, "t_blind", 1, 20 * MIB + 3)
    options = options_for(sandbox, tmp_path, ("t_blind",))
    events: list[Event] = []

    async def go() -> RunSummary:
        async with S3Store(
            credentials=options.credentials,
            endpoint=options.endpoint,
            max_connections=4,
            stall_timeout_s=10,
        ) as real:
            store = PartNumberBlindStore(real)
            with Journal(journal_path(tmp_path)) as journal:
                plan = await build_plan(
                    options, store, view=JournalView(tmp_path, journal, journal.path)
                )
                engine = Engine(
                    store=store,
                    journal=journal,
                    output_directory=tmp_path,
                    settings=EngineSettings(concurrency=4),
                    sink=events.append,
                )
                return await engine.run(plan.files)

    summary = asyncio.run(go())
    assert summary.ok and summary.restarts == 0
    assert summary.levels == {"size": 1}
    assert md5(tmp_path / "v2/t_blind/v0.mp4") == objs[0].md5_hex
