"""Free space: a download refuses to start when the disk cannot hold what it would fetch.

The output directory is a real 2 MiB tmpfs (``smallfs``), the download about 11 MiB.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from ego4d_dl.sandbox import Sandbox, SeededRelease
from tests.support.smallfs import run_on_small_fs, small_fs_available

pytestmark = pytest.mark.skipif(
    not small_fs_available(), reason="cannot mount a tmpfs here (unshare)"
)


def _download(mount: Path, sandbox: Sandbox, *extra: str) -> tuple[int, str]:
    done = run_on_small_fs(
        mount,
        "2m",
        [sys.executable, "-m", "ego4d_dl", "download", "-o", str(mount / "out"),
         "--datasets", "clips", "--endpoint-url", sandbox.endpoint_url, "--yes", *extra],
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_download_refuses_to_start_without_the_space(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    need = sum(f.obj.size_bytes for f in release.for_dataset("clips"))
    need += release.metadata.size_bytes
    code, output = _download(mount, sandbox)
    assert code == 1, output
    # The manifests are saved before the check, so a little less than 2 MiB is left.
    shown = re.escape(f"not enough free space in {mount / 'out'}: {need / 2**20:.1f} MiB ")
    shown += re.escape(f"({need:,} bytes) more needed, ") + r"[12]\.\d MiB \([\d,]+ bytes\) free"
    assert re.search(shown, output), output
    assert "pass --no-space-check" in output
    assert "Traceback" not in output
    assert "Starting" not in output  # refused before the confirmation, before any transfer


def test_no_space_check_starts_anyway_and_fails_cleanly(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    code, output = _download(mount, sandbox, "--no-space-check")
    assert code == 1, output
    assert "not enough free space" not in output
    assert "no space left on device" in output
    assert "run the same command again to resume" in output
    assert "Traceback" not in output
