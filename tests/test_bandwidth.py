"""``--max-bandwidth``: rate parsing, the token bucket's arithmetic, and a measured capped run."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ego4d_dl.bandwidth import TokenBucket, format_rate, parse_bandwidth
from ego4d_dl.config import Credentials, Options, parse_endpoint
from ego4d_dl.downloading import run_download
from ego4d_dl.errors import ConfigError
from ego4d_dl.events import BytesReceived, Event
from ego4d_dl.planned import Plan
from ego4d_dl.sandbox import ACCESS_KEY_ID, SECRET_ACCESS_KEY, Sandbox, SeededRelease

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("text", "bytes_s"),
    [
        ("200MB/s", 200e6),
        ("200 MB/s", 200e6),
        ("200mb/s", 200e6),
        ("1.5GB/s", 1.5e9),
        ("512KB/s", 512e3),
        ("64KiB/s", 64 * 1024),
        ("50MiB/s", 50 * MiB),
        ("2GiB/s", 2 * 1024**3),
        ("200M", 200 * MiB),
        ("10m/s", 10 * MiB),
        ("800Mbit/s", 100e6),
        ("1Gbps", 125e6),
        ("4096", 4096.0),
        ("4096B/s", 4096.0),
        ("3 MB/sec", 3e6),
    ],
)
def test_rates_parse(text: str, bytes_s: float) -> None:
    assert parse_bandwidth(text) == pytest.approx(bytes_s)


@pytest.mark.parametrize("text", ["", "fast", "200XB/s", "-5MB/s", "MB/s", "10 MB/min", "100"])
def test_bad_rates_are_one_line_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="--max-bandwidth"):
        parse_bandwidth(text)


def test_format_rate() -> None:
    assert format_rate(200e6) == "200.0 MB/s"
    assert format_rate(1.5e9) == "1.5 GB/s"
    assert format_rate(999) == "999 B/s"


class _FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.now += seconds


def test_bucket_paces_to_the_rate_after_one_burst() -> None:
    t = _FakeTime()
    bucket = TokenBucket(10_000, burst_bytes=1_000, clock=t.clock, sleep=t.sleep)

    async def go() -> None:
        for _ in range(100):
            await bucket.acquire(1_000)

    asyncio.run(go())
    # 100,000 bytes at 10,000 B/s, the first 1,000 free: exactly 9.9 s.
    assert t.slept == pytest.approx(9.9)


def test_bucket_refills_while_idle_but_only_up_to_the_burst() -> None:
    t = _FakeTime()
    bucket = TokenBucket(1_000, burst_bytes=500, clock=t.clock, sleep=t.sleep)

    async def go() -> None:
        await bucket.acquire(500)  # the burst: free
        assert t.slept == 0
        t.now += 60.0  # a long idle spell earns no more than the burst
        await bucket.acquire(500)
        assert t.slept == 0
        await bucket.acquire(500)
        assert t.slept == pytest.approx(0.5)

    asyncio.run(go())


def test_bucket_is_shared_first_come_first_served() -> None:
    t = _FakeTime()
    bucket = TokenBucket(1_000, burst_bytes=0, clock=t.clock, sleep=t.sleep)
    order: list[int] = []

    async def reader(i: int) -> None:
        await bucket.acquire(1_000)
        order.append(i)

    async def go() -> None:
        await asyncio.gather(*(reader(i) for i in range(5)))

    asyncio.run(go())
    assert order == [0, 1, 2, 3, 4]
    # Five readers together get 1,000 B/s, not 1,000 B/s each: the last waited 5 s.
    assert t.now - 100.0 == pytest.approx(5.0)


@pytest.mark.slow
def test_capped_download_holds_the_rate_within_ten_percent(
    sandbox: Sandbox, release: SeededRelease, tmp_path: Path
) -> None:
    # The 24 MiB video with non-uniform parts: several ranged GETs in flight at once.
    video = next(
        f for f in release.files if f.obj.part_sizes_bytes == (5 * MiB, 7 * MiB, 9 * MiB, 3 * MiB)
    )
    cap = 4 * MiB
    options = Options(
        output_directory=tmp_path,
        version=release.version,
        datasets=("full_scale",),
        video_uids=frozenset({video.uid}),
        metadata=False,
        credentials=Credentials(access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY),
        endpoint=parse_endpoint(sandbox.endpoint_url),
        concurrency=8,
        max_bandwidth_bytes_s=cap,
    )

    async def yes(_: Plan) -> bool:
        return True

    received: list[tuple[float, int]] = []

    def record(event: Event) -> None:
        if isinstance(event, BytesReceived):
            received.append((time.monotonic(), event.count))

    result = asyncio.run(run_download(options, sink=record, confirm=yes))
    summary = result.summary
    assert summary is not None and summary.ok
    assert summary.bytes_fetched == video.obj.size_bytes == sum(n for _, n in received)
    # The rate of the transfer itself, from the first chunk received to the last: planning,
    # layout HEADs and the final ETag check are not paced and not counted. The first chunk
    # is the bucket's burst, so it opens the clock.
    paced_bytes = sum(n for _, n in received[1:])
    achieved = paced_bytes / (received[-1][0] - received[0][0])
    print(f"achieved {achieved / MiB:.3f} MiB/s against a {cap / MiB:.0f} MiB/s cap")
    assert abs(achieved - cap) / cap <= 0.10, f"{achieved / MiB:.2f} MiB/s against a 4 MiB/s cap"
