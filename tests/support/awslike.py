"""AWS-shaped S3 on loopback, for what SeaweedFS cannot act out: regional hosts, virtual-hosted
addressing, region errors and redirects.

``MotoS3`` runs moto's standalone server (PyPI ``moto[server]``, a second, independent S3
implementation) in a child process on a free 127.0.0.1 port. ``AwsFront`` stands where
``*.amazonaws.com`` would be: an HTTPS proxy (``HTTPS_PROXY``) that answers each CONNECT
itself, terminates TLS with a certificate for the S3 host names (made here, trusted through
``AWS_CA_BUNDLE``), and relays the requests to moto, Host header and all, so moto sees
virtual-hosted and regional hosts exactly as S3 would. Before relaying it answers as AWS does
where moto does not check: a request to a regional endpoint other than the bucket's gets
``301 PermanentRedirect``, one signed for another region ``400 AuthorizationHeaderMalformed``
(both with ``x-amz-bucket-region``); with ``redirect_gets`` set, object GETs get a 307 (or
``redirect_status``) to that origin; ``deny_head_bucket`` answers HeadBucket 403 without a
region. Every request is recorded: host, path, the region it was signed for and whether
botocore or ego4d-dl's hand-signed path sent it. Test support only.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import http.server
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.relay import relay, serving

__all__ = ["AwsFront", "FrontRequest", "MotoS3", "make_certificates"]

_REGIONS = ("us-east-1", "us-west-1", "eu-central-1")
_HOST_RE = re.compile(
    r"(?:(?P<bucket>[a-z0-9][a-z0-9.-]*)\.)?s3(?:\.(?P<region>[a-z]{2}-[a-z]+-\d))?\.amazonaws\.com"
)
_SCOPE_RE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/s3/aws4_request")


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signed for S3's host names: ``(ca, cert, key)``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ego4d-dl test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names = ["s3.amazonaws.com", "*.s3.amazonaws.com"]
    for region in _REGIONS:
        names += [f"s3.{region}.amazonaws.com", f"*.s3.{region}.amazonaws.com"]
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "s3.amazonaws.com")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoS3:
    """moto's server in a child process on loopback; ``with MotoS3() as moto: moto.url``."""

    def __init__(self) -> None:
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        for _ in range(3):
            self.port = _free_port()
            # fmt: off
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            # fmt: on
            if self._wait_ready():
                return self
            self._end()
        raise RuntimeError("moto's server did not start")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._end()

    def _wait_ready(self, timeout_s: float = 60) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                try:
                    conn.request("GET", "/moto-api/reset-auth")
                    conn.getresponse().read()
                    return True
                finally:
                    conn.close()
            time.sleep(0.2)
        return False

    def _end(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FrontRequest:
    """One request that reached the front, and how it was answered."""

    method: str
    host: str
    path: str  # without the query
    query: str
    signed_region: str | None
    by_botocore: bool  # botocore's pipeline (its User-Agent), else the hand-signed GET
    session_token: bool
    status: int


@dataclass
class AwsFront:
    """``with AwsFront(moto_url, certificates) as front``: set ``HTTPS_PROXY=front.url``."""

    upstream: str
    ca: Path
    cert: Path
    key: Path
    # Bucket -> its region (others are in us-east-1); tests may move a bucket.
    regions: dict[str, str] = field(default_factory=dict)
    redirect_gets: str | None = None
    redirect_status: int = 307
    # HeadBucket answered 403 without a region (no s3:ListBucket permission, some mirrors).
    deny_head_bucket: bool = False
    requests: list[FrontRequest] = field(default_factory=list)
    connects: list[str] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None
    _stack: contextlib.ExitStack | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def gets(self, key: str) -> list[FrontRequest]:
        """The GETs of object ``key`` the front saw (any host, any addressing style)."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + key)]

    def __enter__(self) -> Self:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        front = self
        target = urllib.parse.urlsplit(self.upstream)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_CONNECT(self) -> None:
                with front._lock:
                    front.connects.append(self.path)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                try:
                    tls = context.wrap_socket(self.connection, server_side=True)
                except (ssl.SSLError, OSError):
                    self.close_connection = True
                    return
                # The tunnel's requests, served by a handler of their own over TLS.
                try:
                    Handler(tls, self.client_address, self.server)
                finally:
                    tls.close()
                self.close_connection = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                host = (self.headers.get("Host") or "").split(":")[0]
                split = urllib.parse.urlsplit(self.path)
                status, extra, answer = front._region_answer(self.command, host, split, self)
                if status is None:
                    relayed = relay(
                        target.hostname or "127.0.0.1",
                        target.port or 80,
                        self.command,
                        self.path,
                        self.headers.items(),
                        body,
                        timeout_s=60,
                    )
                    status, headers, answer = relayed.status, relayed.headers, relayed.body
                    if self.command == "HEAD":
                        headers.append(("Content-Length", relayed.content_length))
                else:
                    headers = extra
                auth = self.headers.get("Authorization") or ""
                scope = _SCOPE_RE.search(auth) or _SCOPE_RE.search(
                    urllib.parse.unquote(split.query)
                )
                with front._lock:
                    front.requests.append(
                        FrontRequest(
                            method=self.command,
                            host=host,
                            path=urllib.parse.unquote(split.path),
                            query=split.query,
                            signed_region=scope[1] if scope else None,
                            by_botocore="botocore" in (self.headers.get("User-Agent") or ""),
                            session_token="X-Amz-Security-Token" in self.headers,
                            status=status,
                        )
                    )
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                if self.command == "HEAD":
                    self.end_headers()
                    return
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _serve

        self._stack = contextlib.ExitStack()
        self._server = self._stack.enter_context(serving(Handler))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stack is not None:
            self._stack.close()

    def _region_answer(
        self, method: str, host: str, split: urllib.parse.SplitResult, handler: Any
    ) -> tuple[int | None, list[tuple[str, str]], bytes]:
        """What AWS answers instead of serving, or ``(None, [], b"")`` to relay to moto."""
        match = _HOST_RE.fullmatch(host)
        if match is None:
            return None, [], b""
        segments = split.path.lstrip("/").split("/", 1)
        bucket = match["bucket"] or segments[0]
        key = (segments[1] if len(segments) > 1 else "") if not match["bucket"] else split.path
        if not bucket:
            return None, [], b""
        with self._lock:
            home = self.regions.get(bucket, "us-east-1")
            redirect, redirect_status = self.redirect_gets, self.redirect_status
            deny_head_bucket = self.deny_head_bucket
        if deny_head_bucket and method == "HEAD" and not key.strip("/"):
            return 403, [("Content-Type", "application/xml")], b""
        auth = handler.headers.get("Authorization") or ""
        scope = _SCOPE_RE.search(auth)
        signed = scope[1] if scope else None
        headers = [("x-amz-bucket-region", home), ("Content-Type", "application/xml")]
        endpoint = match["region"]
        if (endpoint is not None and endpoint != home) or (
            endpoint is None and not match["bucket"] and home != "us-east-1"
        ):
            return (
                301,
                headers,
                _error(
                    "PermanentRedirect",
                    "The bucket you are attempting to access must be addressed using the "
                    "specified endpoint.",
                    Endpoint=f"{bucket}.s3.{home}.amazonaws.com",
                    Bucket=bucket,
                ),
            )
        if signed is not None and signed != home:
            return (
                400,
                headers,
                _error(
                    "AuthorizationHeaderMalformed",
                    f"The authorization header is malformed; the region '{signed}' is wrong; "
                    f"expecting '{home}'",
                    Region=home,
                ),
            )
        if redirect is not None and method == "GET" and key.strip("/"):
            location = redirect + split.path + (f"?{split.query}" if split.query else "")
            return (
                redirect_status,
                [("Location", location), *headers],
                _error("TemporaryRedirect", "Please re-send this request elsewhere."),
            )
        return None, [], b""


def _error(code: str, message: str, **fields: str) -> bytes:
    extra = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{extra}"
        "<RequestId>0</RequestId></Error>"
    ).encode()
