"""A small HTTP proxy on loopback for tests: forward or reverse, recording what passes.

As a reverse proxy (``upstream`` set) it stands in front of the sandbox at an endpoint URL of
its own; as a forward proxy (HTTP_PROXY) it serves absolute-URI requests; CONNECT (HTTPS_PROXY)
is recorded and refused. ``add_headers`` adds response headers to requests it matches, to
return what AWS would where the sandbox does not (``x-amz-bucket-region``). Threads, not
asyncio, so it never shares an event loop with the code under test.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.support.relay import relay, serving

__all__ = ["ProxyRecord", "loopback_proxy"]


@dataclass
class ProxyRecord:
    """What went through the proxy: request lines and the Authorization header of each."""

    url: str = ""
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, auth
    connects: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def loopback_proxy(
    *,
    upstream: str | None = None,
    add_headers: Callable[[str, str], dict[str, str]] | None = None,
) -> Iterator[ProxyRecord]:
    """Run the proxy for the duration of the block; yields its record (``record.url``)."""
    record = ProxyRecord()
    target = urllib.parse.urlsplit(upstream) if upstream else None

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_CONNECT(self) -> None:
            with record.lock:
                record.connects.append(self.path)
            self.send_response(502, "refused by the test proxy")
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

        def _forward(self) -> None:
            if self.path.startswith("http://"):
                url = urllib.parse.urlsplit(self.path)
                host, port = url.hostname or "127.0.0.1", url.port or 80
                path = url.path + (f"?{url.query}" if url.query else "")
            else:
                assert target is not None, "a reverse proxy needs an upstream"
                host, port = target.hostname or "127.0.0.1", target.port or 80
                path = self.path
            with record.lock:
                record.requests.append((self.command, path, self.headers.get("Authorization", "")))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            answer = relay(host, port, self.command, path, self.headers.items(), body, timeout_s=30)
            self.send_response(answer.status, answer.reason)
            for k, v in answer.headers:
                self.send_header(k, v)
            for k, v in (add_headers(self.command, path) if add_headers else {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", answer.content_length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    with serving(Handler) as server:
        record.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield record
