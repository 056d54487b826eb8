"""What a sink costs the engine: CPU nanoseconds per event on the engine's thread, and CPU
milliseconds per dashboard frame on Rich's refresh thread.

At 1 GB/s the engine emits about 950 ``BytesReceived`` a second (1 MiB chunks), so a sink
must stay far below a microsecond per event; frames are drawn 4 times a second, whatever
the rate. Times are the measuring thread's own CPU time (``time.thread_time``), so other
processes on the machine do not inflate them; the dashboard's refresh thread runs during
the per-event measurement, as it would in a real run. Run:
``.venv/bin/python benchmarks/dashboard_sink_cost.py``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from ego4d_dl.dashboard import Dashboard
from ego4d_dl.events import (
    BytesReceived,
    ConcurrencyChanged,
    Event,
    FileStarted,
    RangeRetried,
    RunFinished,
    RunStarted,
    RunSummary,
)
from ego4d_dl.ondisk import ObjectVersion
from ego4d_dl.planned import Action, DatasetPlan, Plan, PlannedFile
from ego4d_dl.sinks import Display, JsonLinesSink, PlainProgressSink

MiB = 1 << 20
EVENTS = 1_000_000
ACTIVE = 64  # the engine's default bound on files open at once
DATASETS = 8
ROUNDS = 5


# Output costs what the terminal costs; here only the sinks' own work is measured.
_NULL = Path(os.devnull).open("w", encoding="utf-8")  # noqa: SIM115 - open for the whole run


def _files() -> list[PlannedFile]:
    return [
        PlannedFile(
            dataset=f"dataset_{i % DATASETS}",
            uid=f"uid-{i:03d}",
            version=ObjectVersion(
                bucket="ego4d-cmu",
                key=f"public/v2/dataset_{i % DATASETS}/{i:08x}-0000-0000-0000-000000000000.mp4",
                etag="0" * 32,
                size_bytes=(i + 1) * 256 * MiB,
            ),
            dest=Path(f"/data/v2/dataset_{i % DATASETS}/{i:03d}.mp4"),
            action=Action.FETCH,
        )
        for i in range(ACTIVE)
    ]


def _plan(files: list[PlannedFile]) -> Plan:
    return Plan(
        version="v2_1",
        output_directory=Path("/data"),
        datasets=tuple(
            DatasetPlan(
                name=f"dataset_{d}", files=tuple(f for f in files if f.dataset == f"dataset_{d}")
            )
            for d in range(DATASETS)
        ),
    )


def _start(sink: Display, files: list[PlannedFile]) -> list[BytesReceived]:
    sink.expect(_plan(files))
    sink(
        RunStarted(
            files=len(files),
            size_bytes=sum(f.size_bytes for f in files),
            present_bytes=0,
            fetch_bytes=sum(f.size_bytes for f in files),
            skipped_files=0,
            concurrency=16,
        )
    )
    for f in files:
        sink(
            FileStarted(
                dataset=f.dataset, key=f.key, dest=f.dest, size_bytes=f.size_bytes, present_bytes=0
            )
        )
    for f in files[:4]:
        sink(
            RangeRetried(
                dataset=f.dataset,
                key=f.key,
                start=0,
                stop=MiB,
                attempt=1,
                delay_s=1.0,
                reason="connection reset",
            )
        )
    sink(ConcurrencyChanged(limit=8, reason="throttled by the server"))
    return [BytesReceived(dataset=f.dataset, key=f.key, count=MiB) for f in files]


def _finish(sink: Display) -> None:
    sink(RunFinished(summary=replace(RunSummary.empty(), files=ACTIVE, elapsed_s=1.0)))


class _Discard:
    """The floor: the cost of the call itself."""

    def __call__(self, event: Event) -> None:
        pass

    def expect(self, plan: Plan) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


def per_event_ns(make: Callable[[], Display], label: str) -> float:
    """Median over rounds of the time per BytesReceived, drawing threads running."""
    results = []
    for _ in range(ROUNDS):
        sink = make()
        files = _files()
        received: list[Event] = list(_start(sink, files))
        batch = received * (EVENTS // len(received))
        started = time.thread_time()
        for event in batch:
            sink(event)
        elapsed = time.thread_time() - started
        _finish(sink)
        results.append(elapsed / len(batch) * 1e9)
    ns = statistics.median(results)
    print(f"{label:<44} {ns:7.0f} ns/event  ({ns * 954 / 1e7:.3f}% of a core at 1 GB/s)")
    return ns


def frame_ms() -> float:
    """Median time to build and draw one full dashboard frame (64 transfers in flight)."""
    console = Console(file=_NULL, width=120, height=40, force_terminal=True)
    dash = Dashboard(console, live=False)
    files = _files()
    received = _start(dash, files)
    for event in received:
        dash(event)
    times = []
    for _ in range(200):
        started = time.thread_time()
        console.print(dash.render())
        times.append((time.thread_time() - started) * 1e3)
    ms = statistics.median(times)
    print(
        f"{'dashboard frame (build + draw, 120x40)':<44} {ms:7.2f} ms/frame "
        f"({ms * 4 / 10:.2f}% of a core at 4 Hz)"
    )
    return ms


def main() -> None:
    terminal = Console(file=_NULL, width=120, height=40, force_terminal=True)
    per_event_ns(
        lambda: Dashboard(terminal, redirect_stderr=False), "Dashboard (live, refreshing at 4 Hz)"
    )
    per_event_ns(
        lambda: PlainProgressSink(_NULL, interval_s=1.0), "PlainProgressSink (ticking every 1 s)"
    )
    per_event_ns(lambda: JsonLinesSink(_NULL, interval_s=1.0), "JsonLinesSink (ticking every 1 s)")
    per_event_ns(_Discard, "a sink that does nothing (the call itself)")
    frame_ms()


if __name__ == "__main__":
    main()
