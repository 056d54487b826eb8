"""What users see of adaptive concurrency: the dashboard's header says the current limit and
why it last moved; the routine search is no warning (neither in the panel nor on stderr), the
server's throttling still is; JSON lines carry the cause."""

from __future__ import annotations

import io
import json

from ego4d_dl.events import ConcurrencyCause, ConcurrencyChanged, RunStarted
from ego4d_dl.sinks import JsonLinesSink, PlainProgressSink, is_warning
from tests.support.dashboard import line_with, steady_run

GREW = ConcurrencyChanged(
    limit=64,
    reason="rate +85% with 32 requests, was 16: trying 64",
    cause=ConcurrencyCause.GREW,
)
THROTTLED = ConcurrencyChanged(limit=32, reason="throttled by the server")


def _started() -> RunStarted:
    return RunStarted(
        files=1, size_bytes=1, present_bytes=0, fetch_bytes=1, skipped_files=0, concurrency=16
    )


def test_header_shows_the_limit_and_why_it_moved() -> None:
    run = steady_run()  # ends with a throttled cut to 8
    assert "concurrency 8 (throttled)" in line_with(run.render(), "ego4d-dl")
    run.feed(GREW)
    frame = run.tick(0.25)
    assert "concurrency 64 (rate grew)" in line_with(frame, "ego4d-dl")
    # The search is not a warning: the panel still ends with the throttling.
    assert "concurrency now 64" not in frame
    assert "concurrency now 8 (throttled by the server)" in frame


def test_only_throttling_is_a_warning() -> None:
    assert is_warning(THROTTLED)
    assert is_warning(
        ConcurrencyChanged(limit=9, reason="recovering", cause=ConcurrencyCause.RECOVERING)
    )
    for cause in (
        ConcurrencyCause.PROBING,
        ConcurrencyCause.GREW,
        ConcurrencyCause.NO_GAIN,
        ConcurrencyCause.LATENCY,
    ):
        assert not is_warning(ConcurrencyChanged(limit=20, reason="x", cause=cause))


def test_plain_lines_skip_the_search_and_keep_throttling() -> None:
    out = io.StringIO()
    sink = PlainProgressSink(out, ticking=False)
    sink(_started())
    sink(GREW)
    sink(THROTTLED)
    lines = out.getvalue().splitlines()
    assert not [line for line in lines if "concurrency now 64" in line]
    assert [line for line in lines if "concurrency now 32 (throttled by the server)" in line]


def test_json_lines_carry_every_move_with_its_cause() -> None:
    out = io.StringIO()
    sink = JsonLinesSink(out, ticking=False)
    sink(_started())
    sink(GREW)
    moves = [
        doc
        for doc in map(json.loads, out.getvalue().splitlines())
        if doc["event"] == "ConcurrencyChanged"
    ]
    assert moves == [
        {"event": "ConcurrencyChanged", "limit": 64, "reason": GREW.reason, "cause": "rate grew"}
    ]
