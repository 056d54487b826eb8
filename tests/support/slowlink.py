"""Slow links for tests that watch or interrupt a download while it runs: a loopback TCP
proxy that caps the bytes per second flowing back from the sandbox (so a small download lasts
a few seconds), and the benchmarks' far-link emulator (a delay each way, each connection
paced) in a child process.

The proxy forwards raw bytes, so SigV4 signatures (made for the proxy's host:port) still
verify upstream. Nothing else about the traffic changes.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

__all__ = ["FarLinkProxy", "ThrottledProxy"]

_CHUNK = 16 * 1024


class _Pace:
    """A shared schedule: each chunk books the next ``n / rate`` seconds of the link."""

    def __init__(self, rate_bytes_s: float) -> None:
        self.rate_bytes_s = rate_bytes_s
        self._lock = threading.Lock()
        self._free_at = time.monotonic()

    def wait_for(self, n: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._free_at = max(now, self._free_at) + n / self.rate_bytes_s
            until = self._free_at
        delay = until - time.monotonic()
        if delay > 0:
            time.sleep(delay)


class ThrottledProxy:
    """``with ThrottledProxy(sandbox.endpoint_url, rate_bytes_s=...) as proxy: proxy.url``."""

    def __init__(self, upstream_url: str, *, rate_bytes_s: float) -> None:
        parts = urlsplit(upstream_url)
        assert parts.hostname is not None and parts.port is not None
        self._upstream = (parts.hostname, parts.port)
        self._pace = _Pace(rate_bytes_s)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> ThrottledProxy:
        self._spawn(self._accept)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._closed = True
            sockets = [self._listener, *self._sockets]
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    server.close()
                    return
                self._sockets += [client, server]
            self._spawn(self._pump, client, server, False)
            self._spawn(self._pump, server, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, paced: bool) -> None:
        try:
            while data := src.recv(_CHUNK):
                if paced:
                    self._pace.wait_for(len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


_FARLINK = Path(__file__).resolve().parents[2] / "benchmarks" / "farlink.py"


class FarLinkProxy:
    """``with FarLinkProxy(sandbox.endpoint_url, one_way_delay_s=..., rate_bytes_s=...) as
    link: link.url``: ``benchmarks/farlink.py`` in a child process, the same emulator the
    bench measures with. After the block, ``connections`` is how many connections it carried
    and ``peak_connections`` the most that were open at once."""

    def __init__(self, upstream_url: str, *, one_way_delay_s: float, rate_bytes_s: float) -> None:
        self._argv = [
            sys.executable,
            str(_FARLINK),
            "--upstream",
            upstream_url,
            "--delay-ms",
            f"{one_way_delay_s * 1000:g}",
            "--rate-mb-s",
            f"{rate_bytes_s / 1e6:g}",
        ]
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.connections = 0
        self.peak_connections = 0

    def __enter__(self) -> FarLinkProxy:
        self._proc = subprocess.Popen(
            self._argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        assert self._proc.stdout is not None
        ready = self._proc.stdout.readline()
        match = re.match(r"farlink: listening on (\S+)", ready)
        if match is None:
            self._proc.kill()
            raise RuntimeError(f"farlink did not start: {ready!r}")
        self.url = match[1]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGTERM)
        out, _ = self._proc.communicate(timeout=30)
        totals = re.search(r"farlink: (\d+) connections, at most (\d+) at once", out)
        if totals is not None:
            self.connections, self.peak_connections = int(totals[1]), int(totals[2])
