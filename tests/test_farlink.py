"""Adaptive concurrency far from the buckets: the real CLI against the sandbox through the
benchmarks' far-link emulator (50 ms each way, every connection paced).

Each connection gets 1 MB/s, so that 16 of them are far below what any machine here can take:
the default must grow past 16, and an explicit ``--concurrency N`` must stay N. Assertions are
on what happened (the limits the run reported, the connections the link carried, the bytes on
disk), never on how long it took.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ego4d_dl.config import DEFAULT_CONCURRENCY, DEFAULT_MAX_CONCURRENCY
from ego4d_dl.events import ConcurrencyCause
from ego4d_dl.sandbox import Sandbox, SeededRelease
from tests.support.cli import cli_process
from tests.support.seed import Dataset, blobs, check_download, seed_dataset
from tests.support.slowlink import FarLinkProxy

pytestmark = pytest.mark.slow

_ONE_WAY_DELAY_S = 0.05
_RATE_BYTES_S = 1e6


class _Talker:
    """A loopback TCP server that notes when each connection's first byte arrived, then
    sends ``size`` bytes and closes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.first_byte_at: list[float] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> _Talker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # shutdown, not only close: it wakes the accept() blocked in the other thread.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(1)
            self.first_byte_at.append(time.monotonic())
            conn.sendall(b"x" * self.size)


@pytest.fixture
def talker() -> Iterator[_Talker]:
    with _Talker(1_000_000) as running:
        yield running


def test_the_emulated_link_delays_each_way_and_paces_each_connection(talker: _Talker) -> None:
    """Lower bounds only (a slower machine only makes them longer): a request reaches the
    server after a round trip of handshake and a one-way delay; 1 MB at 2 MB/s takes half a
    second, for each of two connections at once."""
    with FarLinkProxy(talker.url, one_way_delay_s=0.05, rate_bytes_s=2e6) as link:
        port = int(link.url.rsplit(":", 1)[1])
        took: list[float] = []
        sent: list[float] = []

        def fetch() -> None:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                started = time.monotonic()
                sent.append(started)
                sock.sendall(b"?")
                got = 0
                while chunk := sock.recv(65536):
                    got += len(chunk)
                assert got == talker.size
                took.append(time.monotonic() - started)

        clients = [threading.Thread(target=fetch) for _ in range(2)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=60)
    assert len(took) == 2
    assert all(t >= 0.5 + 2 * 0.05 for t in took)
    assert min(talker.first_byte_at) - min(sent) >= 3 * 0.05
    assert link.connections == 2 and link.peak_connections == 2


@pytest.fixture(scope="module")
def far_dataset(sandbox: Sandbox, release: SeededRelease) -> Dataset:
    # 300 annotation-sized files: each one request, mostly its round trip through the link.
    return seed_dataset(
        sandbox, "farlink_test", blobs("farlink_test", [128 * 1024 + i for i in range(300)])
    )


def _download(
    sandbox: Sandbox, out: Path, dataset: Dataset, *extra: str
) -> tuple[list[dict[str, Any]], str, int]:
    """Download through the far link; the JSON events, stderr, and the most connections the
    link had open at once."""
    with FarLinkProxy(
        sandbox.endpoint_url, one_way_delay_s=_ONE_WAY_DELAY_S, rate_bytes_s=_RATE_BYTES_S
    ) as link:
        # fmt: off
        done = cli_process(
            "download", "-o", str(out), "--datasets", dataset.name, "--no-metadata",
            "--endpoint-url", link.url, "--yes", "--json", *extra,
            timeout_s=240,
        )
        # fmt: on
    assert done.code == 0, done.stderr
    assert check_download(out, dataset) == []
    return (
        [json.loads(line) for line in done.stdout.splitlines()],
        done.stderr,
        link.peak_connections,
    )


def test_default_grows_past_its_start_far_from_the_buckets(
    sandbox: Sandbox, far_dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    events, stderr, peak = _download(sandbox, tmp_path, far_dataset)

    (started,) = [e for e in events if e["event"] == "RunStarted"]
    assert started["concurrency"] == DEFAULT_CONCURRENCY
    moves = [e for e in events if e["event"] == "ConcurrencyChanged"]
    limits = [m["limit"] for m in moves]
    # The limit grew, each move said why, and it stayed in a sane band: nothing throttled,
    # so never under the controller's floor, never over the ceiling, and it ends no lower
    # than it started.
    assert max(limits) > DEFAULT_CONCURRENCY, moves
    assert all(m["reason"] and ConcurrencyCause(m["cause"]) for m in moves)
    assert {ConcurrencyCause.PROBING, ConcurrencyCause.GREW} & {m["cause"] for m in moves}
    assert not [m for m in moves if m["cause"] == ConcurrencyCause.THROTTLED]
    assert min(limits) >= 4 and max(limits) <= DEFAULT_MAX_CONCURRENCY
    assert limits[-1] >= DEFAULT_CONCURRENCY
    # The link saw it: more connections open at once than the start allows.
    assert peak > DEFAULT_CONCURRENCY
    # The search is routine: no warning lines for it.
    assert "concurrency now" not in stderr
    (finished,) = [e for e in events if e["event"] == "RunFinished"]
    assert finished["summary"]["verified"] == len(far_dataset.md5_by_relpath)
    assert finished["summary"]["bytes_fetched"] == far_dataset.size_bytes


def test_explicit_concurrency_is_exactly_n_far_from_the_buckets(
    sandbox: Sandbox, far_dataset: Dataset, aws_env: dict[str, str], tmp_path: Path
) -> None:
    events, _, peak = _download(sandbox, tmp_path, far_dataset, "--concurrency", "8")

    (started,) = [e for e in events if e["event"] == "RunStarted"]
    assert started["concurrency"] == 8
    assert not [e for e in events if e["event"] == "ConcurrencyChanged"]
    # One pool of 8 connections for everything: the link never saw more at once.
    assert peak <= 8
    (finished,) = [e for e in events if e["event"] == "RunFinished"]
    assert finished["summary"]["bytes_fetched"] == far_dataset.size_bytes
