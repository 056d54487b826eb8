"""Directories turned into tiny tmpfs mounts, to meet a full (or read-only) disk honestly.

``run_on_small_fs`` mounts in a private mount namespace (``unshare``) that ends with the
command, so nothing is left mounted whatever happens. As root ``unshare --mount`` suffices;
otherwise a user namespace maps us to root in it (``--map-root-user``), where the kernel allows
that. ``tmpfs_at`` mounts in this process's namespace, for in-process tests, and skips the test
where mounting is not allowed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["run_on_small_fs", "small_fs_available", "tmpfs_at"]

_SCRIPT = 'mount -t tmpfs -o "size=$1" tmpfs "$2" && shift 2 && exec "$@"'


def _unshare() -> list[str]:
    return (
        ["unshare", "--mount"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--mount"]
    )


@functools.cache
def small_fs_available() -> bool:
    """Whether this machine lets us mount a tmpfs in a private namespace."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [*_unshare(), "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || exit 1"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def run_on_small_fs(
    mountpoint: Path, size: str, argv: list[str], *, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with ``mountpoint`` (an existing directory) a tmpfs of ``size`` (``2m``)."""
    return subprocess.run(
        [*_unshare(), "sh", "-c", _SCRIPT, "sh", size, str(mountpoint), *argv],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@contextlib.contextmanager
def tmpfs_at(mountpoint: Path, options: str) -> Iterator[Path]:
    """Mount a tmpfs with ``options`` (``size=6m``, ``ro,size=1m``) on a new directory; the test
    is skipped where this machine does not allow the mount (CI runs as root)."""
    mountpoint.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
