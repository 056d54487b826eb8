"""Load: 20,000 small objects in one run with bounded memory and file descriptors, and 500
requests in flight at once without exhausting the connection pool."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from ego4d_dl.config import DEFAULT_MAX_CONCURRENCY, Options
from ego4d_dl.engine import EngineSettings
from ego4d_dl.events import FileVerified
from ego4d_dl.sandbox import CONSORTIUM_BUCKET, Sandbox, SeededRelease, fake_bytes
from tests.support.cli import COMMAND
from tests.support.faultproxy import FaultProxy, Gate, Match, Rule
from tests.support.scenario import download_args, run_in_process
from tests.support.seed import (
    FILES_BUCKET,
    MIB,
    SourceFile,
    manifest_csv,
    md5_hex,
    seed_dataset,
    unique_name,
)

__all__: list[str] = []

MANY = 20_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ManyObjects:
    name: str
    md5: dict[str, str]  # file name -> MD5 of its bytes


def _object_bytes(name: str, i: int) -> bytes:
    return fake_bytes(f"{name}/{i}", 16 + i % 97)


async def _put_all(filer_url: str, bucket: str, items: dict[str, bytes]) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        gate = asyncio.Semaphore(32)

        async def put(key: str, data: bytes) -> None:
            async with gate, session.put(f"{filer_url}/buckets/{bucket}/{key}", data=data) as r:
                assert r.status < 300, (r.status, await r.text())

        async with asyncio.TaskGroup() as tg:
            for key, data in items.items():
                tg.create_task(put(key, data))


@pytest.fixture(scope="module")
def many_objects(sandbox: Sandbox, release: SeededRelease) -> ManyObjects:
    """20,000 objects of 16 to 112 bytes in one folder, and a manifest naming them all.

    They are written through the sandbox's filer (plain HTTP, about 1,000 per second): as S3
    PUTs, signing alone would cost a minute. SeaweedFS serves them as S3 objects like any
    other (MD5 ETags, listings); the test reads them only through S3.
    """
    name = unique_name("many")
    filer_url = f"http://127.0.0.1:{sandbox._running().ports.filer}"
    items = {f"public/v2/{name}/f{i:05d}.json": _object_bytes(name, i) for i in range(MANY)}
    asyncio.run(_put_all(filer_url, FILES_BUCKET, items))
    rows = [(f"u{i:05d}", f"s3://{FILES_BUCKET}/{key}") for i, key in enumerate(items)]
    sandbox.put_object(CONSORTIUM_BUCKET, f"public/v2_1/{name}/manifest.csv", manifest_csv(rows))
    return ManyObjects(
        name=name, md5={key.rsplit("/", 1)[1]: md5_hex(data) for key, data in items.items()}
    )


@dataclass(slots=True)
class Usage:
    """Samples of a process's resident memory and open descriptors against files done."""

    samples: list[tuple[int, int, int]] = field(default_factory=list)  # (done, rss KiB, fds)

    @property
    def peak_rss_kib(self) -> int:
        return max(rss for _, rss, _ in self.samples)

    @property
    def max_fds(self) -> int:
        return max(fds for _, _, fds in self.samples)

    def rss_when(self, done_at_least: int) -> int:
        return next(rss for done, rss, _ in self.samples if done >= done_at_least)


def _watch(pid: int, done: list[int], usage: Usage, stop: threading.Event) -> None:
    status = Path(f"/proc/{pid}/status")
    fd_dir = Path(f"/proc/{pid}/fd")
    while not stop.is_set():
        try:
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
            rss = int(fields["VmHWM"].split()[0])
            fds = sum(1 for _ in fd_dir.iterdir())
        except (OSError, KeyError, ValueError):
            break
        usage.samples.append((done[0], rss, fds))
        stop.wait(0.05)


