"""The plumbing the HTTP test proxies share (``loopback_proxy``, ``awslike``): relay one
request to an upstream server, hop-by-hop headers dropped both ways and the answer read whole,
and serve a request handler on a loopback port from a thread of its own.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["HOP_BY_HOP", "Answer", "relay", "serving"]

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """What the upstream answered: ``headers`` without hop-by-hop ones or Content-Length
    (a proxy sends ``content_length`` itself, once it knows what else it adds)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    content_length: str  # a HEAD's is the object's, though no body follows


def relay(
    host: str,
    port: int,
    method: str,
    path: str,
    headers: Iterable[tuple[str, str]],
    body: bytes | None,
    *,
    timeout_s: float,
) -> Answer:
    """Send ``method path`` (``body`` if any) to ``host:port``, Host header and all, and read
    the whole answer."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        sent = {k: v for k, v in headers if k.lower() not in HOP_BY_HOP}
        conn.request(method, path, body=body or None, headers=sent)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    kept = [
        (k, v)
        for k, v in resp.getheaders()
        if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
    ]
    length = (resp.getheader("Content-Length") or "0") if method == "HEAD" else str(len(data))
    return Answer(
        status=resp.status, reason=resp.reason, headers=kept, body=data, content_length=length
    )


@contextlib.contextmanager
def serving(
    handler: type[http.server.BaseHTTPRequestHandler],
) -> Iterator[http.server.ThreadingHTTPServer]:
    """``handler`` served on a free 127.0.0.1 port for the block (``server.server_address``)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
