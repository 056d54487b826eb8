"""The original CLI's own test cases (ego4d==1.7.3: ``ego4d/cli/config_test.py``,
``manifest_test.py``, ``s3path_test.py``), ported to ego4d-dl.

Each case keeps the original's inputs and expectations, stated against ego4d-dl's parsing
(the real command-line path, config files, manifests, S3 URLs). Where the original package is
installed (the ``test`` extra), the same inputs also go through its functions and the two
answers are compared, so a port that drifted from the original cannot pass.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import typer

from ego4d_dl.catalog import BUCKET_TO_UNIVERSITY
from ego4d_dl.cli import app
from ego4d_dl.cli.options import typed_values
from ego4d_dl.config import Options, build_options
from ego4d_dl.errors import ConfigError
from ego4d_dl.families.ego4d import select_rows
from ego4d_dl.manifest import ManifestRow, Selection, parse_manifest, parse_s3_url


def _original(module: str) -> ModuleType | None:
    """A module of the original CLI, or None where it is not installed."""
    try:
        return __import__(f"ego4d.cli.{module}", fromlist=["_"])
    except ImportError:
        return None


def parse_command_line(argv: Sequence[str]) -> Options:
    """``ego4d-dl argv`` parsed as the command would parse it, without running it.

    The same path as a real run: the group's argparse-compatible rewriting (no subcommand means
    ``download``), click's parsing of the command, the config file, then ``build_options``.
    Usage errors come out as ``typer.Exit``/click exceptions; bad values as ``ConfigError``.
    """
    group: Any = typer.main.get_command(app)
    with group.make_context("ego4d-dl", list(argv)) as ctx:
        # click keeps the subcommand's name apart ("protected") until it invokes it.
        protected: list[str] = (
            ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
        )
        args: list[str] = [*protected, *ctx.args]
        name, rest = args[0], args[1:]
        command = group.get_command(ctx, name)
        with command.make_context(name, rest, parent=ctx) as sub:
            return build_options(typed_values(sub))[0]


def _usage_error(argv: Sequence[str]) -> None:
    """``argv`` is refused as a usage error, exit code 2 (argparse's SystemExit(2))."""
    with pytest.raises(Exception) as caught:  # click's UsageError family, from typer's copy
        parse_command_line(argv)
    assert getattr(caught.value, "exit_code", None) == 2, caught.value


HOME = str(Path("~/test").expanduser())
HOME2 = str(Path("~/test2").expanduser())


# --- config_test.py ---------------------------------------------------------------------------


def test_invalid_flags(tmp_path: Path) -> None:
    # missing required flag output_directory (the original: RuntimeError)
    with pytest.raises(ConfigError, match="missing --output_directory"):
        parse_command_line(["--version=v1", "--datasets", "full_scale"])
    # invalid university choice (the original: argparse's SystemExit)
    with pytest.raises(ConfigError, match="unknown university 'fake'"):
        parse_command_line(
            ["--datasets", "full_scale", "--output_directory=~/test", "--version=v1",
             "--universities", "cmu", "fake"]
        )  # fmt: skip
    # unrecognized flag
    _usage_error(
        ["--datasets", "full_scale", "--output_directory=~/test", "--version=v1",
         "--fake_flag=123"]
    )  # fmt: skip
    # --video_uids with --video_uid_file
    with pytest.raises(ConfigError, match="mutually exclusive"):
        parse_command_line(
            ["--datasets", "full_scale", "--output_directory=~/test", "--version=v1",
             "--video_uids", "123", "456", f"--video_uid_file={tmp_path / 'uids'}"]
        )  # fmt: skip


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_valid_flags_and_version_flags(version: str) -> None:
    argv = [
        "--datasets", "full_scale", "--output_directory=~/test", f"--version={version}",
        "--universities", "cmu", "indiana", "--aws_profile_name=ego4d",
        "--video_uids", "123", "456", "789", "--metadata",
    ]  # fmt: skip
    c = parse_command_line(argv)
    assert c.version == version
    assert c.datasets == ("full_scale",)
    assert c.universities == {"cmu", "indiana"}
    assert str(c.output_directory) == HOME
    assert c.credentials.profile == "ego4d"
    assert c.video_uids == {"123", "456", "789"}
    assert c.metadata is True
    config = _original("config")
    if config is not None:
        theirs = config.config_from_args(argv)
        assert (theirs.version, theirs.datasets) == (c.version, list(c.datasets))
        assert set(theirs.universities) == set(c.universities)
        assert set(theirs.video_uids) == set(c.video_uids)
        assert (theirs.aws_profile_name, theirs.metadata) == ("ego4d", True)


def test_video_uid_file(tmp_path: Path) -> None:
    uid_file = tmp_path / "uids"
    uid_file.write_text("123 456\n789")
    argv = ["--datasets", "full_scale", "--output_directory=~/test", "--version=v1",
            f"--video_uid_file={uid_file}"]  # fmt: skip
    assert parse_command_line(argv).video_uids == {"123", "456", "789"}
    config = _original("config")
    if config is not None:
        assert config.config_from_args(argv).video_uids == ["123", "456", "789"]


def test_json_file(tmp_path: Path) -> None:
    conf = {
        "version": "v1",
        "datasets": ["full_scale"],
        "universities": ["cmu", "indiana"],
        "output_directory": "~/test",
        "aws_profile_name": "ego4d",
        "video_uids": ["123", "456", "789"],
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(conf))

    # JSON values should be loaded into config
    c = parse_command_line([f"--config_path={path}"])
    assert c.version == "v1"
    assert c.datasets == ("full_scale",)
    assert c.universities == {"cmu", "indiana"}
    assert str(c.output_directory) == HOME
    assert c.credentials.profile == "ego4d"
    assert c.video_uids == {"123", "456", "789"}

    # JSON values should be overridden by flags that are also specified on the command line
    c = parse_command_line(
        [f"--config_path={path}", "--output_directory=~/test2", "--video_uids", "000", "000"]
    )
    assert c.version == "v1"
    assert c.datasets == ("full_scale",)
    assert c.universities == {"cmu", "indiana"}
    assert str(c.output_directory) == HOME2
    assert c.credentials.profile == "ego4d"
    assert c.video_uids == {"000"}

    # video_uid_file on the command line with video_uids in the JSON file is an error
    with pytest.raises(ConfigError, match="mutually exclusive"):
        parse_command_line(
            [f"--config_path={path}", "--output_directory=~/test2", "--video_uid_file=~/uid_file"]
        )


def test_config_files_may_hold_every_key_of_the_original(tmp_path: Path) -> None:
    """Beyond the original's tests: keys it reads as its argparse dests (issue 14, case 3)."""
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "output_directory": "~/test",
                "datasets": ["clips"],
                "assume_yes": True,
                "metadata": False,
                "manifest": True,
                "bypass_version_check": True,
                "skip_s3_checks": True,
                "manifest_override_path": "~/m.csv",
                "annotations": ["narration", "fho"],
                "list_datasets": False,
            }
        )
    )
    c = parse_command_line([f"--config_path={path}"])
    assert (c.assume_yes, c.metadata, c.release_manifest) == (True, False, True)
    assert c.manifest_override == Path("~/m.csv").expanduser()
    config = _original("config")
    if config is not None:
        theirs = config.config_from_args([f"--config_path={path}"])
        assert (theirs.bypass_version_check, theirs.skip_s3_checks) == (True, True)


