"""A far link emulated in user space: a loopback TCP proxy that delays every byte by a one-way
latency in each direction and paces each connection to its own rate.

The kernel here has no netem, so this stands in for it. A long-distance TCP flow is paced by
its window (throughput = window / round trip), so each connection gets its own rate and more
connections get more in total, which is what makes concurrency matter far from the buckets.
A new connection pays one round trip of handshake before its first byte leaves. Not modelled:
TLS, slow start, loss. The proxy forwards raw bytes, so SigV4 signatures made for its
host:port still verify upstream.

Standard library only: the bench (``bench.py --links far``) and the tests
(``tests/support/slowlink.py``) start it as a child process, so its CPU is its own and is measured::

    python benchmarks/farlink.py --upstream http://127.0.0.1:8333 --link far
    python benchmarks/farlink.py --upstream http://127.0.0.1:8333 --delay-ms 50 --rate-mb-s 8

It prints ``farlink: listening on http://127.0.0.1:PORT (...)`` once ready and serves until
SIGTERM or SIGINT, then prints one line of totals: ``farlink: C connections, at most P at
once, D bytes down, U bytes up``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import signal
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["LINKS", "Link", "serve"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """A link's shape: one-way delay and each connection's rate (bytes/s, decimal MB)."""

    name: str
    one_way_delay_s: float
    rate_bytes_s: float

    @property
    def label(self) -> str:
        """``50 ms each way, 8 MB/s per connection``."""
        return (
            f"{self.one_way_delay_s * 1000:g} ms each way, "
            f"{self.rate_bytes_s / 1e6:g} MB/s per connection"
        )


# The two emulated links: far from the buckets (another continent) and near (a
# neighbouring region).
LINKS = {
    "far": Link(name="far", one_way_delay_s=0.050, rate_bytes_s=8e6),
    "near": Link(name="near", one_way_delay_s=0.010, rate_bytes_s=25e6),
}

# Bytes a direction holds (paced or in the delay line) before it stops reading its source:
# one bandwidth-delay product plus this, so the pacing, not the buffer, sets the rate.
_SLACK_BYTES = 256 * 1024


class _Totals:
    connections = 0
    open = 0
    peak = 0  # the most client connections open at once
    bytes_down = 0
    bytes_up = 0


class _Pipe:
    """One direction of one connection: bytes leave at ``rate`` and arrive ``delay`` later,
    in order. Reading from the source pauses while too much is queued or the destination's
    write buffer is full, so backpressure reaches the sender as TCP's would."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        link: Link,
        src: asyncio.Transport,
        *,
        free_at: float,
        down: bool,
    ) -> None:
        self._loop = loop
        self._link = link
        self._src = src
        self._dst: asyncio.Transport | None = None
        self._down = down
        # (arrival time, data); None as data: the source closed, close the destination.
        self._queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self._free_at = free_at
        self._queued = 0
        self._high = int(link.rate_bytes_s * link.one_way_delay_s) + _SLACK_BYTES
        self._timer: asyncio.TimerHandle | None = None
        self._dst_full = False
        self._src_paused = False

    def attach(self, dst: asyncio.Transport) -> None:
        """The destination is connected: start delivering."""
        self._dst = dst
        self._arm()

    def push(self, data: bytes) -> None:
        """Bytes read from the source at this instant."""
        now = self._loop.time()
        self._free_at = max(now, self._free_at) + len(data) / self._link.rate_bytes_s
        self._queue.append((self._free_at + self._link.one_way_delay_s, data))
        self._queued += len(data)
        if self._down:
            _Totals.bytes_down += len(data)
        else:
            _Totals.bytes_up += len(data)
        self._arm()
        self._backpressure()

    def push_close(self) -> None:
        """The source is gone: close the destination once everything before has arrived."""
        arrival = max(self._loop.time(), self._free_at) + self._link.one_way_delay_s
        self._queue.append((arrival, None))
        self._arm()

    def dst_full(self, full: bool) -> None:
        """The destination's write buffer crossed its high (True) or low (False) mark."""
        self._dst_full = full
        self._backpressure()

    def _arm(self) -> None:
        if self._timer is None and self._queue and self._dst is not None:
            self._timer = self._loop.call_at(self._queue[0][0], self._deliver)

    def _deliver(self) -> None:
        self._timer = None
        dst = self._dst
        assert dst is not None
        now = self._loop.time()
        while self._queue and self._queue[0][0] <= now:
            _, data = self._queue.popleft()
            if data is None:
                self._queue.clear()
                if not dst.is_closing():
                    dst.close()
                return
            self._queued -= len(data)
            if not dst.is_closing():
                dst.write(data)
        self._arm()
        self._backpressure()

    def _backpressure(self) -> None:
        stop = self._dst_full or self._queued > self._high
        if stop and not self._src_paused and not self._src.is_closing():
            self._src.pause_reading()
            self._src_paused = True
        elif not stop and self._src_paused and self._queued <= self._high // 2:
            self._src_paused = False
            if not self._src.is_closing():
                self._src.resume_reading()


