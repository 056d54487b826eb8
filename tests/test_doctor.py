"""``ego4d-dl doctor``: each common failure explained in plain words, with its exit code."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from pathlib import Path

import pytest

from ego4d_dl.config import Credentials, Options, parse_endpoint
from ego4d_dl.doctor import diagnose
from ego4d_dl.results import Blame, Severity
from ego4d_dl.sandbox import ACCESS_KEY_ID, Sandbox, SeededRelease
from tests.support.cli import cli
from tests.support.smallfs import run_on_small_fs, small_fs_available

# The sandbox's key id (AKIAEGO4DSANDBOXUSER) as doctor shows it, its first four and last five
# characters, written out rather than computed by the code under test.
MASKED = "AKIA...XUSER"


def _doctor(out: Path, endpoint: str, *extra: str) -> tuple[int, dict[str, tuple[str, str]]]:
    done = cli(
        "doctor", "-o", str(out), "--datasets", "clips", "--endpoint-url", endpoint, "--json",
        *extra,
    )  # fmt: skip
    doc = json.loads(done.stdout)
    assert doc["would_start"] == (done.code == 0)
    return done.code, {f["check"]: (f["severity"], f["detail"]) for f in doc["findings"]}


def test_a_healthy_setup_would_start(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    code, found = _doctor(tmp_path / "out", sandbox.endpoint_url)
    assert code == 0, found
    assert found["credentials"][0] == "ok"
    assert MASKED in found["credentials"][1] and ACCESS_KEY_ID not in found["credentials"][1]
    assert "environment" in found["credentials"][1]
    assert found["clock"][0] == "ok"
    assert found["keys"][0] == "ok"
    buckets = {f.obj.bucket for f in release.for_dataset("clips")}
    for bucket in buckets:
        assert found[f"bucket {bucket}"] == ("ok", "region us-east-1, 1 file readable")
    assert found["disk space"][0] == "ok"
    assert found["output directory"][0] == "ok"
    assert "no proxy" in found["proxy"][1]

    human = cli("doctor", "-o", str(tmp_path), "--datasets", "clips", "--endpoint-url",
                   sandbox.endpoint_url)  # fmt: skip
    assert human.code == 0
    assert "A download would start." in human.stdout


def test_a_missing_profile_is_named_with_the_fix(
    sandbox: Sandbox, aws_env: dict[str, str], tmp_path: Path
) -> None:
    code, found = _doctor(tmp_path, sandbox.endpoint_url, "--aws_profile_name", "ego4d")
    assert code == 2
    severity, detail = found["credentials"]
    assert severity == "fail"
    assert "profile 'ego4d' not found" in detail
    assert "aws configure --profile ego4d" in detail
    assert found["keys"][0] == "skip"

    human = cli("doctor", "-o", str(tmp_path), "--aws_profile_name", "ego4d",
                   "--endpoint-url", sandbox.endpoint_url)  # fmt: skip
    assert human.code == 2
    assert "A download would not start" in human.stdout
    assert "Traceback" not in human.stdout + human.stderr


def test_no_keys_at_all(
    sandbox: Sandbox, aws_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    code, found = _doctor(tmp_path, sandbox.endpoint_url)
    assert code == 3
    assert found["credentials"][0] == "fail"
    assert "no AWS keys found" in found["credentials"][1]


def test_a_wrong_secret_is_told_apart_from_a_wrong_key_id(
    sandbox: Sandbox, aws_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-of-this-key-id-000000000")
    code, found = _doctor(tmp_path, sandbox.endpoint_url)
    assert code == 3
    severity, detail = found["keys"]
    assert severity == "fail"
    assert f"the secret key does not belong to key id {MASKED}" in detail

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEGO4DNOSUCHKEYID")
    code, found = _doctor(tmp_path, sandbox.endpoint_url)
    assert code == 3
    assert "S3 does not know key id AKIA...KEYID" in found["keys"][1]


def test_an_unreachable_endpoint(aws_env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    code, found = _doctor(tmp_path, f"http://127.0.0.1:{port}")
    assert code == 1
    severity, detail = found["endpoint"]
    assert severity == "fail"
    assert f"cannot reach http://127.0.0.1:{port}" in detail
    assert "proxy" in detail


def test_a_bogus_profile_region_is_flagged_and_ignored(
    sandbox: Sandbox,
    release: SeededRelease,
    aws_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What `aws configure` leaves when one presses Enter through "Default region name: none".
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    Path(aws_env["AWS_CONFIG_FILE"]).write_text("[default]\nregion = none\n", encoding="utf-8")
    code, found = _doctor(tmp_path, sandbox.endpoint_url)
    assert code == 0
    severity, detail = found["profile region"]
    assert severity == "warn" and "'none' is not a region" in detail


def test_a_skewed_clock_is_measured_against_the_server(
    sandbox: Sandbox, aws_env: dict[str, str], tmp_path: Path
) -> None:
    options = Options(
        output_directory=tmp_path,
        version="v2_1",
        datasets=("clips",),
        credentials=Credentials(),
        endpoint=parse_endpoint(sandbox.endpoint_url),
    )
    diagnosis = asyncio.run(diagnose(options, now=lambda: time.time() + 3600))
    clock = next(f for f in diagnosis.findings if f.check == "clock")
    assert clock.severity is Severity.FAIL
    assert "60 minutes ahead of the server's" in clock.detail
    assert diagnosis.blame is Blame.CREDENTIALS


@pytest.mark.skipif(not small_fs_available(), reason="cannot mount a tmpfs here (unshare)")
def test_low_disk_space_against_the_plan(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    done = run_on_small_fs(
        mount,
        "2m",
        [sys.executable, "-m", "ego4d_dl", "doctor", "-o", str(mount / "out"), "--datasets",
         "clips", "--endpoint-url", sandbox.endpoint_url],
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    need = sum(f.obj.size_bytes for f in release.for_dataset("clips")) + release.metadata.size_bytes
    shown = f"FAIL  disk space: the plan fetches {need / 2**20:.1f} MiB but only 2.0 MiB are free"
    assert shown in done.stdout
    assert "A download would not start" in done.stdout
