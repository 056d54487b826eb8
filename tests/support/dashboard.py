"""The dashboard on a recording console with a fake clock, and a scripted run to show on it
(a plan of five files, five seconds at a steady 8 MiB/s, then a throttled retry)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from ego4d_dl.dashboard import Dashboard
from ego4d_dl.events import (
    ConcurrencyChanged,
    Event,
    FileFailed,
    FileSkipped,
    FileStatus,
    RangeRetried,
    RunStarted,
)
from ego4d_dl.planned import Action, DatasetPlan, Plan
from tests.support.events import FakeClock, planned_file, received, started, verified
from tests.support.seed import MIB

__all__ = [
    "A_JSON",
    "B_JSON",
    "OUT",
    "PLAN",
    "V1",
    "V2",
    "V3",
    "Harness",
    "line_with",
    "steady_run",
]

OUT = Path("/data/ego4d")
A_JSON = planned_file("annotations", "a.json", 1 * MIB, Action.SKIP)
B_JSON = planned_file("annotations", "b.json", 2 * MIB)
V1 = planned_file("full_scale", "v1.mp4", 60 * MIB)
V2 = planned_file("full_scale", "v2.mp4", 38 * MIB)
V3 = planned_file("full_scale", "v3.mp4", 0, Action.MISSING)
PLAN = Plan(
    version="v2_1",
    output_directory=OUT,
    datasets=(
        DatasetPlan(name="annotations", files=(A_JSON, B_JSON)),
        DatasetPlan(name="full_scale", files=(V1, V2, V3)),
    ),
)


class Harness:
    """A dashboard on a recording console; ``render()`` returns the frame as plain text."""

    def __init__(self, *, width: int = 100, height: int = 40, **kw: object) -> None:
        self.clock = FakeClock(1000.0)
        self.console = Console(
            file=io.StringIO(), width=width, height=height, record=True, color_system=None
        )
        self.dash = Dashboard(self.console, clock=self.clock, live=False, **kw)  # type: ignore[arg-type]

    def feed(self, *events: Event) -> None:
        for event in events:
            self.dash(event)

    def tick(self, seconds: float) -> str:
        """Advance the clock and draw, as Rich's refresh thread would."""
        self.clock.now += seconds
        return self.render()

    def render(self) -> str:
        self.console.print(self.dash.render())
        return self.console.export_text()


def line_with(frame: str, needle: str) -> str:
    matches = [line for line in frame.splitlines() if needle in line]
    assert matches, f"no line with {needle!r} in:\n{frame}"
    return matches[0]


def steady_run(width: int = 100) -> Harness:
    """Five seconds into a run at a steady 8 MIB/s: 40 of 100 MIB, one file verified, one
    skipped, one missing; then a throttled retry and a lower concurrency limit."""
    h = Harness(width=width)
    h.dash.expect(PLAN)
    h.feed(
        RunStarted(
            files=5,
            size_bytes=101 * MIB,
            present_bytes=0,
            fetch_bytes=100 * MIB,
            skipped_files=1,
            concurrency=16,
        ),
        FileSkipped(
            dataset="annotations",
            key=A_JSON.key,
            dest=A_JSON.dest,
            size_bytes=A_JSON.size_bytes,
            reason="complete",
        ),
        FileFailed(
            dataset="full_scale",
            key=V3.key,
            dest=V3.dest,
            status=FileStatus.MISSING,
            reason="404 Not Found",
        ),
        started(B_JSON),
    )
    h.tick(0.0)
    # Every quarter second 2 MIB: first all of b.json, then 1 MIB each of v1 and v2.
    h.feed(received(B_JSON, 2 * MIB), verified(B_JSON), started(V1), started(V2))
    h.tick(0.25)
    for _ in range(19):
        h.feed(received(V1, MIB), received(V2, MIB))
        h.tick(0.25)
    h.feed(
        RangeRetried(
            dataset="full_scale",
            key=V2.key,
            start=16 * MIB,
            stop=24 * MIB,
            attempt=1,
            delay_s=0.5,
            reason="503 SlowDown",
            throttled=True,
        ),
        ConcurrencyChanged(limit=8, reason="throttled by the server"),
    )
    return h