@pytest.mark.slow
def test_twenty_thousand_small_objects_with_bounded_memory_and_descriptors(
    sandbox: Sandbox, many_objects: ManyObjects, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """One run fetches and verifies 20,000 objects. Descriptors stay within the engine's
    bounds (file slots + connections + a few), and memory does not grow with the number of
    files once the transfers are under way."""
    out = tmp_path / "out"
    args = download_args(out, many_objects.name, sandbox.endpoint_url, "--json")
    done = [0]
    usage = Usage()
    stop = threading.Event()
    summary: dict[str, object] = {}
    with subprocess.Popen(
        [*COMMAND, *args],
        env={"PATH": os.environ["PATH"], **aws_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        watcher = threading.Thread(target=_watch, args=(proc.pid, done, usage, stop), daemon=True)
        watcher.start()
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "FileVerified":
                done[0] += 1
            elif event["event"] == "RunFinished":
                summary = event["summary"]
        stderr = proc.stderr.read()
        proc.wait(timeout=60)
        stop.set()
        watcher.join()

    assert proc.returncode == 0, stderr
    assert summary["verified"] == MANY
    folder = out / "v2" / many_objects.name
    landed = {p.name: md5_hex(p.read_bytes()) for p in folder.iterdir() if p.suffix == ".json"}
    assert landed == many_objects.md5
    assert not list(folder.glob("*.part"))

    # The settings the command line gave this run (adaptive concurrency up to its ceiling).
    settings = EngineSettings.from_options(
        Options(
            output_directory=out,
            version="v2_1",
            datasets=(many_objects.name,),
            max_concurrency=DEFAULT_MAX_CONCURRENCY,
        )
    )
    # Every open file and connection the engine may hold (parts being written, verified parts
    # waiting for their batched rename), plus the journal, its lock and WAL, the event loop,
    # stdio and the interpreter's own: a constant, not one per file.
    bound = settings.max_open_files + settings.max_finished_parts + settings.max_requests + 48
    assert usage.max_fds <= bound, usage.max_fds
    # Once a tenth of the files are done, everything per-run (plan, manifest, clients) is
    # allocated; the other 18,000 files may not add more than a few MiB.
    growth_kib = usage.peak_rss_kib - usage.rss_when(MANY // 10)
    assert growth_kib < 32 * 1024, (usage.rss_when(MANY // 10), usage.peak_rss_kib)
    assert usage.peak_rss_kib < 384 * 1024
    print(
        f"20,000 objects: peak RSS {usage.peak_rss_kib / 1024:.0f} MiB "
        f"(+{growth_kib / 1024:.1f} MiB after 2,000 files), max fds {usage.max_fds}"
    )


@pytest.fixture
def enough_descriptors() -> Iterator[None]:
    """500 engine connections, and the proxy's 500 client and 500 server sides, share this
    process: make sure the descriptor limit allows it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_five_hundred_requests_in_flight(
    sandbox: Sandbox,
    release: SeededRelease,
    aws_env: dict[str, str],
    tmp_path: Path,
    enough_descriptors: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """--concurrency 500 really puts 500 GETs in flight: the proxy holds the first 500 until
    all of them have arrived (a barrier, so how fast the machine sends them does not matter),
    and the run completes: no pool exhausted, no pool warnings, no errors."""
    name = unique_name("wide")
    files = [
        SourceFile(name=f"w{i}.bin", data=fake_bytes(f"{name}/{i}", 8 * MIB)) for i in range(4)
    ]
    dataset = seed_dataset(sandbox, name, files)
    settings = EngineSettings(concurrency=500, max_piece_bytes=64 * 1024)  # 512 ranged GETs
    caplog.set_level(logging.DEBUG)
    gate = Gate(count=500)
    with FaultProxy(sandbox.endpoint_url) as proxy:
        proxy.add(Rule(match=Match(method="GET", key=dataset.key_pattern), fault=gate, times=500))
        result, events = run_in_process(tmp_path, dataset.name, proxy.url, settings=settings)
        in_flight = proxy.max_in_flight

    summary = result.summary
    assert summary is not None and summary.ok, summary
    assert summary.retries == 0
    assert len([e for e in events if isinstance(e, FileVerified)]) == len(files)
    dataset.check_complete(tmp_path)
    assert gate.opened, f"only {gate.held} GETs were ever in flight together"
    assert in_flight >= 500, in_flight
    pool_lines = [r.getMessage() for r in caplog.records if "pool" in r.getMessage().lower()]
    assert not [m for m in pool_lines if "full" in m or "exhaust" in m], pool_lines
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
    ]
