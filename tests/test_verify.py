"""``ego4d-dl verify``: damage injected on disk is found, reported and, with --repair, fixed."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ego4d_dl.journal import Journal, journal_path
from ego4d_dl.sandbox import Sandbox, SeededFile, SeededRelease
from tests.support.cli import cli
from tests.support.seed import tree_md5

MiB = 1024 * 1024


def _flip_byte_keeping_size_and_mtime(path: Path, offset: int) -> None:
    """Bit rot: one byte changes, size and modification time do not."""
    st = path.stat()
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _pick(release: SeededRelease, dataset: str, parts: int) -> SeededFile:
    return next(
        f
        for f in release.for_dataset(dataset)
        if len(f.obj.part_sizes_bytes) == parts and f.obj.size_bytes > 1000
    )


def _verdicts(stdout: str) -> dict[str, tuple[str, str]]:
    doc = json.loads(stdout)
    return {f["destination"]: (f["verdict"], f["level"]) for f in doc["files"]}


@pytest.fixture
def downloaded(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> Path:
    out = tmp_path / "out"
    done = cli(
        "download", "-o", str(out), "--datasets", "clips", "annotations",
        "--endpoint-url", sandbox.endpoint_url, "--yes", "--quiet",
    )  # fmt: skip
    assert done.code == 0, done.stderr
    return out


def test_verify_finds_damage_and_repair_fixes_it(
    downloaded: Path, sandbox: Sandbox, release: SeededRelease
) -> None:
    out = downloaded
    args: tuple[str, ...] = ("-o", str(out), "--datasets", "clips", "annotations")
    args += ("--endpoint-url", sandbox.endpoint_url)
    video = _pick(release, "clips", parts=3)  # multipart: a composite ETag
    truncated = next(f for f in release.for_dataset("annotations") if f.obj.size_bytes == MiB)
    deleted = next(f for f in release.for_dataset("annotations") if f.obj.size_bytes == 4096)
    _flip_byte_keeping_size_and_mtime(out / video.relpath, 5 * MiB + 17)  # in part 2 of 3
    os.truncate(out / truncated.relpath, 1000)
    (out / deleted.relpath).unlink()

    found = cli("verify", *args, "--json")
    assert found.code == 1, found.stderr
    verdicts = _verdicts(found.stdout)
    assert verdicts.pop(video.relpath) == ("corrupt", "")
    assert verdicts.pop(truncated.relpath) == ("truncated", "")
    assert verdicts.pop(deleted.relpath) == ("missing", "")
    assert {v for v, _ in verdicts.values()} == {"ok"}
    assert (
        len(verdicts)
        == len(release.for_dataset("clips")) + len(release.for_dataset("annotations")) - 3 + 1
    )  # + ego4d.json
    # The verdict is kept: the next download refetches the corrupt file despite its size.
    plan = json.loads(cli("plan", *args, "--json").stdout)
    actions = {
        Path(f["destination"]).relative_to(out).as_posix(): f["action"]
        for ds in plan["datasets"]
        for f in ds["files"]
    }
    assert actions[video.relpath] == "refetch"

    human = cli("verify", *args)
    assert human.code == 1
    assert f"corrupt: {video.relpath}" in human.stdout
    assert "--repair" in human.stdout

    repaired = cli("verify", *args, "--repair", "--json")
    assert repaired.code == 0, repaired.stderr
    doc = json.loads(repaired.stdout)
    assert doc["repair"]["verified"] == 3
    assert doc["repair"]["bytes_fetched"] == (
        video.obj.size_bytes + truncated.obj.size_bytes + deleted.obj.size_bytes
    )
    truth = {
        f.relpath: f.obj.md5_hex for f in release.files if f.dataset in ("clips", "annotations")
    }
    tree = tree_md5(out)
    assert {rel: tree[rel] for rel in truth} == truth

    again = cli("verify", *args, "--json")
    assert again.code == 0
    assert {v for v, _ in _verdicts(again.stdout).values()} == {"ok"}


def test_verify_without_a_journal_plans_from_the_manifests(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    # A copy with no journal, including a video whose parts are not uniform (5, 7, 9, 3 MiB):
    # its layout must be learnt part by part.
    uneven = next(
        f for f in release.files if f.obj.part_sizes_bytes == (5 * MiB, 7 * MiB, 9 * MiB, 3 * MiB)
    )
    single = next(f for f in release.for_dataset("clips") if not f.obj.part_sizes_bytes)
    out = tmp_path / "out"
    args: tuple[str, ...] = ("-o", str(out), "--datasets", "full_scale", "clips")
    args += ("--video_uids", uneven.uid, _pick(release, "clips", parts=3).uid, single.uid)
    args += ("--endpoint-url", sandbox.endpoint_url, "--no-metadata")
    done = cli("download", *args, "--yes", "--quiet")
    assert done.code == 0, done.stderr
    shutil.rmtree(out / ".ego4d-dl")
    copy = out / single.relpath
    copy.write_bytes(b"\0" * single.obj.size_bytes)  # right size, wrong bytes

    found = cli("verify", *args, "--json")
    assert found.code == 1, found.stderr
    verdicts = _verdicts(found.stdout)
    assert verdicts[uneven.relpath] == ("ok", "composite-md5")
    assert verdicts[single.relpath] == ("corrupt", "")
    with Journal(journal_path(out), readonly=True) as journal:
        entry = journal.get(uneven.relpath)
        assert entry is not None and entry.complete
        assert entry.layout == uneven.obj.part_sizes_bytes and entry.layout_exact


def test_verify_refuses_a_missing_directory(tmp_path: Path, aws_env: dict[str, str]) -> None:
    done = cli("verify", "-o", str(tmp_path / "nope"))
    assert done.code == 2
    assert "does not exist" in done.stderr
