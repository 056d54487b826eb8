"""The live dashboard, rendered into a recording Rich console with an injected clock: what it
shows for a scripted run (bars, rates, ETA, counters, warnings) and for a real recorded one."""

from __future__ import annotations

import asyncio
import io
import math
import threading
import time
from collections.abc import Iterator

import pytest
from rich.console import Console

from ego4d_dl.config import Credentials, Options, parse_endpoint
from ego4d_dl.dashboard import Dashboard
from ego4d_dl.downloading import run_download
from ego4d_dl.events import (
    Event,
    FileRestarted,
    IntegrityFailed,
    ManifestLoaded,
    ObjectsLookedUp,
    PlanBuilt,
    RangeRetried,
    RunFinished,
    RunStarted,
    RunSummary,
)
from ego4d_dl.formatting import human_bytes
from ego4d_dl.planned import Plan
from ego4d_dl.sandbox import ACCESS_KEY_ID, SECRET_ACCESS_KEY, Sandbox, SeededRelease
from ego4d_dl.sinks import Rate
from tests.support.dashboard import (
    PLAN,
    V1,
    V2,
    Harness,
    line_with,
    steady_run,
)
from tests.support.events import planned_file, received, started, summary
from tests.support.seed import MIB


@pytest.fixture
def run() -> Harness:
    return steady_run()


def test_overall_bar_rate_and_eta(run: Harness) -> None:
    frame = run.render()
    header = line_with(frame, "ego4d-dl")
    assert "Ego4D v2_1 -> /data/ego4d" in header
    assert "downloading" in header
    assert "0:00:05" in header
    assert "concurrency 8" in header
    overall = line_with(frame, "ETA")
    assert "40.0%" in overall
    assert "40.0 MiB / 100.0 MiB" in overall
    assert "8.0 MiB/s" in overall
    # 60 MiB to go at 8 MiB/s.
    assert "ETA 0:00:07" in overall
    bar = overall.split("40.0%")[0]
    filled = bar.count("━") + 0.5 * bar.count("╸")
    assert filled / len(bar) == pytest.approx(0.40, abs=0.03)  # the bar and a space or two


def test_one_line_per_dataset(run: Harness) -> None:
    frame = run.render()
    annotations = line_with(frame, "annotations ")
    assert "100.0%" in annotations
    assert "3.0 MiB / 3.0 MiB" in annotations
    assert "2/2 files" in annotations
    full_scale = line_with(frame, "full_scale ")
    assert "38.8%" in full_scale  # 38 of 98 MiB
    assert "0/3 files (1 failed)" in full_scale


def test_active_transfers_with_rate_and_retries(run: Harness) -> None:
    frame = run.render()
    assert "2 transfers in flight" in frame
    v1 = line_with(frame, "full_scale/v1.mp4")
    assert "31.7%" in v1  # 19 of 60 MiB
    assert "60.0 MiB" in v1
    assert "4.0 MiB/s" in v1
    assert v1.rstrip().endswith("0")
    v2 = line_with(frame, "full_scale/v2.mp4")
    assert "50.0%" in v2
    assert "retrying" in v2
    assert v2.rstrip().endswith("1")
    # Largest first.
    assert frame.index("v1.mp4") < frame.index("v2.mp4")


def test_counters(run: Harness) -> None:
    counters = line_with(run.render(), "files 3/5:")
    for text in (
        "1 verified",
        "1 skipped",
        "0 failed",
        "1 missing",
        "1 retrying",
        "(1 retries)",
    ):
        assert text in counters
    assert "denied" not in counters


def test_warnings_panel_shows_the_latest(run: Harness) -> None:
    frame = run.render()
    assert "latest warnings" in frame
    assert "missing: full_scale/v3.mp4: 404 Not Found" in frame
    assert "throttled: full_scale/v2.mp4: 503 SlowDown (attempt 1, again in 0.5s;" in frame
    assert "concurrency now 8 (throttled by the server)" in frame
    assert "+0:00:05" in frame


def test_bytes_after_a_retry_clear_retrying(run: Harness) -> None:
    run.feed(received(V2, MIB))
    frame = run.tick(0.25)
    assert "retrying" not in line_with(frame, "full_scale/v2.mp4")
    assert "0 retrying" in line_with(frame, "files 3/5:")


def test_warning_panel_keeps_only_the_last_few(run: Harness) -> None:
    for attempt in range(2, 8):
        run.feed(
            RangeRetried(
                dataset="full_scale",
                key=V1.key,
                start=0,
                stop=MIB,
                attempt=attempt,
                delay_s=1.0,
                reason="connection reset",
            )
        )
    frame = run.render()
    assert "latest warnings (9 in all)" in frame
    assert frame.count("retry: full_scale/v1.mp4: connection reset") == 4
    assert "attempt 7" in frame
    assert "attempt 3" not in frame


