"""Bad input: each case ends with one clear ``error:`` line, a non-zero exit code and no
traceback, and never writes outside the output directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from ego4d_dl.sandbox import Sandbox, SeededRelease
from tests.support.cli import Ran, cli
from tests.support.smallfs import tmpfs_at

__all__: list[str] = []


class Download(Protocol):
    def __call__(self, *extra: str, out: Path | None = None) -> Ran: ...


@pytest.fixture
def download(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> Download:
    """``download(*extra)``: a download of the sandbox's release into ``tmp_path/out``."""

    def run(*extra: str, out: Path | None = None) -> Ran:
        target = out if out is not None else tmp_path / "out"
        return cli(
            "download",
            "--output_directory",
            str(target),
            "--endpoint-url",
            sandbox.endpoint_url,
            "--no-metadata",
            "--yes",
            *extra,
        )

    return run


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*") if p.is_file()}


# --- manifests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"", "the manifest is empty", id="empty"),
        pytest.param(b"\n\n", "no uid column", id="blank-lines"),
        pytest.param(b"name,size\nx,1\n", "no uid column", id="no-uid-column"),
        pytest.param(b"file_uid,size\nx,1\n", "no location column", id="no-location-column"),
        pytest.param(
            b"file_uid,s3_path\nx,s3://ego4d-cmu/\xff\xfe.json\n", "not UTF-8", id="not-utf8"
        ),
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8", id="binary"),
    ],
)
def test_unusable_manifest(
    content: bytes, message: str, download: Download, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(content)
    result = download("--datasets", "annotations", "--manifest-override-path", str(manifest))
    assert result.code == 2
    line = result.error_line()
    assert message in line and str(manifest) in line


def test_missing_manifest_file(download: Download, tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    result = download("--datasets", "annotations", "--manifest-override-path", str(missing))
    assert result.code == 2
    assert "cannot read manifest" in result.error_line()


def test_malformed_rows_are_reported_and_fail_the_run(
    download: Download, release: SeededRelease, tmp_path: Path
) -> None:
    """Rows with bad locations (not s3://, bad bucket, no key, '..', absolute keys) are
    skipped with a warning naming their lines; the good rows download; the exit code says
    that not everything requested was downloaded."""
    good = release.for_dataset("annotations")[0]
    rows = [
        "file_uid,s3_path",
        f"good,s3://{good.obj.bucket}/{good.obj.key}",
        "http,https://example.com/x.json",
        "upper,s3://Ego4D-CMU/x.json",
        "nokey,s3://ego4d-cmu/",
        "nobucket,s3:///x.json",
        "dotdot,s3://ego4d-cmu/public/../../../../etc/passwd",
        "absolute,s3://ego4d-cmu//etc/passwd",
        "parent,s3://ego4d-cmu/public/..",
    ]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    before = files_under(tmp_path)
    result = download("--datasets", "annotations", "--manifest-override-path", str(manifest))

    assert result.code == 1, result.stderr
    line = result.error_line()
    assert "7 manifest rows" in line
    warning = next(w for w in result.stderr.splitlines() if "malformed manifest rows" in w)
    assert "lines 3, 4, 5, 6, 7, 8, 9" in warning
    landed = out / "v2" / "annotations" / Path(good.relpath).name
    assert landed.is_file()
    written = files_under(tmp_path) - before
    assert all(p.is_relative_to(out) for p in written), written
    assert not any("passwd" in p.name for p in written)


def test_unsafe_video_uids_never_leave_the_output_directory(
    download: Download, release: SeededRelease, tmp_path: Path
) -> None:
    """Video files are named after their UID: a UID that is a path is refused."""
    video = release.for_dataset("full_scale")[3]  # the 1-byte one
    location = f"s3://{video.obj.bucket}/{video.obj.key}"
    rows = [
        "video_uid,canonical_s3_location",
        f"../../escaped,{location}",
        f"/abs/olute,{location}",
        f"sub/dir,{location}",
        f"..,{location}",  # lands as '...mp4': odd, but a plain name inside the folder
    ]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    before = files_under(tmp_path)
    result = download("--datasets", "full_scale", "--manifest-override-path", str(manifest))

    assert result.code == 1, result.stderr
    assert "3 manifest rows" in result.error_line()
    written = files_under(tmp_path) - before
    assert all(p.is_relative_to(tmp_path / "out") for p in written), written
    videos = [p for p in written if p.suffix == ".mp4"]
    assert videos == [tmp_path / "out" / "v2" / "full_scale" / "...mp4"]


def test_duplicate_uids_for_different_objects(
    download: Download, release: SeededRelease, tmp_path: Path
) -> None:
    """One UID naming two objects would write one file twice: refused before any transfer."""
    a, b = release.for_dataset("full_scale")[3:5]
    rows = [
        "video_uid,canonical_s3_location",
        f"{a.uid},s3://{a.obj.bucket}/{a.obj.key}",
        f"{a.uid},s3://{b.obj.bucket}/{b.obj.key}",
    ]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = download("--datasets", "full_scale", "--manifest-override-path", str(manifest))

    assert result.code == 2
    line = result.error_line()
    assert "lines 2 and 3" in line and f"{a.uid}.mp4" in line
    assert not (tmp_path / "out" / "v2" / "full_scale" / f"{a.uid}.mp4").exists()


def test_duplicate_file_names_for_different_objects(download: Download, tmp_path: Path) -> None:
    rows = [
        "file_uid,s3_path",
        "one,s3://ego4d-cmu/a/data.json",
        "two,s3://ego4d-utokyo/b/data.json",
    ]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = download("--datasets", "annotations", "--manifest-override-path", str(manifest))
    assert result.code == 2
    assert "'data.json'" in result.error_line()


def test_identical_duplicate_rows_download_once(
    download: Download, release: SeededRelease, tmp_path: Path
) -> None:
    """A row repeated verbatim is harmless: one download and a warning, not an error."""
    a = release.for_dataset("full_scale")[3]
    row = f"{a.uid},s3://{a.obj.bucket}/{a.obj.key}"
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"video_uid,canonical_s3_location\n{row}\n{row}\n", encoding="utf-8")
    result = download("--datasets", "full_scale", "--manifest-override-path", str(manifest))
    assert result.code == 0, result.stderr
    assert "line 3 repeats line 2" in result.stderr
    assert (tmp_path / "out" / a.relpath).stat().st_size == a.obj.size_bytes


# --- the output directory --------------------------------------------------------------------


def test_output_directory_is_a_file(download: Download, tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("not a directory", encoding="utf-8")
    result = download("--datasets", "annotations", out=target)
    assert result.code == 2
    assert "is a file, not a directory" in result.error_line()
    assert target.read_text(encoding="utf-8") == "not a directory"


def test_output_directory_under_a_file(download: Download, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    result = download("--datasets", "annotations", out=blocker / "out")
    assert result.code == 2
    assert f"{blocker} is a file" in result.error_line()


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only filesystem (chmod does not stop root, a read-only mount does)."""
    with tmpfs_at(tmp_path / "ro", "ro,size=1m") as mount:
        yield mount


@pytest.mark.parametrize("sub", ["", "new/sub/dir"])
def test_output_directory_not_writable(download: Download, read_only_dir: Path, sub: str) -> None:
    result = download("--datasets", "annotations", out=read_only_dir / sub)
    assert result.code == 2
    assert "no permission to write" in result.error_line()
    assert not any(read_only_dir.iterdir())


# --- uid files, profiles, credentials, endpoints, config files -------------------------------


def test_uid_file_missing(download: Download, tmp_path: Path) -> None:
    result = download("--datasets", "full_scale", "--video_uid_file", str(tmp_path / "no.txt"))
    assert result.code == 2
    assert "does not exist" in result.error_line()


@pytest.mark.parametrize("content", [b"", b"  \n\t\n"], ids=["empty", "whitespace"])
def test_uid_file_empty(download: Download, tmp_path: Path, content: bytes) -> None:
    uid_file = tmp_path / "uids.txt"
    uid_file.write_bytes(content)
    result = download("--datasets", "full_scale", "--video_uid_file", str(uid_file))
    assert result.code == 2
    assert "contains no UIDs" in result.error_line()


def test_uid_file_not_utf8(download: Download, tmp_path: Path) -> None:
    uid_file = tmp_path / "uids.txt"
    uid_file.write_bytes(b"\xff\xfe\x00a")
    result = download("--datasets", "full_scale", "--video_uid_file", str(uid_file))
    assert result.code == 2
    assert "cannot read uid file" in result.error_line()


def test_unknown_profile(download: Download) -> None:
    result = download("--datasets", "annotations", "--aws_profile_name", "no-such-profile")
    assert result.code == 2
    line = result.error_line()
    assert "'no-such-profile' not found" in line and "aws configure" in line


def test_missing_credentials(
    sandbox: Sandbox,
    release: SeededRelease,
    aws_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No keys anywhere (the shared credentials file is empty): exit 3 and say so."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = cli(
        "download", "-o", str(tmp_path / "out"), "--endpoint-url", sandbox.endpoint_url, "--yes"
    )
    assert result.code == 3
    assert "no AWS credentials found" in result.error_line()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1:8333",
        "127.0.0.1:8333",
        "http://",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:port",
        "http://127.0.0.1:8333/?x=1",
        "http://exa mple.com",
    ],
)
def test_malformed_endpoint_url(url: str, tmp_path: Path, aws_env: dict[str, str]) -> None:
    result = cli("download", "-o", str(tmp_path / "out"), "--endpoint-url", url, "--yes")
    assert result.code == 2
    assert "invalid --endpoint-url" in result.error_line()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param({"concurrency": "many"}, "must be an integer", id="int-as-string"),
        pytest.param({"concurrency": True}, "must be an integer", id="int-as-bool"),
        pytest.param({"datasets": 5}, "must be a list of strings", id="list-as-int"),
        pytest.param({"datasets": ["a", 1]}, "must be a list of strings", id="list-of-mixed"),
        pytest.param({"yes": "yes"}, "must be true or false", id="bool-as-string"),
        pytest.param({"stall_timeout": "10"}, "must be a number", id="float-as-string"),
        pytest.param({"output_directory": ["a"]}, "must be a string", id="str-as-list"),
        pytest.param({"concurency": 4}, "unknown option", id="misspelt-key"),
        pytest.param(["datasets"], "must hold a JSON object", id="not-an-object"),
    ],
)
def test_config_file_with_wrong_types(
    config: object, message: str, tmp_path: Path, aws_env: dict[str, str]
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    result = cli("download", "-o", str(tmp_path / "out"), "--config", str(path), "--yes")
    assert result.code == 2
    assert message in result.error_line()


def test_config_file_not_json(tmp_path: Path, aws_env: dict[str, str]) -> None:
    path = tmp_path / "config.json"
    path.write_text("{datasets: [annotations]", encoding="utf-8")
    result = cli("download", "-o", str(tmp_path / "out"), "--config", str(path), "--yes")
    assert result.code == 2
    assert "is not valid JSON" in result.error_line()


def test_config_file_missing(tmp_path: Path, aws_env: dict[str, str]) -> None:
    path = tmp_path / "config.json"
    result = cli("download", "-o", str(tmp_path / "out"), "--config", str(path), "--yes")
    assert result.code == 2
    assert "does not exist" in result.error_line()
