"""The rest of the fault matrix: faults whose answer is to give up on one file (and go on), a
server that misbehaves at the protocol level, faults while planning, a stall before any answer,
keys renewed mid-run and several faults in one run. Each through ``FaultProxy`` in front of the
real sandbox, asserting the bytes on disk, the exit code and what the journal holds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ego4d_dl import sandbox as seaweed
from ego4d_dl.cli.outcome import download_exit_code
from ego4d_dl.engine import EngineSettings
from ego4d_dl.events import (
    ConcurrencyChanged,
    FileFailed,
    FileRestarted,
    IntegrityFailed,
    ManifestLoaded,
    RangeRetried,
)
from ego4d_dl.retry import RetryPolicy
from ego4d_dl.sandbox import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    Sandbox,
    SeededRelease,
    fake_bytes,
)
from tests.support.cli import cli_process
from tests.support.faultproxy import (
    Corrupt,
    Delay,
    ErrorReply,
    FaultProxy,
    Match,
    Reply,
    Request,
    Reset,
    Respond,
    Rule,
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
    manifest_csv,
    md5_hex,
    seed_dataset,
    standard_files,
    unique_name,
)

__all__: list[str] = []

# Exit codes, as README.md documents them.
EXIT_OK, EXIT_FAILED = 0, 1

# Renewed keys: the sandbox's other identity, another key pair that its server accepts.
RENEWED_KEY_ID = seaweed._ADMIN_ACCESS_KEY_ID
RENEWED_SECRET = seaweed._ADMIN_SECRET_ACCESS_KEY

# Few, quick retries: the give-up paths are reached in a second, not in a minute of backoff.
QUICK_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.02, max_delay_s=0.1)


@pytest.fixture
def proxy(sandbox: Sandbox) -> Iterator[FaultProxy]:
    with FaultProxy(sandbox.endpoint_url) as running:
        yield running


@pytest.fixture(scope="module")
def dataset(sandbox: Sandbox, release: SeededRelease) -> Dataset:
    """The standard small mix (multipart, single-part, small, tiny), only read by the tests."""
    name = unique_name("matrix")
    return seed_dataset(sandbox, name, standard_files(name))


@pytest.fixture
def own_dataset(
    sandbox: Sandbox, release: SeededRelease, request: pytest.FixtureRequest
) -> Dataset:
    """The standard small mix, for one test that changes it on the server."""
    name = unique_name(request.node.name)
    return seed_dataset(sandbox, name, standard_files(name))


def object_gets(dataset: Dataset, name: str = "*") -> Match:
    """GETs of the dataset's objects (``name``: one of them), not of its manifest."""
    return Match(method="GET", key=dataset.key(name) if name != "*" else dataset.key_pattern)


def manifest_key(dataset: Dataset) -> str:
    return f"public/v2_1/{dataset.name}/manifest.csv"


def requested_span(request: Request, size: int) -> tuple[int, int]:
    """The ``[start, stop)`` a GET asked for (the whole object without a Range header)."""
    if request.range is None:
        return 0, size
    first, last = request.range.removeprefix("bytes=").split("-")
    return int(first), int(last) + 1


def others_complete(dataset: Dataset, out: Path, but: str) -> None:
    """Every file but ``but`` is at its final path with the source's bytes; ``but`` is not."""
    for name, source in dataset.files.items():
        dest = dataset.dest(out, name)
        if name == but:
            assert not dest.exists(), f"{dest} has a final path although it failed"
        else:
            assert dest.read_bytes() == source.data, f"{dest} differs"


# --- a stall before the answer's headers -----------------------------------------------------