# --- manifest_test.py -------------------------------------------------------------------------


def _manifest(fieldnames: Sequence[str], rows: Sequence[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _selected(
    text: str,
    *,
    universities: frozenset[str] = frozenset(),
    benchmarks: frozenset[str] = frozenset(),
) -> Iterator[ManifestRow]:
    """The original's ``list_videos_in_manifest``: rows of a video manifest the filters admit."""
    header, rows = parse_manifest(io.StringIO(text, newline=""), source="test")
    chosen = select_rows(
        "full_scale", header, rows, Selection(universities=universities, benchmarks=benchmarks)
    )
    assert not chosen.malformed
    return iter(chosen.rows)


def _original_uids(tmp_path: Path, text: str, **filters: set[str]) -> list[str] | None:
    manifest = _original("manifest")
    if manifest is None:
        return None
    path = tmp_path / "manifest.csv"
    path.write_text(text)
    found = manifest.list_videos_in_manifest(
        path, filters.get("benchmarks", set()), filters.get("universities", set())
    )
    return [v.uid for v in found]


def test_constructor() -> None:
    row = {
        "video_uid": "12345",
        "canonical_s3_location": "s3://ego4d-georgiatech/object/key/123",
    }
    (metadata,) = _selected(_manifest(list(row), [row]))
    # Known university
    assert metadata.uid == "12345"
    assert (metadata.bucket, metadata.key) == ("ego4d-georgiatech", "object/key/123")
    assert metadata.university == BUCKET_TO_UNIVERSITY["ego4d-georgiatech"]
    # Unknown university
    row["canonical_s3_location"] = "s3://unrecognized-university/object/key/123"
    (unknown_univ,) = _selected(_manifest(list(row), [row]))
    assert (unknown_univ.bucket, unknown_univ.key) == ("unrecognized-university", "object/key/123")
    assert not unknown_univ.university


def test_csv_reader(tmp_path: Path) -> None:
    text = _manifest(
        ["video_uid", "canonical_s3_location"],
        [
            {
                "video_uid": "12345",
                "canonical_s3_location": "s3://ego4d-georgiatech/object/key/123",
            },
            {
                "video_uid": "7890",
                "canonical_s3_location": "s3://unrecognized-university/other/key/456",
            },
        ],
    )
    # The full selection returns both videos
    full = _selected(text)
    metadata = next(full)
    assert metadata.uid == "12345"
    assert (metadata.bucket, metadata.key) == ("ego4d-georgiatech", "object/key/123")
    assert metadata.university == BUCKET_TO_UNIVERSITY["ego4d-georgiatech"]
    metadata = next(full)
    assert metadata.uid == "7890"
    assert (metadata.bucket, metadata.key) == ("unrecognized-university", "other/key/456")
    assert not metadata.university
    with pytest.raises(StopIteration):
        next(full)
    # Georgia Tech only returns one video
    georgiatech = _selected(text, universities=frozenset({"georgiatech"}))
    metadata = next(georgiatech)
    assert metadata.uid == "12345"
    with pytest.raises(StopIteration):
        next(georgiatech)
    if (theirs := _original_uids(tmp_path, text, universities={"georgiatech"})) is not None:
        assert theirs == ["12345"]
        assert _original_uids(tmp_path, text) == ["12345", "7890"]


def test_csv_benchmarks(tmp_path: Path) -> None:
    text = _manifest(
        ["video_uid", "canonical_s3_location", "benchmarks"],
        [
            {
                "video_uid": "12345",
                "canonical_s3_location": "s3://ego4d-georgiatech/object/key/123",
                "benchmarks": "[FHO |EM]",
            },
            {
                "video_uid": "7890",
                "canonical_s3_location": "s3://unrecognized-university/other/key/456",
                "benchmarks": "",
            },
            {
                "video_uid": "6789",
                "canonical_s3_location": "s3://unrecognized-university/other/key/456",
                "benchmarks": "[]",
            },
            {
                "video_uid": "23456",
                "canonical_s3_location": "s3://unrecognized-university/other/key/456",
                "benchmarks": "[ EM]",
            },
        ],
    )
    assert [m.uid for m in _selected(text)] == ["12345", "7890", "6789", "23456"]
    # EM only returns two videos
    assert [m.uid for m in _selected(text, benchmarks=frozenset({"em"}))] == ["12345", "23456"]
    if (theirs := _original_uids(tmp_path, text, benchmarks={"em"})) is not None:
        assert theirs == ["12345", "23456"]


# --- s3path_test.py ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "bucket", "key"),
    [
        ("s3://bucket/key", "bucket", "key"),  # test_key_without_slashes
        ("s3://bucket/object/key", "bucket", "object/key"),  # test_key_with_slashes
        ("s3://bucket-with.chars/object/key", "bucket-with.chars", "object/key"),
        ("s3://bucket-name/object/key.json", "bucket-name", "object/key.json"),
        (
            "s3://bucket-name/object$-/data/folder/key.json",  # test_key_path_with_special_chars
            "bucket-name",
            "object$-/data/folder/key.json",
        ),
    ],
)
def test_bucket_and_key_from_path(path: str, bucket: str, key: str) -> None:
    assert parse_s3_url(path) == (bucket, key)
    s3path = _original("s3path")
    if s3path is not None:
        assert s3path.bucket_and_key_from_path(path) == (bucket, key)
