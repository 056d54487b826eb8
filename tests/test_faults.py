"""The fault matrix: each fault injected by ``FaultProxy`` between ego4d-dl and the real
sandbox, and what the tool must do about it (complete, verify, resume, or stop cleanly)."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ego4d_dl.engine import EngineSettings
from ego4d_dl.events import (
    ConcurrencyChanged,
    FileRestarted,
    FileVerified,
    IntegrityFailed,
    RangeRetried,
)
from ego4d_dl.retry import RetryPolicy
from ego4d_dl.sandbox import ACCESS_KEY_ID, Sandbox, SeededRelease, fake_bytes
from tests.support.cli import COMMAND, cli_process
from tests.support.faultproxy import (
    Corrupt,
    Delay,
    ErrorReply,
    FaultProxy,
    Match,
    RandomFaults,
    Reset,
    Rule,
    Stall,
    Throttle,
    Truncate,
)
from tests.support.scenario import (
    FinalPathWatcher,
    download_args,
    iter_dests,
    journal_state,
    run_in_process,
)
from tests.support.seed import (
    MIB,
    Dataset,
    SourceFile,
    md5_hex,
    seed_dataset,
    standard_files,
    unique_name,
)
from tests.support.smallfs import tmpfs_at

__all__: list[str] = []


@pytest.fixture
def proxy(sandbox: Sandbox) -> Iterator[FaultProxy]:
    with FaultProxy(sandbox.endpoint_url) as running:
        yield running


@pytest.fixture(scope="module")
def dataset(sandbox: Sandbox, release: SeededRelease) -> Dataset:
    """The standard small mix, seeded once for the tests that only read it."""
    name = unique_name("faults")
    return seed_dataset(sandbox, name, standard_files(name))


@pytest.fixture
def own_dataset(
    sandbox: Sandbox, release: SeededRelease, request: pytest.FixtureRequest
) -> Dataset:
    """The standard small mix, seeded for one test that changes it on the server."""
    name = unique_name(request.node.name)
    return seed_dataset(sandbox, name, standard_files(name))


def object_gets(dataset: Dataset, name: str = "*") -> Match:
    """GETs of the dataset's objects (``name``: one of them), not of its manifest."""
    return Match(method="GET", key=dataset.key(name) if name != "*" else dataset.key_pattern)


def verified_keys(events: list[object]) -> set[str]:
    return {e.key for e in events if isinstance(e, FileVerified)}