def test_restart_and_integrity_failure_move_the_totals(run: Harness) -> None:
    run.feed(
        FileRestarted(
            dataset="full_scale",
            key=V1.key,
            old_etag="a" * 32,
            new_etag="b" * 32,
            discarded_bytes=19 * MIB,
        ),
        started(V1),
        IntegrityFailed(
            dataset="full_scale", key=V2.key, reason="MD5 mismatch", refetch_bytes=8 * MIB
        ),
    )
    frame = run.render()
    # 40 MiB received; 100 + 19 + 8 to receive in all.
    assert "40.0 MiB / 127.0 MiB" in line_with(frame, "ETA")
    assert "0.0%" in line_with(frame, "full_scale/v1.mp4")
    assert "19.0 MiB / 98.0 MiB" in line_with(frame, "full_scale ")
    assert "changed on the server (412), restarting: full_scale/v1.mp4" in frame
    assert "integrity: full_scale/v2.mp4: MD5 mismatch; refetching 8.0 MiB" in frame
    assert "(1 retries, 1 restarts)" in frame
    assert all(len(line) <= 100 for line in frame.splitlines())


def test_a_transfer_without_bytes_is_shown_stalled(run: Harness) -> None:
    run.feed(received(V2, MIB))  # v2 is no longer retrying; v1 gets nothing from now on
    for _ in range(24):
        run.feed(received(V2, MIB // 4))
        frame = run.tick(0.25)
    assert "stalled 6s" in line_with(frame, "full_scale/v1.mp4")
    assert "stalled" not in line_with(frame, "full_scale/v2.mp4")


def test_rate_is_smoothed_and_eta_follows_it() -> None:
    h = Harness()
    h.feed(
        RunStarted(
            files=1,
            size_bytes=200 * MIB,
            present_bytes=0,
            fetch_bytes=200 * MIB,
            skipped_files=0,
            concurrency=16,
        ),
        started(V1),
    )
    h.tick(0.0)
    for _ in range(40):  # 10 s at 8 MiB/s
        h.feed(received(V1, 2 * MIB))
        frame = h.tick(0.25)
    assert "8.0 MiB/s" in line_with(frame, "ETA")
    assert "ETA 0:00:15" in frame  # 120 MiB at 8 MiB/s
    for _ in range(40):  # then 10 s at 2 MiB/s
        h.feed(received(V1, MIB // 2))
        frame = h.tick(0.25)
    # Exponential smoothing over 5 s: 2 + 6 * e^-2 MiB/s.
    expected = 2 + 6 * math.exp(-2)
    assert f"{expected:.1f} MiB/s" in line_with(frame, "ETA")
    assert f"ETA 0:00:{int(100 / expected):02d}" in frame


def test_many_transfers_show_the_largest_that_fit() -> None:
    h = Harness(max_transfers=5)
    files = [planned_file("clips", f"c{i:02d}.mp4", (i + 1) * MIB) for i in range(20)]
    h.feed(
        RunStarted(
            files=20,
            size_bytes=210 * MIB,
            present_bytes=0,
            fetch_bytes=210 * MIB,
            skipped_files=0,
            concurrency=16,
        ),
        *(started(f) for f in files),
    )
    frame = h.tick(1.0)
    assert "20 transfers in flight, the largest 5" in frame
    shown = [f.uid for f in files if f"clips/{f.uid}" in frame]
    assert shown == ["c15.mp4", "c16.mp4", "c17.mp4", "c18.mp4", "c19.mp4"]

    short = Harness(height=16, max_transfers=8)
    short.feed(
        RunStarted(
            files=20,
            size_bytes=210 * MIB,
            present_bytes=0,
            fetch_bytes=210 * MIB,
            skipped_files=0,
            concurrency=16,
        ),
        *(started(f) for f in files),
    )
    frame = short.tick(1.0)
    assert len(frame.splitlines()) <= 16
    assert "clips/c19.mp4" in frame


def test_finished_and_interrupted_frames(run: Harness) -> None:
    run.feed(RunFinished(summary=summary()))
    frame = run.render()
    assert "finished with problems" in line_with(frame, "ego4d-dl")  # one file is missing
    overall = line_with(frame, "40.0%")
    assert "done" in overall
    assert "8.0 MiB/s" in overall  # the summary's mean
    assert "transfers cut short" in frame

    h = Harness()
    h.feed(
        RunStarted(
            files=1,
            size_bytes=MIB,
            present_bytes=0,
            fetch_bytes=MIB,
            skipped_files=0,
            concurrency=4,
        ),
        RunFinished(
            summary=summary(
                stopped_by="interrupted", stop_kind="interrupted", missing=0, verified=0
            )
        ),
    )
    frame = h.tick(1.0)
    assert "interrupted" in line_with(frame, "ego4d-dl")
    assert "stopped" in line_with(frame, "0.0%")

    h = Harness()
    h.feed(
        RunStarted(
            files=1,
            size_bytes=MIB,
            present_bytes=0,
            fetch_bytes=MIB,
            skipped_files=0,
            concurrency=4,
        ),
        RunFinished(summary=summary(missing=0)),
    )
    assert "finished" in line_with(h.tick(1.0), "ego4d-dl")


def test_planning_status() -> None:
    h = Harness()
    h.feed(
        ManifestLoaded(dataset="full_scale", rows=3, selected=3, malformed=0),
        ObjectsLookedUp(count=2, total=4),
    )
    frame = h.render()
    assert "planning: manifests of full_scale (3 files); looked up 2 of 4 objects" in frame


def test_narrow_terminal_keeps_every_part_on_screen() -> None:
    frame = steady_run(width=80).render()
    assert all(len(line) <= 80 for line in frame.splitlines())
    assert "ETA 0:00:07" in line_with(frame, "40.0%")
    assert "31.7%" in line_with(frame, "full_scale/v1.mp4")
    assert "0/3 files (1 failed)" in line_with(frame, "full_scale ")
    assert "1 retrying" in line_with(frame, "files 3/5:")
    assert "throttled: full_scale/v2.mp4" in frame


def test_rate_warms_up_as_a_mean_then_smooths() -> None:
    rate = Rate(5.0)
    rate.reset(0.0)
    assert rate.sample(0.01, 100) is None  # too soon to say
    assert rate.sample(1.0, 10 * MIB) == pytest.approx(10 * MIB)
    # Within the warm-up it is the plain mean since the start.
    assert rate.sample(2.0, 10 * MIB) == pytest.approx(5 * MIB)
    assert rate.sample(4.0, 10 * MIB) == pytest.approx(2.5 * MIB)
    # Then each second weighs 1 - e^(-1/5).
    value = rate.sample(5.0, 10 * MIB)
    assert value is not None
    assert rate.sample(6.0, 10 * MIB) == pytest.approx(value * math.exp(-1 / 5))


def test_live_display_starts_and_stops_with_the_run() -> None:
    out = io.StringIO()
    console = Console(file=out, width=100, height=30, force_terminal=True, color_system=None)
    dash = Dashboard(console, refresh_per_second=50, redirect_stderr=False)
    threads = threading.active_count()
    dash(ManifestLoaded(dataset="full_scale", rows=3, selected=3, malformed=0))
    assert threading.active_count() == threads + 1  # the planning spinner refreshes
    dash(PlanBuilt(files=3, size_bytes=MIB, fetch_bytes=MIB, heads=0, list_pages=1, elapsed_s=0))
    dash.expect(PLAN)
    dash(
        RunStarted(
            files=5,
            size_bytes=101 * MIB,
            present_bytes=0,
            fetch_bytes=100 * MIB,
            skipped_files=1,
            concurrency=16,
        )
    )
    dash(started(V1))
    dash(received(V1, 50 * MIB))
    dash.note("stopping: a note from the command line")
    dash(RunFinished(summary=summary(bytes_fetched=50 * MIB)))
    dash.close()
    dash.close()
    for _ in range(200):  # Rich's refresh thread ends at its next wake-up
        if threading.active_count() == threads:
            break
        time.sleep(0.01)
    assert threading.active_count() == threads
    text = out.getvalue()
    assert "stopping: a note from the command line" in text
    assert "finished with problems" in text
    assert "50.0%" in text
    # The cursor, hidden while drawing, is shown again.
    assert text.rstrip().endswith("\x1b[?25h")


# --- a recorded run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(
    sandbox: Sandbox, release: SeededRelease, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Event], RunSummary]]:
    """The events of a real download of three datasets from the session sandbox."""
    out = tmp_path_factory.mktemp("recorded")
    options = Options(
        output_directory=out,
        version=release.version,
        datasets=("annotations", "clips", "full_scale"),
        credentials=Credentials(access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY),
        endpoint=parse_endpoint(sandbox.endpoint_url),
        assume_yes=True,
    )
    events: list[Event] = []
    plans: list[Plan] = []

    async def confirm(plan: Plan) -> bool:
        plans.append(plan)
        return True

    result = asyncio.run(run_download(options, sink=events.append, confirm=confirm))
    assert result.summary is not None and result.summary.ok
    yield events, result.summary


def test_replay_of_a_recorded_run(recorded: tuple[list[Event], RunSummary]) -> None:
    events, result = recorded
    h = Harness(width=120)
    # Replayed at 100 events a second, drawing 4 frames a second.
    for i, event in enumerate(events):
        h.feed(event)
        if i % 25 == 0:
            frame = h.tick(0.25)
            assert "Traceback" not in frame
        else:
            h.clock.now += 0.01
    frame = h.render()
    assert "finished" in line_with(frame, "ego4d-dl")
    overall = line_with(frame, "100.0%")
    fetched = human_bytes(result.bytes_fetched)
    assert f"{fetched} / {fetched}" in overall
    assert overall.rstrip().endswith("done")
    for dataset, files in (("annotations", 5), ("clips", 3), ("full_scale", 7)):
        row = line_with(frame, f"{dataset} ")
        assert "100.0%" in row
        assert f"{files}/{files} files" in row
    counters = line_with(frame, f"files {result.files}/{result.files}:")
    assert f"{result.verified} verified" in counters
    assert "0 failed" in counters
    assert "transfers" not in frame
    assert "warnings" not in frame
