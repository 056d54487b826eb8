"""Manifest parsing: the original CLI's formats, malformed rows by line, unsafe keys."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from ego4d_dl.errors import ManifestError
from ego4d_dl.manifest import (
    FileKind,
    MalformedRow,
    ManifestRow,
    Selection,
    parse_benchmarks,
    parse_manifest,
    parse_s3_url,
)


def rows(text: str) -> list[ManifestRow | MalformedRow]:
    _, it = parse_manifest(io.StringIO(text, newline=""), source="test")
    return list(it)


def test_video_rows_land_as_uid_mp4() -> None:
    (row,) = rows(
        "video_uid,canonical_s3_location,type,benchmarks\n"
        "abc-1,s3://ego4d-cmu/public/v2/full_scale/xyz.mp4,mp4,[FHO|EM]\n"
    )
    assert isinstance(row, ManifestRow)
    assert (row.uid, row.bucket, row.key) == ("abc-1", "ego4d-cmu", "public/v2/full_scale/xyz.mp4")
    assert row.kind is FileKind.VIDEO
    assert row.filename == "abc-1.mp4"
    assert row.benchmarks == {"fho", "em"}
    assert row.university == "cmu"
    assert row.line == 2


def test_file_rows_keep_key_basename() -> None:
    (row,) = rows(
        "file_uid,s3_path,type\nf1,s3://ego4d-consortium-sharing/a/b/narration.json,file\n"
    )
    assert isinstance(row, ManifestRow)
    assert row.kind is FileKind.FILE
    assert row.filename == "narration.json"


def test_type_column_overrides_uid_column_kind() -> None:
    a, b = rows(
        "file_uid,s3_path,type\nu1,s3://ego4d-cmu/x/v.bin,mp4\nu2,s3://ego4d-cmu/x/w.json,json\n"
    )
    assert isinstance(a, ManifestRow) and a.filename == "u1.mp4"
    assert isinstance(b, ManifestRow) and b.filename == "w.json"


def test_malformed_rows_reported_with_line_numbers() -> None:
    parsed = rows(
        "video_uid,canonical_s3_location\n"
        "good,s3://ego4d-cmu/k/good.mp4\n"
        ",s3://ego4d-cmu/k/nouid.mp4\n"
        "nos3,https://example.com/x.mp4\n"
        "nokey,s3://ego4d-cmu/\n"
        "\n"
        "dots,s3://ego4d-cmu/a/../../etc/passwd\n"
        "abs,s3://ego4d-cmu//etc/passwd\n"
        "bad/uid,s3://ego4d-cmu/k/x.mp4\n"
    )
    good = [r for r in parsed if isinstance(r, ManifestRow)]
    bad = [r for r in parsed if isinstance(r, MalformedRow)]
    assert [r.uid for r in good] == ["good"]
    assert [b.line for b in bad] == [3, 4, 5, 7, 8, 9]
    assert "no uid" in bad[0].reason
    assert "s3://bucket/key" in bad[1].reason
    assert "'..'" in bad[3].reason
    assert "absolute" in bad[4].reason
    assert "safe file name" in bad[5].reason


def test_file_row_whose_basename_is_dotdot_is_refused() -> None:
    (row,) = rows("file_uid,s3_path\nf,s3://ego4d-cmu/a/..\n")
    assert isinstance(row, MalformedRow)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("uid,location\n", "no uid column"),
        ("video_uid,where\nx,y\n", "no location column"),
    ],
)
def test_whole_manifest_problems_raise(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest(io.StringIO(text), source="m.csv")


def test_header_names_are_case_insensitive() -> None:
    header, it = parse_manifest(
        io.StringIO("Video_UID,S3_Path,Benchmarks\nu,s3://ego4d-cmu/x.mp4,[AV]\n"), source="m"
    )
    assert header.has_benchmarks
    (row,) = list(it)
    assert isinstance(row, ManifestRow) and row.benchmarks == {"av"}


def test_parse_benchmarks_ignores_case_and_spaces() -> None:
    assert parse_benchmarks("[ FHO | em ]") == {"fho", "em"}
    assert parse_benchmarks("") == frozenset()
    assert parse_benchmarks("[AV]") == {"av"}


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://ego4d-cmu/a/b.mp4") == ("ego4d-cmu", "a/b.mp4")
    assert parse_s3_url("s3://Bad_Bucket/a") is None
    assert parse_s3_url("s3:/ego4d-cmu/a") is None
    assert parse_s3_url("s3://ego4d-cmu") is None


def test_selection_filters() -> None:
    (row,) = rows("video_uid,s3_path,benchmarks\nu,s3://ego4d-unict-milan/x.mp4,[FHO]\n")
    assert isinstance(row, ManifestRow)
    assert Selection().admits(row)
    assert Selection(benchmarks=frozenset({"fho"})).admits(row)
    assert not Selection(benchmarks=frozenset({"em"})).admits(row)
    assert Selection(universities=frozenset({"unict"})).admits(row)
    assert not Selection(universities=frozenset({"cmu"})).admits(row)


def test_parsing_streams_rows() -> None:
    consumed = []

    def lines() -> Iterator[str]:
        yield "video_uid,s3_path\n"
        for i in range(3):
            consumed.append(i)
            yield f"u{i},s3://ego4d-cmu/v{i}.mp4\n"

    _, it = parse_manifest(lines(), source="gen")
    first = next(it)
    assert isinstance(first, ManifestRow) and first.uid == "u0"
    assert consumed == [0]