def test_the_proxy_is_transparent(
    proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """With no fault scripted, requests pass unchanged (SigV4 signs the Host header, which
    names the proxy: the server still accepts every signature) and the run is clean."""
    result, _ = run_in_process(tmp_path, dataset.name, proxy.url)
    summary = result.summary
    assert summary is not None and summary.ok and summary.retries == 0, summary
    dataset.check_complete(tmp_path)
    assert proxy.seen and all(s.status in (200, 206) for s in proxy.seen)
    assert {s.access_key for s in proxy.seen} == {ACCESS_KEY_ID}
    assert proxy.body_bytes(dataset.key_pattern) == dataset.size_bytes


# --- transient faults: the run completes, every byte verified, nothing fetched twice ---------


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Reset(after_bytes=MIB + 1234), id="reset"),
        pytest.param(Truncate(after_bytes=2 * MIB + 7), id="truncate"),
    ],
)
def test_broken_bodies_resume_within_the_range(
    fault: Reset | Truncate,
    proxy: FaultProxy,
    dataset: Dataset,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A connection reset or a body cut short mid-range: the GET is retried from the first
    missing byte, so the bytes already received are kept, not fetched again."""
    proxy.add(Rule(match=object_gets(dataset, "multi.bin"), fault=fault, times=2))
    proxy.add(Rule(match=object_gets(dataset, "single.bin"), fault=fault, times=1))
    result, events = run_in_process(tmp_path, dataset.name, proxy.url)

    summary = result.summary
    assert summary is not None and summary.ok, summary
    dataset.check_complete(tmp_path)
    assert sum(s.fault is not None for s in proxy.seen) == 3
    retried = [e for e in events if isinstance(e, RangeRetried)]
    assert len(retried) == 3
    assert summary.restarts == 0
    # Retries resume at the first missing byte: exactly the object bytes were written.
    assert summary.bytes_fetched == dataset.size_bytes
    # The retry starts past the bytes already written: at worst it repeats the chunk being
    # assembled (``chunk_bytes``) plus what the HTTP client had buffered but not handed out.
    gets = [s for s in proxy.seen if s.method == "GET" and s.key == dataset.key("single.bin")]
    assert len(gets) == 2 and gets[0].range is None and gets[1].range is not None
    resumed_at = int(gets[1].range.removeprefix("bytes=").split("-")[0])
    assert 0 < resumed_at <= fault.after_bytes < resumed_at + 2 * EngineSettings().chunk_bytes


def test_stalled_body_trips_the_watchdog(
    proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """A body that stops flowing: the per-read watchdog (``--stall-timeout``) abandons the
    request and retries it; the file still completes, nothing fetched twice.

    The stall lasts far longer than the watchdog, so only the watchdog can end it; on a busy
    machine another read may also pass a second without a byte, which is a stall too."""
    stall = proxy.add(
        Rule(
            match=object_gets(dataset, "multi.bin"),
            fault=Stall(after_bytes=512 * 1024, seconds=60),
            times=1,
        )
    )
    result, events = run_in_process(tmp_path, dataset.name, proxy.url, stall_timeout_s=1.0)

    summary = result.summary
    assert summary is not None and summary.ok, summary
    assert stall.fired == 1
    retried = [e for e in events if isinstance(e, RangeRetried)]
    assert all(e.stalled and "stalled" in e.reason for e in retried), retried
    assert dataset.key("multi.bin") in {e.key for e in retried}
    dataset.check_complete(tmp_path)
    assert summary.bytes_fetched == dataset.size_bytes


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(ErrorReply.internal_error(), id="500-InternalError"),
        pytest.param(ErrorReply.request_timeout(), id="400-RequestTimeout"),
        pytest.param(ErrorReply.slow_down(), id="503-SlowDown"),
    ],
)
def test_transient_error_replies_are_retried(
    reply: ErrorReply,
    proxy: FaultProxy,
    dataset: Dataset,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Transient S3 errors on HEADs (planning, layouts) and GETs are retried until they pass."""
    proxy.add(Rule(match=Match(method="HEAD", key=dataset.key_pattern), fault=reply, times=2))
    proxy.add(Rule(match=object_gets(dataset), fault=reply, times=3))
    result, events = run_in_process(tmp_path, dataset.name, proxy.url)

    summary = result.summary
    assert summary is not None and summary.ok, summary
    dataset.check_complete(tmp_path)
    retried = [e for e in events if isinstance(e, RangeRetried)]
    assert len(retried) == 3
    assert all(reply.code in e.reason for e in retried)
    assert all(e.throttled == (reply.code == "SlowDown") for e in retried)
    assert sum(s.status == reply.status for s in proxy.seen) == 5


def test_slowdown_storm_backs_off(
    proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """A storm of 503 SlowDown: the limiter halves the requests in flight, every retry waits a
    jittered delay, and the run completes without hammering (one retry per refusal)."""
    storm = 40
    proxy.add(Rule(match=object_gets(dataset), fault=ErrorReply.slow_down(), times=storm))
    # Small pieces, so that many requests are in flight when the storm hits.
    settings = EngineSettings(concurrency=16, max_piece_bytes=256 * 1024)
    result, events = run_in_process(tmp_path, dataset.name, proxy.url, settings=settings)

    summary = result.summary
    assert summary is not None and summary.ok, summary
    dataset.check_complete(tmp_path)
    cuts = [
        e.limit for e in events if isinstance(e, ConcurrencyChanged) and "throttled" in e.reason
    ]
    assert cuts, "the limiter never backed off"
    assert cuts[0] == 8 and all(b == max(1, a // 2) for a, b in itertools.pairwise(cuts))
    retried = [e for e in events if isinstance(e, RangeRetried)]
    assert len(retried) == storm and all(e.throttled for e in retried)
    # Full jitter: delays spread over [0, ceiling), never one fixed value.
    policy = settings.retry
    for e in retried:
        assert 0 <= e.delay_s <= min(policy.max_delay_s, policy.base_delay_s * 2 ** (e.attempt - 1))
    assert len({round(e.delay_s, 6) for e in retried}) > storm // 2
    gets = [s for s in proxy.seen if s.method == "GET" and s.key.startswith(dataset.key(""))]
    pieces = sum(-(-len(f.data) // (256 * 1024)) or 1 for f in dataset.files.values())
    assert len(gets) == pieces + storm


# --- verification: corrupted bytes never reach a final path ---------------------------------


@pytest.mark.parametrize(
    ("name", "max_piece_bytes"),
    [
        pytest.param("multi.bin", 16 * MIB, id="multipart-streamed-md5"),
        pytest.param("multi.bin", 3 * MIB, id="multipart-rehashed"),
        pytest.param("single.bin", 16 * MIB, id="single-part"),
    ],
)
def test_corrupted_bytes_are_refetched(
    name: str,
    max_piece_bytes: int,
    proxy: FaultProxy,
    dataset: Dataset,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Flipped bytes in a body are caught by the ETag check (plain MD5 or the multipart
    composite), the file is fetched again, and its final path only ever holds good bytes."""
    proxy.add(Rule(match=object_gets(dataset, name), fault=Corrupt(at_byte=777_777), times=1))
    expected = {dataset.dest(tmp_path, n): md5_hex(f.data) for n, f in dataset.files.items()}
    settings = EngineSettings(max_piece_bytes=max_piece_bytes)
    with FinalPathWatcher(expected) as watcher:
        result, events = run_in_process(tmp_path, dataset.name, proxy.url, settings=settings)

    summary = result.summary
    assert summary is not None and summary.ok, summary
    assert watcher.observed, "the watcher saw no final file at all"
    assert watcher.bad == []
    dataset.check_complete(tmp_path)
    failed = [e for e in events if isinstance(e, IntegrityFailed)]
    assert [e.key for e in failed] == [dataset.key(name)]
    assert summary.restarts == 1
    assert summary.bytes_fetched == dataset.size_bytes + len(dataset.files[name].data)


# --- the object changes on the server mid-download ------------------------------------------


def test_object_replaced_mid_download_restarts_against_the_new_version(
    sandbox: Sandbox,
    proxy: FaultProxy,
    own_dataset: Dataset,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The first part of a multipart object has arrived when the object is replaced (with
    another size and part layout): the next GET carries the old ETag in If-Match, the server
    answers 412, and the file starts over against the new version."""
    new = SourceFile(
        name="multi.bin",
        data=fake_bytes(f"{own_dataset.name}/multi-v2", 12 * MIB + 3),
        parts=(6 * MIB, 6 * MIB + 3),
    )
    old_etag = own_dataset.etags["multi.bin"]
    replaced = threading.Event()

    def replace() -> None:
        if not replaced.is_set():
            own_dataset.replace(sandbox, new)
            replaced.set()

    # One request at a time: the second GET of the object leaves after the first completed.
    proxy.add(
        Rule(
            match=object_gets(own_dataset, "multi.bin"),
            fault=Delay(seconds=0),
            after=1,
            times=1,
            on_fire=replace,
        )
    )
    settings = EngineSettings(concurrency=1)
    result, events = run_in_process(tmp_path, own_dataset.name, proxy.url, settings=settings)

    summary = result.summary
    assert replaced.is_set()
    assert summary is not None and summary.ok, summary
    own_dataset.check_complete(tmp_path)  # the final file is the NEW object
    restarted = [e for e in events if isinstance(e, FileRestarted)]
    assert len(restarted) == 1
    assert restarted[0].old_etag == old_etag
    assert restarted[0].new_etag == own_dataset.etags["multi.bin"] != old_etag
    assert restarted[0].discarded_bytes == 5 * MIB
    statuses = [s.status for s in proxy.seen if s.key == own_dataset.key("multi.bin")]
    assert 412 in statuses


def test_replaced_object_interrupted_after_its_restart_resumes_the_new_version(
    sandbox: Sandbox,
    release: SeededRelease,
    proxy: FaultProxy,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A range of the old version completed just before the object was replaced; the run is
    killed while fetching the new version. The journal must not credit the old version's
    range to the new one: the resumed file is the new object, even when only sizes are
    checked (``--verify size``), where nothing else would catch a stale range."""
    name = unique_name("replaced_interrupted")
    size = 20 * MIB  # two ranged GETs of at most 16 MiB
    dataset = seed_dataset(
        sandbox, name, [SourceFile(name="big.bin", data=fake_bytes(f"{name}/v1", size))]
    )
    new = SourceFile(name="big.bin", data=fake_bytes(f"{name}/v2", size))
    out = tmp_path / "out"

    def replace() -> None:
        if dataset.files["big.bin"] is not new:
            dataset.replace(sandbox, new)

    gets = object_gets(dataset, "big.bin")
    # The object is replaced while the first range streams (the server finishes sending the
    # old bytes); the second range then meets 412 at once.
    proxy.add(
        Rule(match=gets, fault=Stall(after_bytes=8 * MIB, seconds=2), times=1, on_fire=replace)
    )
    hang = Rule(match=gets, fault=Stall(after_bytes=0, seconds=60), after=2, times=None)
    proxy.add(hang)
    args = download_args(out, dataset.name, proxy.url, "--concurrency", "1", "--verify", "size")
    proc = subprocess.Popen(
        [*COMMAND, *args],
        env={"PATH": os.environ["PATH"], **aws_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proxy.wait_fired(hang, timeout_s=60)
        time.sleep(2 * EngineSettings().commit_interval_s + 0.5)  # let the journal commit
    finally:
        proc.kill()
        proc.wait()

    proxy.clear()
    second = cli_process(*args, env=aws_env, clean_env=True)
    assert second.code == 0, second.stderr
    dataset.check_complete(out)


# --- the server goes away --------------------------------------------------------------------


def test_server_away_and_back_is_ridden_out(
    proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """Mid-transfer the server vanishes (open connections reset, new ones refused) and comes
    back a few seconds later: requests are retried with backoff and the run completes."""
    proxy.add(Rule(match=object_gets(dataset), fault=Throttle(rate_bytes_s=4 * MIB), times=None))
    outage = threading.Event()

    def outage_in_background() -> None:
        deadline = time.monotonic() + 30
        while proxy.bytes_relayed < MIB and time.monotonic() < deadline:
            time.sleep(0.01)
        proxy.go_down()
        time.sleep(2.0)
        proxy.come_back()
        outage.set()

    thread = threading.Thread(target=outage_in_background, daemon=True)
    thread.start()
    result, events = run_in_process(tmp_path, dataset.name, proxy.url)
    thread.join()

    summary = result.summary
    assert outage.is_set()
    assert summary is not None and summary.ok, summary
    dataset.check_complete(tmp_path)
    assert any(isinstance(e, RangeRetried) for e in events)


def test_server_that_stays_down_stops_the_run_clearly(
    proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """The server vanishes for good mid-transfer: after its retries the run stops with a
    network stop and a message naming the endpoint; what arrived stays journaled."""
    proxy.add(Rule(match=object_gets(dataset), fault=Throttle(rate_bytes_s=4 * MIB), times=None))

    def outage_in_background() -> None:
        deadline = time.monotonic() + 30
        while proxy.bytes_relayed < MIB and time.monotonic() < deadline:
            time.sleep(0.01)
        proxy.go_down()

    thread = threading.Thread(target=outage_in_background, daemon=True)
    thread.start()
    settings = EngineSettings(retry=RetryPolicy(max_attempts=4, base_delay_s=0.05))
    result, _ = run_in_process(tmp_path, dataset.name, proxy.url, settings=settings)
    thread.join()

    summary = result.summary
    assert summary is not None
    assert summary.stop_kind == "network", summary
    assert summary.stopped_by is not None and proxy.url in summary.stopped_by
    journal_state(tmp_path, dict(iter_dests(tmp_path, dataset)))


def test_server_down_from_the_start_fails_with_one_line(
    proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    proxy.go_down()
    result = cli_process(
        *download_args(tmp_path / "out", dataset.name, proxy.url), env=aws_env, clean_env=True
    )
    assert result.code == 1
    line = result.error_line()
    assert "cannot reach" in line and proxy.url in line


# --- credentials expire mid-run ---------------------------------------------------------------


def test_credentials_expiring_mid_run_stop_cleanly_and_resume(
    proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """The keys expire after a few transfers (403 ExpiredToken on everything they sign): the
    run stops at once with exit 3 and a renewal hint, the journal is consistent with the
    disk, and once the keys work again a rerun fetches only what was not journaled."""
    out = tmp_path / "out"
    # Planning HEADs 4 objects, the engine HEADs the multipart one for its layout; the keys
    # then expire a few GETs into the transfer.
    expiry = Rule(
        match=Match(access_key=ACCESS_KEY_ID, key=dataset.key_pattern),
        fault=ErrorReply.expired_token(),
        after=7,
        times=None,
    )
    proxy.add(expiry)
    proxy.add(Rule(match=object_gets(dataset), fault=Throttle(rate_bytes_s=8 * MIB), times=None))
    first = cli_process(
        *download_args(out, dataset.name, proxy.url, "--json"), env=aws_env, clean_env=True
    )

    assert first.code == 3, first.stderr
    line = first.error_line()
    assert "ExpiredToken" in line and "renew" in line
    assert expiry.fired >= 1
    assert first.summary["stop_kind"] == "credentials"
    state = journal_state(out, dict(iter_dests(out, dataset)))
    assert state.journaled_bytes < dataset.size_bytes

    proxy.clear()  # renewed keys: the server accepts them again
    proxy.reset_observations()
    second = cli_process(
        *download_args(out, dataset.name, proxy.url, "--json"), env=aws_env, clean_env=True
    )

    assert second.code == 0, second.stderr
    dataset.check_complete(out)
    assert second.summary["bytes_fetched"] == dataset.size_bytes - state.journaled_bytes
    assert proxy.body_bytes(dataset.key_pattern) == dataset.size_bytes - state.journaled_bytes


# --- disk full -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs: really runs out of space (we run as root in CI)."""
    with tmpfs_at(tmp_path / "disk", "size=6m") as mount:
        yield mount


def test_disk_full_stops_cleanly_and_resumes_once_space_is_freed(
    small_disk: Path, proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str]
) -> None:
    """The output filesystem fills up mid-run: the run stops with one clear "no space left on
    device" line and exit 1, nothing on disk is corrupt, and after the filesystem grows the
    same command finishes the job without refetching what was journaled."""
    out = small_disk / "out"
    args = download_args(out, dataset.name, proxy.url, "--json", "--no-space-check")
    first = cli_process(*args, env=aws_env, clean_env=True)

    assert first.code == 1, first.stderr
    line = first.error_line()
    assert "no space left on device" in line and line.count("resume") == 1
    assert first.summary["stop_kind"] == "disk"
    state = journal_state(out, dict(iter_dests(out, dataset)))

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    proxy.reset_observations()
    second = cli_process(*args, env=aws_env, clean_env=True)

    assert second.code == 0, second.stderr
    dataset.check_complete(out)
    assert second.summary["bytes_fetched"] == dataset.size_bytes - state.journaled_bytes


def test_not_enough_space_is_refused_before_any_transfer(
    small_disk: Path, proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str]
) -> None:
    out = small_disk / "out"
    result = cli_process(*download_args(out, dataset.name, proxy.url), env=aws_env, clean_env=True)
    assert result.code == 1
    assert "not enough free space" in result.error_line()
    assert proxy.body_bytes(dataset.key_pattern) == 0


# --- kill -9 at random moments ---------------------------------------------------------------


def _hold_tiny(proxy: FaultProxy, dataset: Dataset) -> None:
    """Hold the tiny file's answer after 5 of its 10 bytes: the run cannot end before a kill."""
    proxy.add(
        Rule(
            match=object_gets(dataset, "tiny.txt"),
            fault=Stall(after_bytes=5, seconds=120),
            times=None,
        )
    )


def _start(args: list[str], aws_env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*COMMAND, *args],
        env={"PATH": os.environ["PATH"], **aws_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_until(done: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 5, 6])
def test_kill_9_at_a_random_moment_then_resume(
    seed: int, proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL at a random moment of a transfer (after a random number of bytes has gone
    out, whatever the time that took), then the same command: the journal claims nothing
    the disk does not hold, and the rerun completes, every file verified, fetching exactly
    what the journal did not hold."""
    rng = random.Random(seed)
    out = tmp_path / "out"
    # About 2.5 s of transfer (the 5 MiB parts at 2 MiB/s each); the tiny file is held, so
    # the kill always comes before the end, however slow or fast the machine.
    proxy.add(Rule(match=object_gets(dataset), fault=Throttle(rate_bytes_s=2 * MIB), times=None))
    _hold_tiny(proxy, dataset)
    kill_at = rng.randint(200_000, dataset.size_bytes - 100)
    args = download_args(out, dataset.name, proxy.url, "--json")
    proc = _start(args, aws_env)
    try:
        _wait_until(lambda: proxy.bytes_relayed >= kill_at, f"{kill_at} bytes relayed")
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -9
    assert proxy.wait_idle(), "the proxy still serves a killed client"
    state = journal_state(out, dict(iter_dests(out, dataset)))
    assert state.journaled_bytes <= proxy.body_bytes(dataset.key_pattern)

    proxy.clear()
    proxy.reset_observations()
    second = cli_process(*args, env=aws_env, clean_env=True)
    assert second.code == 0, second.stderr
    dataset.check_complete(out)
    assert second.summary["bytes_fetched"] == dataset.size_bytes - state.journaled_bytes
    assert proxy.body_bytes(dataset.key_pattern) == dataset.size_bytes - state.journaled_bytes


@pytest.mark.parametrize("seed", [3, 4])
def test_kill_9_loses_exactly_the_requests_in_flight(
    seed: int, proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """Three requests hang mid-body (the multipart object's last part, the single-part object
    and the tiny file) while everything else completes; once the journal has recorded all
    that completed, SIGKILL. The bytes lost are exactly those of the three hung requests:
    every completed range, of finished and unfinished files alike, survives the kill, and
    the rerun fetches exactly the rest."""
    rng = random.Random(seed)
    out = tmp_path / "out"
    multi, single = dataset.files["multi.bin"], dataset.files["single.bin"]
    last_part = (10 * MIB, len(multi.data) - 1)
    cut_multi, cut_single = rng.randint(1000, MIB), rng.randint(1000, len(single.data) - 1)
    proxy.add(
        Rule(
            match=Match(method="GET", key=dataset.key("multi.bin"), range=last_part),
            fault=Stall(after_bytes=cut_multi, seconds=120),
        )
    )
    proxy.add(
        Rule(
            match=object_gets(dataset, "single.bin"),
            fault=Stall(after_bytes=cut_single, seconds=120),
        )
    )
    _hold_tiny(proxy, dataset)
    # What completes: the multipart object's first two parts and the small file.
    kept = 10 * MIB + len(dataset.files["small.json"].data)
    in_flight = cut_multi + cut_single + 5
    sources = dict(iter_dests(out, dataset))
    args = download_args(out, dataset.name, proxy.url, "--json")
    proc = _start(args, aws_env)
    try:
        _wait_until(
            lambda: proxy.body_bytes(dataset.key_pattern, in_progress=True) == kept + in_flight,
            "the hung requests",
        )
        _wait_until(
            lambda: (
                (out / ".ego4d-dl" / "journal.sqlite").exists()
                and journal_state(out, sources).journaled_bytes == kept
            ),
            "the journal records what completed",
        )
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -9
    assert proxy.wait_idle(), "the proxy still serves a killed client"
    state = journal_state(out, sources)
    assert proxy.body_bytes(dataset.key_pattern) - state.journaled_bytes == in_flight
    multi_dest = str(dataset.dest(out, "multi.bin").relative_to(out))
    assert state.partial[multi_dest] == [(0, 5 * MIB), (5 * MIB, 10 * MIB)]

    proxy.clear()
    proxy.reset_observations()
    second = cli_process(*args, env=aws_env, clean_env=True)
    assert second.code == 0, second.stderr
    dataset.check_complete(out)
    assert second.summary["bytes_fetched"] == dataset.size_bytes - kept


# --- a random mix of everything --------------------------------------------------------------


@pytest.mark.parametrize("seed", [11, 12])
def test_random_fault_mix_still_yields_verified_files(
    seed: int, proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """A seeded random mix of resets, truncations, stalls, flipped bytes and 5xx answers on a
    third of the requests: the run completes and every file is byte-exact."""
    proxy.add(
        RandomFaults(
            match=Match(key=dataset.key_pattern),
            faults=[
                Reset(after_bytes=100_000),
                Truncate(after_bytes=200_000),
                Stall(after_bytes=1000, seconds=10),
                Corrupt(at_byte=5000),
                ErrorReply.slow_down(),
                ErrorReply.internal_error(),
            ],
            probability=0.35,
            seed=seed,
            limit=12,
        )
    )
    settings = EngineSettings(max_piece_bytes=MIB)
    result, _ = run_in_process(
        tmp_path, dataset.name, proxy.url, settings=settings, stall_timeout_s=0.5
    )
    summary = result.summary
    assert summary is not None and summary.ok, summary
    dataset.check_complete(tmp_path)


def test_disk_filling_up_mid_run_stops_cleanly(
    small_disk: Path, proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str]
) -> None:
    """Another process fills the disk while files download (their space was reserved, the
    journal's was not): the run stops with the disk message, and resumes once space is back."""
    subprocess.run(["mount", "-o", "remount,size=24m", str(small_disk)], check=True)
    out = small_disk / "out"
    filler = small_disk / "filler"
    proxy.add(Rule(match=object_gets(dataset), fault=Throttle(rate_bytes_s=2 * MIB), times=None))

    def fill_when_bytes_flow() -> None:
        deadline = time.monotonic() + 30
        while proxy.bytes_relayed < 2 * MIB and time.monotonic() < deadline:
            time.sleep(0.01)
        with filler.open("wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass

    thread = threading.Thread(target=fill_when_bytes_flow, daemon=True)
    thread.start()
    args = download_args(out, dataset.name, proxy.url, "--json")
    first = cli_process(*args, env=aws_env, clean_env=True)
    thread.join()
    assert first.code == 1, first.stderr
    line = first.error_line()
    assert "no space left on device" in line and "journal" in line
    assert line.count("resume") == 1
    assert first.summary["stop_kind"] == "disk"
    state = journal_state(out, dict(iter_dests(out, dataset)))

    filler.unlink()
    proxy.clear()
    second = cli_process(*args, env=aws_env, clean_env=True)
    assert second.code == 0, second.stderr
    dataset.check_complete(out)
    assert second.summary["bytes_fetched"] == dataset.size_bytes - state.journaled_bytes
