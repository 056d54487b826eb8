"""What a hostile or broken endpoint can no longer do: make N part requests at once with an
ETag ``<md5>-N`` beyond S3's 10,000 parts, or slip corrupted manifest bytes past their ETag;
and what ``repr`` of the credentials no longer shows."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ego4d_dl.config import Credentials, Options, parse_endpoint
from ego4d_dl.engine import Engine, EngineSettings
from ego4d_dl.etags import MAX_PARTS, VerifyLevel, etag_kind, multipart_count
from ego4d_dl.events import Event, FileVerified, RunSummary
from ego4d_dl.journal import Journal, JournalView, journal_path
from ego4d_dl.planning import build_plan
from ego4d_dl.sandbox import CONSORTIUM_BUCKET, Sandbox, SeededRelease, fake_bytes
from ego4d_dl.store import ListPage, ObjectHead, RangeBody, S3Store
from tests.support.cli import cli
from tests.support.faultproxy import Corrupt, FaultProxy, Match, Rule
from tests.support.seed import put_manifest

MiB = 1 << 20
MD5 = "0bea5bb1e8dd91637e91900805092038"


@pytest.mark.parametrize(
    ("etag", "count", "kind"),
    [
        (f"{MD5}-1", 1, VerifyLevel.COMPOSITE),
        (f"{MD5}-58", 58, VerifyLevel.COMPOSITE),
        (f"{MD5}-{MAX_PARTS}", MAX_PARTS, VerifyLevel.COMPOSITE),
        (f"{MD5}-{MAX_PARTS + 1}", None, VerifyLevel.SIZE),
        (f"{MD5}-0", None, VerifyLevel.SIZE),
        (f"{MD5}-007", None, VerifyLevel.SIZE),
        (f"{MD5}-" + "9" * 5000, None, VerifyLevel.SIZE),  # int() would refuse 5,000 digits
        (f"{MD5}-58\n", None, VerifyLevel.SIZE),
        (MD5, None, VerifyLevel.MD5),
    ],
)
def test_part_counts_beyond_s3s_limit_are_malformed(
    etag: str, count: int | None, kind: VerifyLevel
) -> None:
    assert MAX_PARTS == 10_000
    assert multipart_count(etag) == count
    assert etag_kind(etag) is kind


class HostileEtagStore:
    """The sandbox seen through an endpoint that claims ``<md5>-<parts>`` ETags; requests to
    the real server still carry the real ETag. Counts part-number HEADs."""

    def __init__(self, inner: S3Store, parts: str) -> None:
        self.inner = inner
        self.parts = parts
        self.part_heads = 0
        self.real: dict[str, str] = {}

    def _fake(self, key: str, etag: str) -> str:
        self.real[key] = etag
        return f"{etag.split('-')[0]}-{self.parts}"

    async def head(
        self, bucket: str, key: str, *, part_number: int | None = None, checksums: bool = False
    ) -> ObjectHead:
        if part_number is not None:
            self.part_heads += 1
        head = await self.inner.head(bucket, key, part_number=part_number, checksums=checksums)
        return dataclasses.replace(head, etag=self._fake(key, head.etag))

    async def list_page(
        self, bucket: str, *, prefix: str, start_after: str = "", token: str | None = None
    ) -> ListPage:
        page = await self.inner.list_page(
            bucket, prefix=prefix, start_after=start_after, token=token
        )
        items = tuple(dataclasses.replace(i, etag=self._fake(i.key, i.etag)) for i in page.items)
        return dataclasses.replace(page, items=items)

    async def list_folders(self, bucket: str, *, prefix: str) -> tuple[str, ...]:
        return await self.inner.list_folders(bucket, prefix=prefix)

    async def get_bytes(self, bucket: str, key: str, *, cached: bytes | None = None) -> bytes:
        return await self.inner.get_bytes(bucket, key, cached=cached)

    @contextlib.asynccontextmanager
    async def get_range(
        self, bucket: str, key: str, *, start: int, stop: int, size_bytes: int, etag: str
    ) -> AsyncIterator[RangeBody]:
        async with self.inner.get_range(
            bucket, key, start=start, stop=stop, size_bytes=size_bytes, etag=self.real[key]
        ) as body:
            yield body


@pytest.mark.parametrize("parts", ["100000", "0", "9" * 40])
def test_a_huge_part_count_makes_no_part_requests(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path, parts: str
) -> None:
    dataset = "hostile_etag_test"
    key = f"public/v2/{dataset}/video.mp4"
    data = fake_bytes(key, 12 * MiB)
    sandbox.put_object(CONSORTIUM_BUCKET, key, data, part_sizes_bytes=(5 * MiB, 5 * MiB, 2 * MiB))
    put_manifest(sandbox, dataset, "file_uid,s3_path", [f"video,s3://{CONSORTIUM_BUCKET}/{key}"])
    options = Options(
        output_directory=tmp_path,
        version="v2_1",
        datasets=(dataset,),
        credentials=Credentials(),
        endpoint=parse_endpoint(sandbox.endpoint_url),
        metadata=False,
    )
    events: list[Event] = []

    async def go() -> tuple[RunSummary, HostileEtagStore]:
        async with S3Store(
            credentials=options.credentials,
            endpoint=options.endpoint,
            max_connections=4,
            stall_timeout_s=10,
        ) as real:
            store = HostileEtagStore(real, parts)
            with Journal(journal_path(tmp_path)) as journal:
                plan = await build_plan(
                    options, store, view=JournalView(tmp_path, journal, journal.path)
                )
                engine = Engine(
                    store=store,
                    journal=journal,
                    output_directory=tmp_path,
                    settings=EngineSettings(concurrency=4),
                    sink=events.append,
                )
                return await engine.run(plan.files), store

    summary, store = asyncio.run(go())
    assert summary.ok, summary
    assert store.part_heads == 0  # the ETag proved nothing, so no layout was asked for
    [verified] = [e for e in events if isinstance(e, FileVerified)]
    assert verified.level in (VerifyLevel.SIZE.value, VerifyLevel.CHECKSUM.value)
    path = tmp_path / "v2" / dataset / "video.mp4"
    assert hashlib.md5(path.read_bytes()).hexdigest() == hashlib.md5(data).hexdigest()


def _manifest_rule(times: int | None) -> Rule:
    return Rule(
        match=Match(method="GET", key="public/v2_1/annotations/manifest.csv"),
        fault=Corrupt(at_byte=5, count=2),
        times=times,
    )


def test_a_corrupted_manifest_is_fetched_again(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    with FaultProxy(sandbox.endpoint_url) as proxy:
        rule = _manifest_rule(times=1)
        proxy.add(rule)
        ran = cli("plan", "--json", "-o", tmp_path, "--endpoint-url", proxy.url)
        manifest_gets = [s for s in proxy.seen if s.key == "public/v2_1/annotations/manifest.csv"]
    assert ran.code == 0, ran.stderr
    assert rule.fired == 1
    assert len(manifest_gets) == 2  # the corrupted answer was refused and asked again
    assert '"name": "annotations"' in ran.stdout


def test_a_manifest_that_never_matches_its_etag_stops_the_plan(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    with FaultProxy(sandbox.endpoint_url) as proxy:
        proxy.add(_manifest_rule(times=None))
        ran = cli("plan", "-o", tmp_path, "--endpoint-url", proxy.url)
    assert ran.code == 1, ran.stderr
    line = ran.error_line()
    assert "public/v2_1/annotations/manifest.csv" in line
    assert "do not match the object's ETag" in line


def test_the_secret_and_the_session_token_stay_out_of_repr() -> None:
    keys = Credentials(
        profile="ego4d",
        access_key_id="AKIAEXAMPLE",
        secret_access_key="SECRET-VALUE",
        session_token="TOKEN-VALUE",
    )
    options = Options(output_directory=Path("/d"), version="v2_1", datasets=(), credentials=keys)
    for text in (repr(keys), str(keys), repr(options)):
        assert "SECRET-VALUE" not in text and "TOKEN-VALUE" not in text
        assert "AKIAEXAMPLE" in text  # the key id is no secret: doctor shows it too
    assert keys == dataclasses.replace(keys)  # still compared by every field
    assert keys != dataclasses.replace(keys, secret_access_key="OTHER")
