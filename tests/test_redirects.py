"""Redirects and regions as AWS does them, against moto's S3 server behind an AWS-shaped
front (``awslike``): S3Store is pointed at AWS itself (no endpoint URL), and HTTPS_PROXY takes
its requests for ``*.amazonaws.com`` to loopback.

- GETs never follow a redirect, on the hand-signed path or botocore's: the 3xx target gets no
  request (so no session token) and no byte of its answer is taken for data.
- Hand-signed GETs go to the regional host botocore resolved (``bucket.s3.<region>``), not
  the legacy global one.
- A region error (400 AuthorizationHeaderMalformed, 301 PermanentRedirect) goes through
  botocore's region handling once; the hand-signed GETs then follow where it succeeded.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from ego4d_dl.config import Credentials, parse_endpoint
from ego4d_dl.errors import TransientError
from ego4d_dl.sandbox import fake_bytes
from ego4d_dl.store import S3Store
from tests.support.awslike import AwsFront, MotoS3, make_certificates

# moto's S3 server in a child process: a server like the sandbox, out of the fast loop.
pytestmark = pytest.mark.sandbox

MiB = 1 << 20
KEY = "public/v2/full_scale/0a1b2c3d.mp4"
SIZE = 3 * MiB + 17
BUCKETS = {"ego4d-far": "eu-central-1", "ego4d-near": "us-east-1", "ego4d-mover": "us-east-1"}
KEYS = Credentials(
    access_key_id="AKIAMOTOTESTUSER0000",
    secret_access_key="moto-test-secret",
    session_token="SESSION-TOKEN-NEVER-TO-LEAVE-S3",
)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with MotoS3() as running:
        for bucket, region in BUCKETS.items():
            client = boto3.client(
                "s3",
                endpoint_url=running.url,
                region_name=region,
                aws_access_key_id="admin",
                aws_secret_access_key="admin",
                config=Config(s3={"addressing_style": "path"}),
            )
            extra = {} if region == "us-east-1" else {"LocationConstraint": region}
            if extra:
                client.create_bucket(Bucket=bucket, CreateBucketConfiguration=extra)
            else:
                client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key=KEY, Body=fake_bytes(bucket, SIZE))
            client.close()
        yield running


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture
def front(
    moto: MotoS3,
    certificates: tuple[Path, Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[AwsFront]:
    """The AWS-shaped front, with an environment that sends ``*.amazonaws.com`` to it."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in ("http_proxy", "https_proxy", "no_proxy"):
            monkeypatch.delenv(name)
    folder = tmp_path_factory.mktemp("aws")
    (folder / "config").write_text("[default]\n", encoding="utf-8")
    (folder / "credentials").write_text("", encoding="utf-8")
    ca, cert, key = certificates
    with AwsFront(moto.url, ca, cert, key, regions={"ego4d-far": "eu-central-1"}) as running:
        monkeypatch.setenv("AWS_CONFIG_FILE", str(folder / "config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "credentials"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv("AWS_CA_BUNDLE", str(ca))
        monkeypatch.setenv("HTTPS_PROXY", running.url)
        yield running


class _Elsewhere:
    """Another origin a redirect points to: it records whatever reaches it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                seen.append((self.command, self.path, dict(self.headers)))
                body = b"\0" * SIZE
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def elsewhere() -> Iterator[_Elsewhere]:
    running = _Elsewhere()
    try:
        yield running
    finally:
        running.close()


def _store() -> S3Store:
    return S3Store(
        credentials=KEYS, endpoint=parse_endpoint(None), max_connections=4, stall_timeout_s=20
    )


async def _read(store: S3Store, bucket: str, start: int, stop: int) -> bytes:
    etag = hashlib.md5(fake_bytes(bucket, SIZE)).hexdigest()  # a single PUT's ETag
    chunks = []
    async with store.get_range(
        bucket, KEY, start=start, stop=stop, size_bytes=SIZE, etag=etag
    ) as body:
        while chunk := await body.read(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


_PIECES = ((0, 1000), (1000, MiB), (MiB, SIZE))


def test_hand_signed_gets_go_to_the_regional_host(front: AwsFront) -> None:
    data = fake_bytes("ego4d-far", SIZE)

    async def go() -> None:
        async with _store() as store:
            for start, stop in _PIECES:
                assert await _read(store, "ego4d-far", start, stop) == data[start:stop]
            assert await store.bucket_region("ego4d-far") == "eu-central-1"

    asyncio.run(go())
    gets = front.gets(KEY)
    assert [g.status for g in gets] == [206, 206, 206]
    # botocore's first GET tells where the bucket's GETs go; the others are hand-signed.
    assert [g.by_botocore for g in gets] == [True, False, False]
    for g in gets:
        assert (g.host, g.signed_region) == (
            "ego4d-far.s3.eu-central-1.amazonaws.com",
            "eu-central-1",
        )
    assert not [
        r for r in front.requests if r.host == "ego4d-far.s3.amazonaws.com" and r.method == "GET"
    ]


def test_a_region_error_goes_through_botocore_once_then_the_regional_host(
    front: AwsFront,
) -> None:
    """No region from HeadBucket (403): the store starts from its default region; the first
    GET meets AuthorizationHeaderMalformed, botocore's region handling asks again in the
    right region, and every later GET goes there directly, hand-signed."""
    front.deny_head_bucket = True
    data = fake_bytes("ego4d-far", SIZE)

    async def go() -> None:
        async with _store() as store:
            for start, stop in _PIECES:
                assert await _read(store, "ego4d-far", start, stop) == data[start:stop]

    asyncio.run(go())
    gets = front.gets(KEY)
    assert [(g.status, g.by_botocore) for g in gets] == [
        (400, True),  # signed for us-east-1 at the global host
        (206, True),  # botocore's region redirect
        (206, False),
        (206, False),
    ]
    assert gets[0].host == "ego4d-far.s3.amazonaws.com"
    for g in gets[1:]:
        assert (g.host, g.signed_region) == (
            "ego4d-far.s3.eu-central-1.amazonaws.com",
            "eu-central-1",
        )


def test_hand_signed_gets_follow_a_bucket_to_its_new_region(front: AwsFront) -> None:
    """A hand-signed GET that meets a region error (400, then 301 PermanentRedirect) hands
    the bucket to botocore, whose successful GET gives the new route."""
    data = fake_bytes("ego4d-mover", SIZE)

    async def read_all(store: S3Store) -> None:
        for start, stop in _PIECES:
            assert await _read(store, "ego4d-mover", start, stop) == data[start:stop]

    async def go() -> None:
        async with _store() as store:
            await read_all(store)
            front.regions["ego4d-mover"] = "eu-central-1"
            await read_all(store)
            front.regions["ego4d-mover"] = "us-west-1"
            await read_all(store)

    asyncio.run(go())
    seen = [(g.status, g.by_botocore, g.host, g.signed_region) for g in front.gets(KEY)]
    east = ("ego4d-mover.s3.amazonaws.com", "us-east-1")
    central = ("ego4d-mover.s3.eu-central-1.amazonaws.com", "eu-central-1")
    west = ("ego4d-mover.s3.us-west-1.amazonaws.com", "us-west-1")
    assert seen == [
        (206, True, *east),
        (206, False, *east),
        (206, False, *east),
        # moved to eu-central-1: the hand-signed GET gets a 400, botocore's too, then its retry
        (400, False, *east),
        (400, True, *east),
        (206, True, *central),
        (206, False, *central),
        (206, False, *central),
        # moved to us-west-1: a 301 PermanentRedirect from the old regional host
        (301, False, *central),
        (301, True, *central),
        (206, True, *west),
        (206, False, *west),
        (206, False, *west),
    ]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_gets_never_follow_a_redirect(front: AwsFront, elsewhere: _Elsewhere, status: int) -> None:
    data = fake_bytes("ego4d-near", SIZE)

    async def go() -> None:
        async with _store() as store:
            # The route is learnt (botocore), then used (hand-signed): both paths meet it.
            assert await _read(store, "ego4d-near", 0, 1000) == data[:1000]
            front.redirect_gets, front.redirect_status = elsewhere.url, status
            for _ in range(2):
                with pytest.raises(TransientError):
                    await _read(store, "ego4d-near", 1000, MiB)
        async with _store() as fresh:  # botocore's path from the first GET
            with pytest.raises(TransientError):
                await _read(fresh, "ego4d-near", 0, 1000)

    asyncio.run(go())
    assert elsewhere.requests == []  # nothing went there: no token, no body taken for data
    redirected = [g for g in front.gets(KEY) if g.status == status]
    assert any(not g.by_botocore for g in redirected)  # the hand-signed path met it
    assert any(g.by_botocore for g in redirected)  # and botocore's path too
    assert all(g.session_token for g in front.gets(KEY))  # the token only ever went to S3
