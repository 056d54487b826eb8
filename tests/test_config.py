"""Option validation: config files, uid files, endpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ego4d_dl.config import load_config_file, parse_endpoint, read_uid_file
from ego4d_dl.errors import ConfigError


def test_config_file_accepts_both_spellings(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "output_directory": "~/x",
                "datasets": ["clips"],
                "aws-profile-name": "ego4d",
                "assume_yes": True,
                "concurrency": 4,
                "benchmarks": "FHO EM",
            }
        )
    )
    cfg = load_config_file(path)
    assert cfg == {
        "output_directory": "~/x",
        "datasets": ["clips"],
        "aws_profile_name": "ego4d",
        "yes": True,
        "concurrency": 4,
        "benchmarks": ["FHO", "EM"],
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"datasets": 3}', "list of strings"),
        ('{"concurrency": "many"}', "must be an integer"),
        ('{"concurrency": true}', "must be an integer"),
        ('{"yes": "yes"}', "must be true or false"),
        ('{"output_directory": 5}', "must be a string"),
        ('{"colour": "blue"}', "unknown option"),
    ],
)
def test_bad_config_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config_file(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "nope.json")


def test_uid_file(tmp_path: Path) -> None:
    path = tmp_path / "uids.txt"
    path.write_text("a b\n c\n\n")
    assert read_uid_file(path) == {"a", "b", "c"}
    path.write_text("  \n")
    with pytest.raises(ConfigError, match="no UIDs"):
        read_uid_file(path)
    with pytest.raises(ConfigError, match="does not exist"):
        read_uid_file(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    "url", ["127.0.0.1:8333", "ftp://host", "http://", "http://host:notaport", "http://h/?x=1"]
)
def test_bad_endpoints(url: str) -> None:
    with pytest.raises(ConfigError, match="invalid --endpoint-url"):
        parse_endpoint(url)


def test_endpoints_and_bogus_regions() -> None:
    ep = parse_endpoint("http://127.0.0.1:8333/")
    assert ep.url == "http://127.0.0.1:8333"
    assert ep.region == "us-east-1"
    assert parse_endpoint(None, "none").region is None
    assert parse_endpoint(None, "eu-central-1").region == "eu-central-1"
