"""Remote metadata lookups against the sandbox: listing where it pays, HEAD where it must."""

from __future__ import annotations

import asyncio

from ego4d_dl.config import Credentials, parse_endpoint
from ego4d_dl.errors import AccessDeniedError, ObjectNotFoundError
from ego4d_dl.lookup import Lookup, LookupResult, lookup_objects
from ego4d_dl.retry import RetryPolicy
from ego4d_dl.sandbox import RESTRICTED_BUCKET, Sandbox, SeededRelease
from ego4d_dl.store import S3Store


def lookup(
    sandbox: Sandbox, wanted: list[tuple[str, str]], span_keys: int = 1000
) -> tuple[dict[tuple[str, str], LookupResult], Lookup]:
    async def go() -> tuple[dict[tuple[str, str], LookupResult], Lookup]:
        async with S3Store(
            credentials=Credentials(),
            endpoint=parse_endpoint(sandbox.endpoint_url),
            max_connections=8,
            stall_timeout_s=10,
        ) as store:
            return await lookup_objects(
                store,
                wanted,
                concurrency=8,
                policy=RetryPolicy(max_attempts=2),
                span_keys=span_keys,
            )

    return asyncio.run(go())


def test_dense_folders_are_listed_sparse_ones_headed(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str]
) -> None:
    objs = [
        sandbox.put_object("ego4d-utokyo", f"lk/dense/{i:03d}.bin", bytes([i]) * i)
        for i in range(40)
    ]
    sparse = sandbox.put_object("ego4d-utokyo", "lk/sparse/one.bin", b"1")
    sandbox.put_object(RESTRICTED_BUCKET, "lk/secret.bin", b"s")
    wanted = [(o.bucket, o.key) for o in objs] + [
        ("ego4d-utokyo", "lk/dense/999-never-uploaded.bin"),
        (sparse.bucket, sparse.key),
        (RESTRICTED_BUCKET, "lk/secret.bin"),
    ]
    found, cost = lookup(sandbox, wanted, span_keys=15)
    for o in objs:
        info = found[(o.bucket, o.key)]
        assert not isinstance(info, Exception)
        assert (info.size_bytes, info.etag) == (o.size_bytes, o.etag)
    assert isinstance(
        found[("ego4d-utokyo", "lk/dense/999-never-uploaded.bin")], ObjectNotFoundError
    )
    assert isinstance(found[(RESTRICTED_BUCKET, "lk/secret.bin")], AccessDeniedError)
    # 41 dense keys in three spans of at most 15: three listings, no HEAD for what they found;
    # HEADs only for the missing key, the lone key and the restricted one.
    assert cost.heads == 3
    assert 3 <= cost.list_pages <= 4
