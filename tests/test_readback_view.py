"""The read-back progress view: a bar on a terminal (Rich, imported then), lines elsewhere."""

from __future__ import annotations

import io
from pathlib import Path

from ego4d_dl.events import BytesHashed, CheckStarted, FileChecked
from ego4d_dl.readback_view import CheckProgressSink


def _check(sink: CheckProgressSink, verdict: str) -> None:
    sink(CheckStarted(files=2, size_bytes=20))
    sink(BytesHashed(dataset="d", key="k", count=20))
    for name in ("a", "b"):
        sink(
            FileChecked(
                dataset="d",
                key=name,
                dest=Path(name),
                size_bytes=10,
                verdict=verdict if name == "b" else "ok",
                level="etag",
                reason="MD5 differs",
            )
        )


def test_the_bar_shows_and_leaves_with_damaged_files_listed_above_it() -> None:
    stream = io.StringIO()
    sink = CheckProgressSink(stream, bar=True)
    _check(sink, "damaged")
    assert sink._progress is None  # the bar closed itself after the last file
    assert "damaged: b: MD5 differs" in stream.getvalue()


def test_without_a_terminal_damaged_files_are_plain_lines() -> None:
    stream = io.StringIO()
    _check(CheckProgressSink(stream, bar=False), "damaged")
    assert stream.getvalue() == "damaged: b: MD5 differs\n"
