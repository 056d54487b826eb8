"""Regions, proxies and mirrors: what the store does with what a server (and the env) says.

The sandbox has one region and names none, so region resolution is tested twice: with what
the sandbox really returns, and through a loopback proxy that adds the ``x-amz-bucket-region``
header AWS sends on HeadBucket, to see that requests for that bucket are then signed for and
sent with that region. Proxies are tested with a loopback HTTP proxy.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time

import pytest

from ego4d_dl.config import Credentials, Endpoint, parse_endpoint
from ego4d_dl.errors import NetworkError
from ego4d_dl.regions import region_from_headers, usable_region
from ego4d_dl.sandbox import ACCESS_KEY_ID, RESTRICTED_BUCKET, SECRET_ACCESS_KEY, Sandbox
from ego4d_dl.sandbox import SeededRelease as Release
from ego4d_dl.store import S3Store, proxy_for
from tests.support.loopback_proxy import loopback_proxy

KEYS = Credentials(access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY)


def _store(endpoint: Endpoint) -> S3Store:
    return S3Store(credentials=KEYS, endpoint=endpoint, max_connections=4, stall_timeout_s=10)


def _signed_region(auth: str) -> str:
    match = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/s3/", auth)
    assert match, auth
    return match[1]


def test_placeholder_regions_are_never_used() -> None:
    assert usable_region("none") is None
    assert usable_region("") is None
    assert usable_region(None) is None
    assert usable_region("us-east-1 ") == "us-east-1"
    assert usable_region("eu-central-1") == "eu-central-1"
    assert region_from_headers({"x-amz-bucket-region": "us-west-1"}) == "us-west-1"
    assert region_from_headers({"x-amz-bucket-region": "None"}) is None
    assert region_from_headers({}) is None


def test_sandbox_names_no_region_so_the_default_is_used(sandbox: Sandbox, release: Release) -> None:
    async def go() -> None:
        async with _store(parse_endpoint(sandbox.endpoint_url)) as store:
            probe = await store.probe_bucket("ego4d-cmu")
            assert (probe.status, probe.region) == (200, None)
            assert probe.server_date is not None
            assert abs(probe.server_date - time.time()) < 60
            denied = await store.probe_bucket(RESTRICTED_BUCKET)
            assert denied.status == 403
            assert await store.bucket_region("ego4d-cmu") == "us-east-1"
            obj = release.files[0].obj
            head = await store.head(obj.bucket, obj.key)
            assert (head.size_bytes, head.etag) == (obj.size_bytes, obj.etag)

    asyncio.run(go())


def test_each_bucket_is_signed_for_its_own_region(sandbox: Sandbox, release: Release) -> None:
    far = "ego4d-unict-milan"

    def regions(method: str, path: str) -> dict[str, str]:
        # What AWS answers to a HeadBucket: the bucket's region, whatever the asker's.
        if method == "HEAD" and path.rstrip("/") == f"/{far}":
            return {"x-amz-bucket-region": "eu-central-1"}
        if method == "HEAD" and path.count("/") == 1:
            return {"x-amz-bucket-region": "us-east-1"}
        return {}

    near_obj = next(f.obj for f in release.files if f.obj.bucket == "ego4d-cmu")
    far_obj = next(f.obj for f in release.files if f.obj.bucket == far)

    async def go(endpoint: Endpoint) -> None:
        async with _store(endpoint) as store:
            await store.head(near_obj.bucket, near_obj.key)
            head = await store.head(far_obj.bucket, far_obj.key)
            assert head.etag == far_obj.etag
            assert await store.get_bytes(far_obj.bucket, far_obj.key) != b""
            assert await store.bucket_region(far) == "eu-central-1"

    with loopback_proxy(upstream=sandbox.endpoint_url, add_headers=regions) as proxy:
        asyncio.run(go(parse_endpoint(proxy.url)))
    signed = {
        (method, path.split("?")[0]): _signed_region(auth)
        for method, path, auth in proxy.requests
        if auth
    }
    # Mirrors and the sandbox are addressed path-style: /bucket/key.
    assert signed[("HEAD", f"/{near_obj.bucket}/{near_obj.key}")] == "us-east-1"
    assert signed[("HEAD", f"/{far_obj.bucket}/{far_obj.key}")] == "eu-central-1"
    assert signed[("GET", f"/{far_obj.bucket}/{far_obj.key}")] == "eu-central-1"
    # One HeadBucket per bucket, however many requests follow.
    probes = [p for m, p, _ in proxy.requests if m == "HEAD" and p.rstrip("/") == f"/{far}"]
    assert len(probes) == 1


def test_http_proxy_from_the_environment_is_used(
    sandbox: Sandbox, release: Release, monkeypatch: pytest.MonkeyPatch
) -> None:
    obj = release.files[0].obj

    async def go() -> None:
        async with _store(parse_endpoint(sandbox.endpoint_url)) as store:
            head = await store.head(obj.bucket, obj.key)
            assert head.etag == obj.etag

    with loopback_proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert proxy_for(sandbox.endpoint_url) == proxy.url
        asyncio.run(go())
        through = len(proxy.requests)
        assert any(path.endswith(obj.key) for _, path, _ in proxy.requests)

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert proxy_for(sandbox.endpoint_url) is None
        asyncio.run(go())
        assert len(proxy.requests) == through


def test_https_proxy_gets_a_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"https://127.0.0.1:{port}"

    async def go() -> None:
        async with _store(parse_endpoint(endpoint)) as store:
            with pytest.raises(NetworkError, match="through the proxy"):
                await store.head("ego4d-cmu", "public/v2/x.json")

    with loopback_proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://user:secret@{proxy.url.removeprefix('http://')}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        shown = proxy_for(endpoint)
        assert shown is not None and "secret" not in shown
        asyncio.run(go())
    assert f"127.0.0.1:{port}" in proxy.connects
