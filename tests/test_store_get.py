"""Ranged GETs against the real sandbox: the hand-signed path returns the right bytes, keeps
If-Match and Content-Range checks, and hands what it cannot handle to botocore."""

from __future__ import annotations

import asyncio

import pytest

from ego4d_dl.config import Credentials, Endpoint
from ego4d_dl.errors import AccessDeniedError, ObjectNotFoundError, RemoteChangedError
from ego4d_dl.sandbox import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    Sandbox,
    SeededFile,
    SeededRelease,
    fake_bytes,
)
from ego4d_dl.store import S3Store
from tests.support.faultproxy import ErrorReply, FaultProxy, Match, Rule


def _store(sandbox: Sandbox) -> S3Store:
    return _store_at(sandbox.endpoint_url)


def _store_at(endpoint_url: str) -> S3Store:
    return S3Store(
        credentials=Credentials(access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY),
        endpoint=Endpoint(url=endpoint_url, region="us-east-1"),
        max_connections=4,
        stall_timeout_s=10,
    )


def _multipart(release: SeededRelease) -> SeededFile:
    return next(f for f in release.files if len(f.obj.part_sizes_bytes) > 2)


async def _read(store: S3Store, f: SeededFile, start: int, stop: int, etag: str) -> bytes:
    chunks = []
    async with store.get_range(
        f.obj.bucket, f.obj.key, start=start, stop=stop, size_bytes=f.obj.size_bytes, etag=etag
    ) as body:
        while chunk := await body.read(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


def test_signed_ranged_get_returns_exact_bytes(sandbox, release, aws_env):
    f = _multipart(release)
    data = fake_bytes(f"{f.obj.bucket}/{f.obj.key}", f.obj.size_bytes)

    async def go() -> None:
        async with _store(sandbox) as store:
            start, stop = 5_000_001, 9_000_007
            assert await _read(store, f, start, stop, f.obj.etag) == data[start:stop]
            assert await _read(store, f, 0, f.obj.size_bytes, f.obj.etag) == data
            # The GETs above were hand-signed: the bucket has a route.
            assert store._routes[f.obj.bucket] is not None

    asyncio.run(go())


def test_signed_get_keeps_if_match(sandbox, release, aws_env):
    f = _multipart(release)

    async def go() -> None:
        async with _store(sandbox) as store:
            with pytest.raises(RemoteChangedError):
                await _read(store, f, 0, 100, "0" * 32 + "-3")

    asyncio.run(go())


def test_errors_without_a_fast_answer_still_come_from_botocore(sandbox, release, aws_env):
    f = _multipart(release)

    async def go() -> None:
        async with _store(sandbox) as store:
            # The bucket's first GET goes through botocore; where it went is the route.
            assert await _read(store, f, 0, 10, f.obj.etag) != b""
            with pytest.raises(ObjectNotFoundError):
                async with store.get_range(
                    f.obj.bucket,
                    f.obj.key + ".nope",
                    start=0,
                    stop=10,
                    size_bytes=100,
                    etag=f.obj.etag,
                ):
                    pass
            # A 404 says nothing about routing: the fast path stays on for the bucket.
            assert store._routes[f.obj.bucket] is not None

    asyncio.run(go())


def test_a_missing_object_costs_one_request_once_the_route_is_known(sandbox, release, aws_env):
    """Counted at a proxy in front of the sandbox: a hand-signed GET answered 404 (or 412, or
    403) raises at once instead of having botocore ask the same question again."""
    f = _multipart(release)
    missing = f.obj.key + ".nope"

    async def go(endpoint_url: str) -> None:
        async with _store_at(endpoint_url) as store:
            assert await _read(store, f, 0, 10, f.obj.etag) != b""  # botocore's: the route
            assert store._routes[f.obj.bucket] is not None
            with pytest.raises(ObjectNotFoundError, match=r"no such object \(404\)"):
                async with store.get_range(
                    f.obj.bucket, missing, start=0, stop=10, size_bytes=100, etag=f.obj.etag
                ):
                    pass
            with pytest.raises(RemoteChangedError, match=r"changed on the server \(412\)"):
                await _read(store, f, 0, 10, "0" * 32 + "-3")
            with pytest.raises(AccessDeniedError, match=r"access denied \(403 AccessDenied\)"):
                await _read(store, f, 20, 30, f.obj.etag)

    denied = ErrorReply(status=403, reason="Forbidden", code="AccessDenied", message="Denied")
    with FaultProxy(sandbox.endpoint_url) as proxy:
        proxy.add(Rule(match=Match(method="GET", range=(20, 29)), fault=denied, times=None))
        asyncio.run(go(proxy.url))
        gets = [(s.key, s.status) for s in proxy.seen if s.method == "GET"]
    assert gets == [(f.obj.key, 206), (missing, 404), (f.obj.key, 412), (f.obj.key, 403)], gets


def test_a_missing_object_costs_one_request_without_a_route(sandbox, release, aws_env):
    """The bucket's first GET goes through botocore (no route yet): a 404 there is one
    request too, and teaches no route."""
    f = _multipart(release)
    missing = f.obj.key + ".nope"

    async def go(endpoint_url: str) -> None:
        async with _store_at(endpoint_url) as store:
            with pytest.raises(ObjectNotFoundError):
                async with store.get_range(
                    f.obj.bucket, missing, start=0, stop=10, size_bytes=100, etag=f.obj.etag
                ):
                    pass
            assert f.obj.bucket not in store._routes

    with FaultProxy(sandbox.endpoint_url) as proxy:
        asyncio.run(go(proxy.url))
        gets = [(s.key, s.status) for s in proxy.seen if s.method == "GET"]
    assert gets == [(missing, 404)], gets


def test_a_kept_copy_is_returned_only_while_it_is_the_object(sandbox, aws_env):
    bucket, key = "ego4d-conditional-get", "public/v9/annotations/manifest.csv"
    sandbox.create_bucket(bucket)
    sandbox.put_object(bucket, key, b"uid,path\n1,a\n")

    async def go() -> None:
        async with _store(sandbox) as store:
            kept = b"uid,path\n1,a\n"
            # 304: the kept copy itself comes back, no byte of the object was read.
            assert await store.get_bytes(bucket, key, cached=kept) is kept
            assert await store.get_bytes(bucket, key, cached=b"uid,path\n") == kept
            sandbox.put_object(bucket, key, b"uid,path\n1,a\n2,b\n")  # a new release of it
            assert await store.get_bytes(bucket, key, cached=kept) == b"uid,path\n1,a\n2,b\n"

    asyncio.run(go())


def test_a_kept_manifest_is_read_back_only_from_a_plain_file(tmp_path):
    from ego4d_dl.families.ego4d import _kept

    plain = tmp_path / "manifest.csv"
    plain.write_bytes(b"uid\n")
    assert _kept(plain) == b"uid\n"
    assert _kept(tmp_path / "absent.csv") is None
    link = tmp_path / "link.csv"
    link.symlink_to(plain)
    assert _kept(link) is None