class _Side(asyncio.Protocol):
    """One socket of a proxied connection: what it reads goes into ``out``; what ``into``
    delivers is written to it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.out: _Pipe | None = None
        self.into: _Pipe | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.out is not None:
            self.out.push(data)

    def eof_received(self) -> bool:
        return False  # close: HTTP/1.1 clients and servers do not half-close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.out is not None:
            self.out.push_close()

    def pause_writing(self) -> None:
        if self.into is not None:
            self.into.dst_full(True)

    def resume_writing(self) -> None:
        if self.into is not None:
            self.into.dst_full(False)


class _ClientSide(_Side):
    """The socket a client connected: joined to a new upstream connection of its own."""

    def __init__(self, link: Link, upstream: tuple[str, int], tasks: set[asyncio.Task[None]]):
        super().__init__()
        self._link = link
        self._upstream = upstream
        self._tasks = tasks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        _Totals.connections += 1
        _Totals.open += 1
        _Totals.peak = max(_Totals.peak, _Totals.open)
        loop = asyncio.get_running_loop()
        # The handshake: the client's first byte leaves one round trip after it connected.
        self.out = _Pipe(
            loop,
            self._link,
            self.transport,
            free_at=loop.time() + 2 * self._link.one_way_delay_s,
            down=False,
        )
        task = loop.create_task(self._connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        _Totals.open -= 1
        super().connection_lost(exc)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.transport is not None and self.out is not None
        try:
            transport, server = await loop.create_connection(_Side, *self._upstream)
        except OSError:
            self.transport.close()
            return
        down = _Pipe(loop, self._link, transport, free_at=loop.time(), down=True)
        server.out, server.into, self.into = down, self.out, down
        self.out.attach(transport)
        down.attach(self.transport)


async def serve(
    link: Link, upstream: tuple[str, int], *, ready: asyncio.Future[str] | None = None
) -> None:
    """Listen on 127.0.0.1 (a free port) and proxy to ``upstream`` until cancelled;
    ``ready`` gets the URL to use."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    server = await loop.create_server(lambda: _ClientSide(link, upstream, tasks), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    if ready is not None:
        ready.set_result(f"http://127.0.0.1:{port}")
    async with server:
        await asyncio.Future()  # until cancelled


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT of the server")
    parser.add_argument("--link", choices=sorted(LINKS), help="a named link shape")
    parser.add_argument("--delay-ms", type=float, help="one-way delay (overrides --link)")
    parser.add_argument("--rate-mb-s", type=float, help="MB/s per connection (overrides --link)")
    args = parser.parse_args(argv)
    if args.link is None and (args.delay_ms is None or args.rate_mb_s is None):
        parser.error("give --link, or both --delay-ms and --rate-mb-s")
    return args


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    base = LINKS[args.link] if args.link else Link(name="custom", one_way_delay_s=0, rate_bytes_s=1)
    link = Link(
        name=base.name,
        one_way_delay_s=base.one_way_delay_s if args.delay_ms is None else args.delay_ms / 1000,
        rate_bytes_s=base.rate_bytes_s if args.rate_mb_s is None else args.rate_mb_s * 1e6,
    )
    parts = urlsplit(args.upstream)
    if parts.hostname is None or parts.port is None:
        raise SystemExit(f"farlink: --upstream needs a host and a port, not {args.upstream!r}")

    async def run() -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[str] = loop.create_future()
        task = asyncio.create_task(serve(link, (parts.hostname, parts.port), ready=ready))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        print(f"farlink: listening on {await ready} ({link.label})", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    print(
        f"farlink: {_Totals.connections} connections, at most {_Totals.peak} at once, "
        f"{_Totals.bytes_down} bytes down, {_Totals.bytes_up} bytes up",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
