"""Adopting downloads made by the original CLI (ego4d==1.7.3), run for real against the sandbox.

The original CLI (in the ``test`` extra) is run once per module with the tests' own Python,
pointed at the sandbox with ``AWS_ENDPOINT_URL_S3``; each test works on a copy of what it
left (mtimes kept).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ego4d_dl.adopt import leftover_temp_files, read_version_file
from ego4d_dl.journal import Journal, journal_path
from ego4d_dl.ondisk import ObjectVersion
from ego4d_dl.planned import Action, PlannedFile
from ego4d_dl.sandbox import Sandbox, SeededRelease
from ego4d_dl.versionfile import read_entries
from tests.support.cli import ORIGINAL_PYTHON, cli, json_lines, original_cli_installed
from tests.support.seed import tree_md5

DATASETS = ("clips", "annotations")


def _truth(release: SeededRelease) -> dict[str, str]:
    truth = {f.relpath: f.obj.md5_hex for f in release.files if f.dataset in DATASETS}
    truth["ego4d.json"] = release.metadata.md5_hex
    return truth


@pytest.fixture(scope="module")
def original_tree(
    sandbox: Sandbox, release: SeededRelease, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """An output directory filled by the original ``ego4d`` CLI from the sandbox."""
    assert original_cli_installed(), "install the test extra: pip install -e '.[test]'"
    home = tmp_path_factory.mktemp("original-home")
    keys = sandbox.env()
    credentials = home / "credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {keys['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {keys['AWS_SECRET_ACCESS_KEY']}\n",
        encoding="utf-8",
    )
    (home / "config").write_text("[default]\nregion = us-east-1\n", encoding="utf-8")
    out = home / "out"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_ENDPOINT_URL_S3": sandbox.endpoint_url,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    done = subprocess.run(
        [str(ORIGINAL_PYTHON), "-m", "ego4d.cli.cli", "--output_directory", str(out),
         "--datasets", *DATASETS, "--version", release.version, "--metadata", "-y"],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    tree = tree_md5(out)
    truth = _truth(release)
    assert {rel: tree.get(rel) for rel in truth} == truth, "the original CLI's download differs"
    assert any(out.rglob("manifest.ver")), "the original CLI keeps a manifest.ver"
    yield out


@pytest.fixture
def copy_of_original(original_tree: Path, tmp_path: Path, aws_env: dict[str, str]) -> Path:
    out = tmp_path / "out"
    shutil.copytree(original_tree, out)  # copy2: mtimes too
    return out


def _download(out: Path, sandbox: Sandbox, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    done = cli(
        "download", "-o", str(out), "--datasets", *DATASETS,
        "--endpoint-url", sandbox.endpoint_url, "--yes", "--json", *extra,
    )  # fmt: skip
    return done.code, json_lines(done.stdout)


def _summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    finished = [e for e in events if e["event"] == "RunFinished"]
    assert len(finished) == 1
    summary: dict[str, Any] = finished[0]["summary"]
    return summary


def test_original_download_is_adopted_with_zero_bytes_refetched(
    copy_of_original: Path, sandbox: Sandbox, release: SeededRelease
) -> None:
    out = copy_of_original
    versions = {p: read_entries(p.parent) for p in out.rglob("manifest.ver")}
    code, events = _download(out, sandbox)
    assert code == 0
    summary = _summary(events)
    truth = _truth(release)
    assert summary["bytes_fetched"] == 0
    assert (summary["verified"], summary["skipped"]) == (0, len(truth))
    # Adopted only after their ETags checked out, composite ones included.
    checked = [e for e in events if e["event"] == "FileChecked"]
    assert {e["verdict"] for e in checked} == {"ok"}
    assert {e["level"] for e in checked} == {"md5", "composite-md5"}
    reasons = {e["reason"] for e in events if e["event"] == "FileSkipped"}
    assert any("the original ego4d CLI's copy" in r for r in reasons)
    with Journal(journal_path(out), readonly=True) as journal:
        entries = {e.dest: e for e in journal.entries()}
    assert set(entries) == set(truth)
    assert all(e.complete for e in entries.values())
    # Every manifest.ver keeps the original's entries and now names every file of the run
    # (the 0-byte one the original leaves out too), so going back to it refetches nothing.
    for path, before in versions.items():
        assert set(before) <= set(read_entries(path.parent))
    for folder in (out / "v2" / d for d in DATASETS):
        named = {e.filename for e in read_entries(folder)}
        assert {Path(rel).name for rel in truth if rel.startswith("v2/")} == named
    tree = tree_md5(out)
    assert {rel: tree[rel] for rel in truth} == truth
    # Once adopted, files are taken at the journal's word: not read again.
    code, events = _download(out, sandbox)
    assert code == 0
    assert not [e for e in events if e["event"] == "FileChecked"]
    assert _summary(events)["bytes_fetched"] == 0


def test_damaged_original_files_are_refetched_and_leftovers_removed(
    copy_of_original: Path, sandbox: Sandbox, release: SeededRelease
) -> None:
    out = copy_of_original
    clip = next(f for f in release.for_dataset("clips") if len(f.obj.part_sizes_bytes) == 3)
    note = next(f for f in release.for_dataset("annotations") if f.obj.size_bytes == 200 * 1024)
    os.truncate(out / clip.relpath, clip.obj.size_bytes // 2)  # incomplete
    path = out / note.relpath
    st = path.stat()
    path.write_bytes(b"x" * note.obj.size_bytes)  # the right size, the wrong bytes
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    # boto3's download_file writes "<name>.<8 hex digits>" and renames; a killed run leaves it.
    leftover = out / (note.relpath + ".F14eE010")
    leftover.write_bytes(b"partial")
    keep = [out / (note.relpath + ".bak"), out / "v2" / "annotations" / "mine.txt.F14eE010"]
    for p in keep:
        p.write_text("not ours")

    code, events = _download(out, sandbox)
    assert code == 0
    summary = _summary(events)
    assert summary["bytes_fetched"] == clip.obj.size_bytes + note.obj.size_bytes
    assert summary["verified"] == 2
    assert not leftover.exists()
    assert all(p.exists() for p in keep)
    tree = tree_md5(out)
    truth = _truth(release)
    assert {rel: tree[rel] for rel in truth} == truth


def test_size_only_adoption_is_fast_and_verify_catches_what_it_missed(
    copy_of_original: Path, sandbox: Sandbox, release: SeededRelease
) -> None:
    out = copy_of_original
    note = next(f for f in release.for_dataset("annotations") if f.obj.size_bytes == 96 * 1024)
    (out / note.relpath).write_bytes(b"y" * note.obj.size_bytes)
    code, events = _download(out, sandbox, "--verify", "size")
    assert code == 0
    assert _summary(events)["bytes_fetched"] == 0
    assert not [e for e in events if e["event"] == "BytesHashed"]

    found = cli(
        "verify", "-o", str(out), "--datasets", *DATASETS, "--endpoint-url", sandbox.endpoint_url
    )
    assert found.code == 1
    assert f"corrupt: {note.relpath}" in found.stdout


def test_another_shards_journal_vouches_for_its_files(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, _ = _download(out, sandbox)
    assert code == 0
    # Now split the work: each shard adopts what the unsharded run finished, reading nothing.
    for k in (1, 2):
        code, events = _download(out, sandbox, "--shard", f"{k}/2")
        assert code == 0
        assert _summary(events)["bytes_fetched"] == 0
        assert not [e for e in events if e["event"] == "BytesHashed"]
        reasons = [e["reason"] for e in events if e["event"] == "FileSkipped"]
        assert reasons and all("another journal" in r for r in reasons)
        with Journal(journal_path(out, (k, 2)), readonly=True) as journal:
            assert len(list(journal.entries())) == len(reasons)


def test_version_file_and_leftovers_are_read_as_the_original_wrote_them(tmp_path: Path) -> None:
    (tmp_path / "manifest.ver").write_text(
        "uid,version,filename\nu1,,u1.mp4\nu2,abc,notes.json\n,,\n", encoding="utf-8"
    )
    assert read_version_file(tmp_path) == {"u1.mp4": "u1", "notes.json": "u2"}
    assert read_version_file(tmp_path / "nowhere") == {}
    (tmp_path / "manifest.ver").write_bytes(b"\xff\xfe garbage")
    assert read_version_file(tmp_path) == {}

    names = ["a.mp4.0123abCD", "a.mp4.0123abC", "a.mp4.0123abCDE", "b.json.deadbeef", "a.mp4.part"]
    for name in names:
        (tmp_path / name).write_text("x")
    planned = PlannedFile(
        dataset="clips", uid="a", dest=tmp_path / "a.mp4", action=Action.FETCH,
        version=ObjectVersion(bucket="b", key="k", etag="e", size_bytes=1),
    )  # fmt: skip
    assert leftover_temp_files([planned]) == [tmp_path / "a.mp4.0123abCD"]