def test_a_stall_before_the_response_headers_trips_the_watchdog(
    proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """The server takes a GET and sends nothing, not even a status line: the request is
    given up after ``--stall-timeout`` without a byte, as a stall mid-body is, and retried;
    not left to the HTTP client's backstop read timeout (twice that, plus 5 s)."""
    held = proxy.add(
        Rule(match=object_gets(dataset, "single.bin"), fault=Delay(seconds=120), times=1)
    )
    result, events = run_in_process(tmp_path, dataset.name, proxy.url, stall_timeout_s=1.0)

    summary = result.summary
    assert summary is not None and summary.ok, summary
    assert held.fired == 1
    # On a busy machine another request may also go a second without a byte: a stall too.
    retried = [e for e in events if isinstance(e, RangeRetried)]
    assert all(e.stalled and "stalled" in e.reason for e in retried), retried
    ours = [e for e in retried if e.key == dataset.key("single.bin")]
    assert ours and ours[0].start == 0, retried  # nothing had arrived
    dataset.check_complete(tmp_path)
    assert summary.bytes_fetched == dataset.size_bytes


# --- giving up on one file: it fails, the run goes on, exit 1 ----------------------------------


def test_corruption_on_every_attempt_fails_that_file_only(
    proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """Every body of one object arrives with a flipped byte: each attempt fails its ETag check
    and the file starts over, until its restarts are spent; then that file is reported failed,
    the others complete, the run exits 1, and nothing claims the bad bytes: no final file,
    no journaled range that does not hold the object's bytes. Once the server is sound
    again, the same command completes it."""
    name = "single.bin"
    proxy.add(Rule(match=object_gets(dataset, name), fault=Corrupt(at_byte=123_456), times=None))
    settings = EngineSettings(retry=QUICK_RETRY)
    result, events = run_in_process(tmp_path, dataset.name, proxy.url, settings=settings)

    summary = result.summary
    assert summary is not None
    assert download_exit_code(result) == EXIT_FAILED
    assert [(p.key, p.status) for p in summary.problems] == [(dataset.key(name), "failed")]
    assert "gave up" in summary.problems[0].reason
    assert summary.verified == len(dataset.files) - 1
    failed = [e for e in events if isinstance(e, IntegrityFailed)]
    restarts = settings.max_restarts
    assert len(failed) == restarts + 1 and {e.key for e in failed} == {dataset.key(name)}
    others_complete(dataset, tmp_path, but=name)
    journal_state(tmp_path, dict(iter_dests(tmp_path, dataset)))

    proxy.clear()
    again, _ = run_in_process(tmp_path, dataset.name, proxy.url)
    assert again.summary is not None and again.summary.ok, again.summary
    dataset.check_complete(tmp_path)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(ErrorReply.internal_error(), id="500-InternalError"),
        pytest.param(ErrorReply.slow_down(), id="503-SlowDown"),
    ],
)
def test_repeated_5xx_on_one_object_gives_up_on_it_and_goes_on(
    reply: ErrorReply,
    proxy: FaultProxy,
    dataset: Dataset,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """One object answers 5xx to every GET: its retries run out, it is reported failed with
    the server's answer, the other files complete and the run exits 1; the journal holds
    nothing of it that is not on disk."""
    name = "multi.bin"
    proxy.add(Rule(match=object_gets(dataset, name), fault=reply, times=None))
    settings = EngineSettings(retry=QUICK_RETRY)
    result, events = run_in_process(tmp_path, dataset.name, proxy.url, settings=settings)

    summary = result.summary
    assert summary is not None
    assert download_exit_code(result) == EXIT_FAILED
    assert [(p.key, p.status) for p in summary.problems] == [(dataset.key(name), "failed")]
    reason = summary.problems[0].reason
    assert reply.code in reason and f"gave up after {QUICK_RETRY.max_attempts} attempts" in reason
    assert [e.key for e in events if isinstance(e, FileFailed)] == [dataset.key(name)]
    assert summary.verified == len(dataset.files) - 1
    others_complete(dataset, tmp_path, but=name)
    state = journal_state(tmp_path, dict(iter_dests(tmp_path, dataset)))
    assert all(not ranges for dest, ranges in state.partial.items() if dest.endswith(name))


# --- the object goes away mid-run --------------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted-404", "revoked-403"])
def test_an_object_gone_mid_run_is_reported_and_the_rest_completes(
    how: str,
    sandbox: Sandbox,
    proxy: FaultProxy,
    own_dataset: Dataset,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The first part of a multipart object has arrived when the object is deleted (a real
    404 from the server) or access to it is revoked (403 AccessDenied): the file is reported
    missing or denied, not retried for ever, the other files complete, the run exits 1, and
    the part already received stays journaled, exactly as it is on disk."""
    name = "multi.bin"
    key = own_dataset.key(name)
    gone = threading.Event()

    def delete() -> None:
        if not gone.is_set():
            sandbox.admin_client().delete_object(Bucket=own_dataset.bucket, Key=key)
            gone.set()

    gets = object_gets(own_dataset, name)
    if how == "deleted-404":
        proxy.add(Rule(match=gets, fault=Delay(seconds=0), after=1, times=1, on_fire=delete))
    else:
        denied = ErrorReply(
            status=403, reason="Forbidden", code="AccessDenied", message="Access Denied"
        )
        proxy.add(Rule(match=gets, fault=denied, after=1, times=None))
    # One request at a time: the second GET of the object leaves after the first completed.
    settings = EngineSettings(concurrency=1, retry=QUICK_RETRY)
    result, _ = run_in_process(tmp_path, own_dataset.name, proxy.url, settings=settings)

    summary = result.summary
    assert summary is not None
    assert download_exit_code(result) == EXIT_FAILED
    status = "missing" if how == "deleted-404" else "denied"
    assert [(p.key, p.status) for p in summary.problems] == [(key, status)]
    assert ("404" if how == "deleted-404" else "403") in summary.problems[0].reason
    assert summary.verified == len(own_dataset.files) - 1
    others_complete(own_dataset, tmp_path, but=name)
    statuses = [s.status for s in proxy.seen if s.key == key and s.method == "GET"]
    assert statuses[0] == 206 and set(statuses[1:]) == {404 if how == "deleted-404" else 403}
    # Not retried as if it were transient: a signed GET and botocore's own ask of it again.
    assert len(statuses) <= 3, statuses
    state = journal_state(tmp_path, dict(iter_dests(tmp_path, own_dataset)))
    dest = str(own_dataset.dest(tmp_path, name).relative_to(tmp_path))
    assert state.partial[dest] == [(0, 5 * MIB)]


# --- a server that does not keep to the protocol ---------------------------------------------


def whole_object(data: bytes, etag: str) -> Respond:
    """A server that ignores Range: 200 and the whole object, whatever was asked."""
    return Respond(
        answer=lambda _: Reply(status=200, headers={"ETag": f'"{etag}"'}, body=data),
    )


def partial(
    data: bytes,
    etag: str,
    *,
    shift: int = 0,
    total: int | None = None,
    extra: bytes = b"",
) -> Respond:
    """206 for the range asked, from ``data`` with ``etag``; ``shift`` moves the bytes sent
    and the Content-Range that says so, ``total`` lies about the object's size, ``extra``
    is sent (and counted in Content-Length) after the range."""

    def answer(request: Request) -> Reply:
        start, stop = requested_span(request, len(data))
        start, stop = start + shift, stop + shift
        size = len(data) if total is None else total
        return Reply(
            status=206,
            reason="Partial Content",
            headers={"ETag": f'"{etag}"', "Content-Range": f"bytes {start}-{stop - 1}/{size}"},
            body=data[start:stop] + extra,
        )

    return Respond(answer=answer)


@pytest.mark.parametrize("times", [1, None], ids=["once", "always"])
def test_a_server_ignoring_range_is_never_read_as_the_range(
    times: int | None,
    proxy: FaultProxy,
    dataset: Dataset,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A ranged GET answered 200 with the whole object: the answer is refused before a byte of
    it is written (the bytes at the range's offsets would be the object's first bytes) and the
    range asked again; a server that always does so fails that file, and only that file."""
    name = "multi.bin"
    source = dataset.files[name]
    rule = proxy.add(
        Rule(
            match=Match(method="GET", key=dataset.key(name), ranged=True),
            fault=whole_object(source.data, dataset.etags[name]),
            times=times,
        )
    )
    settings = EngineSettings(retry=QUICK_RETRY)
    result, events = run_in_process(tmp_path, dataset.name, proxy.url, settings=settings)

    summary = result.summary
    assert summary is not None and rule.fired >= 1
    retried = [e for e in events if isinstance(e, RangeRetried)]
    assert retried and all("got HTTP 200" in e.reason for e in retried), retried
    if times == 1:
        assert summary.ok, summary
        dataset.check_complete(tmp_path)
        assert summary.bytes_fetched == dataset.size_bytes
        assert summary.restarts == 0
    else:
        assert download_exit_code(result) == EXIT_FAILED
        assert [(p.key, p.status) for p in summary.problems] == [(dataset.key(name), "failed")]
        others_complete(dataset, tmp_path, but=name)
        # Not one byte of the refused answers was taken.
        assert summary.bytes_fetched == dataset.size_bytes - len(source.data)
    journal_state(tmp_path, dict(iter_dests(tmp_path, dataset)))


@pytest.mark.parametrize(
    ("shift", "total"),
    [
        pytest.param(1, None, id="shifted-by-one"),
        pytest.param(-1, None, id="shifted-back"),
        pytest.param(0, 11 * MIB + 6, id="other-object-size"),
    ],
)
def test_a_wrong_content_range_is_refused(
    shift: int,
    total: int | None,
    proxy: FaultProxy,
    dataset: Dataset,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A 206 whose Content-Range is not the range asked (bytes off by one either way, or
    another object size): refused before any byte is written, asked again, the file is
    exact and nothing was fetched twice."""
    name = "multi.bin"
    source = dataset.files[name]
    rule = proxy.add(
        Rule(
            match=Match(method="GET", key=dataset.key(name), ranged=True),
            fault=partial(source.data, dataset.etags[name], shift=shift, total=total),
            after=1,  # not the first part: a range that starts past the object's first byte
            times=2,
        )
    )
    result, events = run_in_process(tmp_path, dataset.name, proxy.url)

    summary = result.summary
    assert summary is not None and summary.ok, summary
    assert rule.fired == 2
    retried = [e for e in events if isinstance(e, RangeRetried)]
    assert len(retried) == 2 and all("asked for bytes" in e.reason for e in retried), retried
    dataset.check_complete(tmp_path)
    assert summary.bytes_fetched == dataset.size_bytes
    assert summary.restarts == 0


@pytest.mark.parametrize("ranged", [True, False], ids=["ranged", "whole-object"])
def test_an_oversized_body_never_lands_beyond_its_range(
    ranged: bool,
    proxy: FaultProxy,
    dataset: Dataset,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """An answer with more bytes than were asked (its Content-Length counting them): for a
    range (here the object's last part) the bytes past it are never written, which would
    grow the file past its size; for a whole-object GET, a length that is not the object's
    size is the sign of another version. Either way the file ends exact, and only the
    bytes asked for were ever taken."""
    name = "multi.bin" if ranged else "single.bin"
    source = dataset.files[name]
    extra = b"\xee" * 100_000
    if ranged:
        fault = partial(source.data, dataset.etags[name], extra=extra)
        match = Match(method="GET", key=dataset.key(name), ranged=True)
        # One request at a time: the last part's GET is the third.
        settings, after = EngineSettings(concurrency=1), 2
    else:
        data = source.data + extra
        fault = Respond(
            answer=lambda _: Reply(
                status=200, headers={"ETag": f'"{dataset.etags[name]}"'}, body=data
            )
        )
        match = object_gets(dataset, name)
        settings, after = EngineSettings(), 0
    rule = proxy.add(Rule(match=match, fault=fault, after=after, times=1))
    result, events = run_in_process(tmp_path, dataset.name, proxy.url, settings=settings)

    summary = result.summary
    assert summary is not None and summary.ok, summary
    assert rule.fired == 1
    dataset.check_complete(tmp_path)
    assert not [e for e in events if isinstance(e, IntegrityFailed)]
    if ranged:
        # Seen whole (usually: one socket read) the answer is refused and asked again; read
        # in pieces, the reads stop at the range's end. Never a byte past it either way.
        retried = [e for e in events if isinstance(e, RangeRetried)]
        assert all("body is longer" in e.reason for e in retried) and len(retried) <= 1
        assert summary.restarts == 0
        assert summary.bytes_fetched == dataset.size_bytes
    else:
        restarted = [e for e in events if isinstance(e, FileRestarted)]
        assert [e.key for e in restarted] == [dataset.key(name)]
        assert restarted[0].new_etag == restarted[0].old_etag == dataset.etags[name]


@pytest.mark.parametrize("etag_sent", ["new", "old"])
def test_a_server_ignoring_if_match_never_splices_two_versions(
    etag_sent: str,
    sandbox: Sandbox,
    proxy: FaultProxy,
    own_dataset: Dataset,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The object is replaced (same size and parts, other bytes) after two of its three parts
    have arrived, and the server ignores If-Match: it answers the last one from the new version.
    With the new ETag in the answer, the change is seen at once and the file restarts against
    the new version; with a stale ETag, the spliced file fails its composite ETag check (and
    the HEADs that then learn its exact part layout meet the new ETag). Either way the final
    path only ever holds the new version, whole."""
    name = "multi.bin"
    old = own_dataset.files[name]
    old_etag = own_dataset.etags[name]
    new = SourceFile(
        name=name, data=fake_bytes(f"{own_dataset.name}/multi-v2", len(old.data)), parts=old.parts
    )
    replaced = threading.Event()

    def replace() -> None:
        if not replaced.is_set():
            own_dataset.replace(sandbox, new)
            replaced.set()

    def answer(request: Request) -> Reply:
        assert request.if_match == f'"{old_etag}"'  # asked for the old version, got the new
        etag = own_dataset.etags[name] if etag_sent == "new" else old_etag
        return partial(new.data, etag).answer(request)

    rule = proxy.add(
        Rule(
            match=Match(method="GET", key=own_dataset.key(name), ranged=True),
            fault=Respond(answer=answer),
            after=2,  # the last part, one request at a time: nothing after it would see a 412
            times=1,
            on_fire=replace,
        )
    )
    settings = EngineSettings(concurrency=1)
    dest = own_dataset.dest(tmp_path, name)
    with FinalPathWatcher({dest: md5_hex(new.data)}) as watcher:
        result, events = run_in_process(tmp_path, own_dataset.name, proxy.url, settings=settings)

    summary = result.summary
    assert summary is not None and summary.ok, summary
    assert rule.fired == 1 and replaced.is_set()
    assert watcher.bad == []
    own_dataset.check_complete(tmp_path)  # the new version
    restarted = [e for e in events if isinstance(e, FileRestarted)]
    assert [(e.old_etag, e.new_etag) for e in restarted] == [(old_etag, own_dataset.etags[name])]
    if etag_sent == "new":
        assert not [e for e in events if isinstance(e, IntegrityFailed)]
    journal_state(tmp_path, dict(iter_dests(tmp_path, own_dataset)))


# --- faults while planning: the manifest GET and the listings -----------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(ErrorReply.slow_down(), id="503-SlowDown"),
        pytest.param(ErrorReply.internal_error(), id="500-InternalError"),
        pytest.param(Reset(after_bytes=40, pause_s=0.05), id="reset"),
        pytest.param(Truncate(after_bytes=40), id="truncate"),
    ],
)
def test_a_manifest_get_that_fails_is_retried(
    fault: ErrorReply | Reset | Truncate,
    proxy: FaultProxy,
    dataset: Dataset,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The manifest's GET fails twice (an error answer, or its body cut short): it is asked
    again, every row is read from a whole manifest, and the run completes."""
    rule = proxy.add(
        Rule(match=Match(method="GET", key=manifest_key(dataset)), fault=fault, times=2)
    )
    result, events = run_in_process(tmp_path, dataset.name, proxy.url)

    summary = result.summary
    assert summary is not None and summary.ok, summary
    assert rule.fired == 2
    loaded = [e for e in events if isinstance(e, ManifestLoaded)]
    assert [(e.rows, e.malformed) for e in loaded] == [(len(dataset.files), 0)]
    dataset.check_complete(tmp_path)
    saved = dataset.folder(tmp_path) / "manifest.csv"
    assert saved.read_bytes() == manifest_csv(
        [(f"uid-{n}", f"s3://{dataset.bucket}/{dataset.key(n)}") for n in dataset.files]
    )


def test_a_manifest_that_cannot_be_fetched_stops_before_any_transfer(
    proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """The manifest's GET fails on every attempt: one error line naming it and the server's
    answer, exit 1, not one object requested, nothing written but the (empty) journal."""
    proxy.add(
        Rule(
            match=Match(method="GET", key=manifest_key(dataset)),
            fault=ErrorReply.internal_error(),
            times=None,
        )
    )
    out = tmp_path / "out"
    result = cli_process(*download_args(out, dataset.name, proxy.url), env=aws_env, clean_env=True)

    assert result.code == EXIT_FAILED, result.stderr
    line = result.error_line()
    assert manifest_key(dataset) in line and "InternalError" in line, line
    assert not [s for s in proxy.seen if s.key.startswith(dataset.key(""))]
    assert not dataset.folder(out).exists()


@pytest.fixture(scope="module")
def listed(sandbox: Sandbox, release: SeededRelease) -> Dataset:
    """Twenty small files in one folder: enough for the planner to list the folder rather
    than HEAD each object (one page of ListObjectsV2)."""
    name = unique_name("listed")
    files = [
        SourceFile(name=f"f{i:02d}.bin", data=fake_bytes(f"{name}/{i}", 3000 + i))
        for i in range(20)
    ]
    return seed_dataset(sandbox, name, files)


def listings(dataset: Dataset) -> Match:
    """ListObjectsV2 requests in the dataset's bucket (GETs of the bucket, not of a key)."""
    return Match(method="GET", bucket=dataset.bucket, key="")


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(ErrorReply.slow_down(), id="503-SlowDown"),
        pytest.param(Reset(after_bytes=300, pause_s=0.05), id="reset"),
        pytest.param(Truncate(after_bytes=300), id="truncate"),
        pytest.param(Corrupt(at_byte=0), id="not-xml"),
    ],
)
def test_a_listing_that_fails_is_retried(
    fault: ErrorReply | Reset | Truncate | Corrupt,
    proxy: FaultProxy,
    listed: Dataset,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A listing page fails twice (an error, its body cut short, or not XML at all): it is
    asked again, the folder is planned from the listing (no HEAD per object), and every file
    lands exact."""
    rule = proxy.add(Rule(match=listings(listed), fault=fault, times=2))
    result, _ = run_in_process(tmp_path, listed.name, proxy.url)

    summary = result.summary
    assert summary is not None and summary.ok, summary
    assert rule.fired == 2
    listed.check_complete(tmp_path)
    # Planning only: after the run, manifest.ver asks one object of the bucket for its version.
    first_get = min(
        s.started for s in proxy.seen if s.method == "GET" and s.key.startswith(listed.key(""))
    )
    heads = [
        s
        for s in proxy.seen
        if s.method == "HEAD" and s.key.startswith(listed.key("")) and s.started < first_get
    ]
    assert heads == []


def test_a_listing_denied_falls_back_to_heads(
    proxy: FaultProxy, listed: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """Keys without ListBucket permission (403 AccessDenied on the listing): each object is
    HEADed instead, and the run completes."""
    denied = ErrorReply(
        status=403, reason="Forbidden", code="AccessDenied", message="Access Denied"
    )
    proxy.add(Rule(match=listings(listed), fault=denied, times=None))
    result, _ = run_in_process(tmp_path, listed.name, proxy.url)

    summary = result.summary
    assert summary is not None and summary.ok, summary
    listed.check_complete(tmp_path)
    heads = {s.key for s in proxy.seen if s.method == "HEAD" and s.key.startswith(listed.key(""))}
    assert heads == {listed.key(n) for n in listed.files}


def test_listings_that_keep_failing_stop_the_plan_with_one_line(
    proxy: FaultProxy, listed: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """Every listing answers 500: after its retries the plan stops with one error line naming
    the bucket and the server's answer, exit 1, and no object is requested."""
    proxy.add(Rule(match=listings(listed), fault=ErrorReply.internal_error(), times=None))
    out = tmp_path / "out"
    result = cli_process(*download_args(out, listed.name, proxy.url), env=aws_env, clean_env=True)

    assert result.code == EXIT_FAILED, result.stderr
    line = result.error_line()
    assert listed.bucket in line and "InternalError" in line, line
    assert not [s for s in proxy.seen if s.key.startswith(listed.key(""))]


# --- keys renewed mid-run -------------------------------------------------------------------------


def test_keys_renewed_mid_run_are_picked_up_and_the_run_completes(
    proxy: FaultProxy, dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    """The keys come from the AWS credentials file. Mid-transfer the server starts rejecting
    them (403 ExpiredToken) just as the user writes renewed keys into the file: the engine
    reads the credentials again on the first rejection, carries on with the new keys, and the
    run completes (exit 0) without fetching a byte twice."""
    credentials = Path(aws_env["AWS_SHARED_CREDENTIALS_FILE"])

    def write_keys(key_id: str, secret: str) -> None:
        credentials.write_text(
            f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n",
            encoding="utf-8",
        )

    write_keys(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    renewed = threading.Event()

    def renew() -> None:
        if not renewed.is_set():
            write_keys(RENEWED_KEY_ID, RENEWED_SECRET)
            renewed.set()

    expiry = proxy.add(
        Rule(
            match=Match(access_key=ACCESS_KEY_ID, method="GET", key=dataset.key_pattern),
            fault=ErrorReply.expired_token(),
            after=2,
            times=None,
            on_fire=renew,
        )
    )
    proxy.add(Rule(match=object_gets(dataset), fault=Throttle(rate_bytes_s=8 * MIB), times=None))
    env = {
        k: v for k, v in aws_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    out = tmp_path / "out"
    result = cli_process(
        *download_args(out, dataset.name, proxy.url, "--json"), env=env, clean_env=True
    )

    assert result.code == EXIT_OK, result.stderr
    assert "Traceback" not in result.stderr
    assert renewed.is_set() and expiry.fired >= 1
    dataset.check_complete(out)
    assert result.summary["bytes_fetched"] == dataset.size_bytes
    assert result.summary["stop_kind"] is None
    keys = {s.access_key for s in proxy.seen if s.key.startswith(dataset.key(""))}
    assert keys == {ACCESS_KEY_ID, RENEWED_KEY_ID}
    # Requests already on their way with the old keys when the first was refused are refused
    # too; each is asked again with the renewed keys, not taken as a sign that those fail as
    # well (which stopped the run with exit 3).
    refused = [s for s in proxy.seen if s.status == 403]
    assert refused and all(s.access_key == ACCESS_KEY_ID for s in refused)
    journal_state(out, dict(iter_dests(out, dataset)))


# --- several faults in one run -----------------------------------------------------------------


def test_a_reset_a_slowdown_storm_and_a_replaced_object_in_one_run(
    sandbox: Sandbox,
    proxy: FaultProxy,
    own_dataset: Dataset,
    aws_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Three kinds of trouble at once: a storm of 503 SlowDown on the first GETs, a connection
    reset mid-body, and an object replaced mid-download (412 on its next GET). The requests
    in flight back off, the reset range resumes where it broke, the replaced file starts over
    against its new version; every file ends exact, and the only bytes fetched twice are the
    replaced object's discarded ones."""
    storm = proxy.add(Rule(match=object_gets(own_dataset), fault=ErrorReply.slow_down(), times=20))
    reset = proxy.add(
        Rule(
            match=object_gets(own_dataset, "single.bin"),
            fault=Reset(after_bytes=500_000),  # inside either of its two pieces
            times=1,
        )
    )
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

    proxy.add(
        Rule(
            match=object_gets(own_dataset, "multi.bin"),
            fault=Delay(seconds=0),
            after=1,
            times=1,
            on_fire=replace,
        )
    )
    settings = EngineSettings(max_piece_bytes=2 * MIB)  # many requests to share the storm
    result, events = run_in_process(tmp_path, own_dataset.name, proxy.url, settings=settings)

    summary = result.summary
    assert summary is not None and summary.ok, summary
    assert storm.fired == 20 and reset.fired == 1 and replaced.is_set()
    own_dataset.check_complete(tmp_path)  # multi.bin is the new version
    statuses = [s.status for s in proxy.seen if s.key == own_dataset.key("multi.bin")]
    assert 412 in statuses
    restarted = [e for e in events if isinstance(e, FileRestarted)]
    assert [(e.old_etag, e.new_etag) for e in restarted] == [
        (old_etag, own_dataset.etags["multi.bin"])
    ]
    retried = [e for e in events if isinstance(e, RangeRetried)]
    assert sum(e.throttled for e in retried) == 20
    resumed = [e for e in retried if not e.throttled]
    assert [e.key for e in resumed] == [own_dataset.key("single.bin")]
    assert any(isinstance(e, ConcurrencyChanged) and "throttled" in e.reason for e in events)
    assert summary.bytes_fetched == own_dataset.size_bytes + restarted[0].discarded_bytes
    journal_state(tmp_path, dict(iter_dests(tmp_path, own_dataset)))
