"""``egoexo-dl`` against the sandbox's fake Ego-Exo4D release, with the original as the oracle.

Selections are compared with what the original's own ``main`` decides for the same flags
(``egoexo_oracle.original_plan``); downloads with the seeded bytes; a folder the original
``egoexo`` command filled is adopted without a byte fetched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ego4d_dl.cli.egoexo import app, egoexo_args
from ego4d_dl.egoexo_catalog import DEFAULT_PARTS, PARTS
from ego4d_dl.journal import JOURNAL_DIR, journal_path
from ego4d_dl.sandbox import CONSORTIUM_BUCKET, EgoExoSeededRelease, Sandbox
from tests.support.cli import Ran, json_lines
from tests.support.egoexo_oracle import (
    ORIGINAL_COMMANDS,
    ORIGINAL_PYTHON,
    Flags,
    original_plan,
    run_original_commands,
)

_EMPTY_MD5 = hashlib.md5(b"").hexdigest()


def egoexo_dl(*args: str | Path) -> Ran:
    """``egoexo-dl args`` in this process, as a user would type it."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)


def _process(*args: str | Path) -> list[str]:
    """The command line of ``egoexo-dl args`` in a child process (for signals)."""
    code = "from ego4d_dl.cli.egoexo import main; main()"
    return [sys.executable, "-c", code, *(str(a) for a in args)]


def _plan(sandbox: Sandbox, out: Path, *args: str) -> dict[str, Any]:
    ran = egoexo_dl("plan", "--json", "-o", out, "--endpoint-url", sandbox.endpoint_url, *args)
    assert ran.code == 0, ran.stderr
    doc: dict[str, Any] = json.loads(ran.stdout)
    return doc


def _truth(release: EgoExoSeededRelease) -> dict[str, str]:
    return {f.relative_path: f.obj.md5_hex for f in release.files}


def _tree(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.relative_to(out).parts[0] != JOURNAL_DIR
    }


def _summary(stdout: str) -> dict[str, Any]:
    (finished,) = [d for d in json_lines(stdout) if d["event"] == "RunFinished"]
    summary: dict[str, Any] = finished["summary"]
    return summary


# ---------------------------------------------------------------------------------------------
# The command line, read as the original's argparse read it


def test_the_originals_argparse_habits_are_read_as_it_read_them() -> None:
    known = frozenset({"--out_dir", "--parts", "--num_workers", "--delete_yes", "-u"})
    assert egoexo_args(["--parts", "a", "b", "-y"], known) == ["--parts", "a", "--parts", "b", "-y"]
    assert egoexo_args(["-u", "cmu", "upenn"], known) == ["-u", "cmu", "-u", "upenn"]
    assert egoexo_args(["-dy"], known) == ["--delete_yes"]
    assert egoexo_args(["--out", "x", "--num", "3"], known) == [
        "--out_dir",
        "x",
        "--num_workers",
        "3",
    ]
    with pytest.raises(ValueError, match="expected at least one argument"):
        egoexo_args(["--parts", "-y"], known)
    with pytest.raises(ValueError, match="ambiguous option"):
        egoexo_args(["--de", "x"], known)


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for args, words in (
        (["--parts", "takes", "bogus_part"], "some supplied parts do not exist: 'bogus_part'"),
        (["--release", "../v1"], "invalid release"),
        (["--base_dir", "/local/folder"], "--base_dir must be an s3://bucket/folder/ URL"),
        (["--num_workers", "0"], "--num_workers must be between 1 and 1024"),
    ):
        ran = egoexo_dl("plan", "-o", tmp_path, *args)
        assert ran.code == 2, (args, ran.stderr)
        assert words in ran.stderr and "Traceback" not in ran.stderr
    assert egoexo_dl("plan").code == 2


# ---------------------------------------------------------------------------------------------
# Selection: exactly the original's


_FLAGS = [
    Flags(),
    Flags(parts=("all",)),
    Flags(parts=("default", "take_vrs")),
    Flags(parts=("all", "takes")),
    Flags(parts=("all",), uids=("keystep", "omnivore_video_config")),
    Flags(parts=("all",), benchmarks=("keystep",)),
    Flags(parts=("all",), benchmarks=("bogus", "relations")),
    Flags(parts=("all",), splits=("train",)),
    Flags(parts=("all",), splits=("val", "test")),
    Flags(parts=("all",), views=("ego",)),
    Flags(parts=("all",), views=("exo",)),
    Flags(parts=("all",), universities=("cmu",)),
    Flags(parts=("all",), universities=("iiith", "upenn")),
    Flags(parts=("takes", "captures"), views=("ego",), universities=("cmu",)),
    Flags(parts=("all",), benchmarks=("keystep",), splits=("train",)),
    Flags(parts=("all",), splits=("train",), views=("exo",), universities=("upenn",)),
    Flags(
        parts=("annotations", "expert_commentary", "ego_pose_pseudo_gt"),
        benchmarks=("egopose", "expert_commentary"),
        splits=("train", "val"),
    ),
]


@pytest.mark.parametrize("flags", _FLAGS, ids=str)
def test_every_filter_selects_what_the_original_selects(
    sandbox: Sandbox,
    egoexo_release: EgoExoSeededRelease,
    aws_env: dict[str, str],
    tmp_path: Path,
    flags: Flags,
) -> None:
    if flags.uids is not None:
        # The uids of the first take's entries too, whichever part they are in.
        take = egoexo_release.for_part("takes")[0].uid
        flags = Flags(**{**flags.__dict__, "uids": (*flags.uids, take, f"{take}_expert_a")})
    sizes = {f"s3://{f.obj.bucket}/{f.obj.key}": f.obj.size_bytes for f in egoexo_release.files}
    theirs = original_plan(
        egoexo_release.manifest_json, flags, sizes=sizes, out_dir=tmp_path / "original"
    )
    assert theirs.exit_code is None, theirs.printed
    doc = _plan(sandbox, tmp_path / "out", *flags.argv())
    parts = {d["name"] for d in doc["datasets"]}
    assert parts == set(theirs.parts_read)
    ours = {
        Path(f["destination"]).relative_to(tmp_path / "out").as_posix(): (
            f"s3://{f['bucket']}/{f['key']}",
            f["size_bytes"],
        )
        for d in doc["datasets"]
        for f in d["files"]
    }
    assert all(f["action"] == "fetch" for d in doc["datasets"] for f in d["files"])
    # The original drops a path whose HEAD says 0 bytes (its "failed to get stats"); we
    # fetch the empty file.
    dropped = {rel for _, rel in theirs.zero_size}
    assert all(ours[rel][1] == 0 for rel in dropped)
    kept = {rel: v for rel, v in ours.items() if rel not in dropped}
    assert kept == {rel: (src, size) for src, rel, size in theirs.fetch}
    assert ours, "a selection that selects nothing proves little"


def test_default_and_all_expand_as_the_original(
    sandbox: Sandbox, egoexo_release: EgoExoSeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    assert [d["name"] for d in _plan(sandbox, tmp_path)["datasets"]] == list(DEFAULT_PARTS)
    assert [d["name"] for d in _plan(sandbox, tmp_path, "--parts", "all")["datasets"]] == list(
        PARTS
    )
    warned = egoexo_dl(
        "plan", "-o", tmp_path, "--endpoint-url", sandbox.endpoint_url,
        "--parts", "takes", "--benchmarks", "bogus",
    )  # fmt: skip
    assert warned.code == 0
    assert "--benchmarks 'bogus': no entry of the selected parts names it" in warned.stderr


# ---------------------------------------------------------------------------------------------
# Downloads


def test_download_is_byte_identical_and_a_rerun_fetches_nothing(
    sandbox: Sandbox, egoexo_release: EgoExoSeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ("-o", out, "--parts", "all", "-y", "--json", "--endpoint-url", sandbox.endpoint_url)
    first = egoexo_dl(*args)
    assert first.code == 0, first.stderr
    truth = _truth(egoexo_release)
    assert _tree(out) == truth
    summary = _summary(first.stdout)
    assert summary["verified"] == len(truth)
    # ETags from listings: the many small folders of a take are listed together, not HEADed.
    (built,) = [e for e in json_lines(first.stdout) if e["event"] == "PlanBuilt"]
    assert built["list_pages"] > 0 and built["heads"] < len(truth) // 4
    assert summary["levels"].get("composite-md5") == 2
    # Kept for status, inside ego4d-dl's own folder: the original's layout has no place for it.
    saved = out / JOURNAL_DIR / "egoexo" / "v2" / "takes" / "manifest.json"
    assert saved.read_bytes() == egoexo_release.manifest_json["takes"]
    assert not (out / "v2").exists()  # no manifest.ver folders: they are Ego4D's

    again = egoexo_dl(*args)
    assert again.code == 0, again.stderr
    summary = _summary(again.stdout)
    assert summary["bytes_fetched"] == 0 and summary["verified"] == 0
    assert summary["skipped"] == len(truth)

    status = egoexo_dl("status", "-o", out, "--json")
    assert status.code == 0, status.stderr
    counts = json.loads(status.stdout)
    assert counts["totals"]["complete_files"] == len(truth)

    damaged = out / egoexo_release.for_part("annotations")[0].relative_path
    damaged.write_bytes(b"x" * damaged.stat().st_size)
    checked = egoexo_dl(
        "verify", "-o", out, "--parts", "all", "--endpoint-url", sandbox.endpoint_url
    )
    assert checked.code == 1
    assert "corrupt" in checked.stdout
    repaired = egoexo_dl(
        "verify", "-o", out, "--parts", "all", "--repair", "--endpoint-url", sandbox.endpoint_url
    )
    assert repaired.code == 0, repaired.stdout + repaired.stderr
    assert _tree(out) == truth


def _journaled_bytes(out: Path) -> int:
    db = sqlite3.connect(f"file:{journal_path(out)}?mode=ro", uri=True)
    try:
        complete = db.execute(
            "SELECT coalesce(sum(size), 0) FROM objects WHERE state='complete'"
        ).fetchone()[0]
        ranges = db.execute(
            "SELECT coalesce(sum(r.stop - r.start), 0) FROM ranges r "
            "JOIN objects o ON o.id = r.object_id WHERE o.state = 'partial'"
        ).fetchone()[0]
    finally:
        db.close()
    return int(complete) + int(ranges)


def test_sigkill_mid_run_resumes(
    sandbox: Sandbox, egoexo_release: EgoExoSeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = _process(
        "-o", out, "--parts", "all", "-y", "--json", "--endpoint-url", sandbox.endpoint_url,
        "--num_workers", "2", "--max-bandwidth", "2MB/s",
    )  # fmt: skip
    env = {**os.environ, **aws_env}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(sqlite3.Error):
            if journal_path(out).exists() and _journaled_bytes(out) > 0:
                break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = _journaled_bytes(out)
    total = sum(f.obj.size_bytes for f in egoexo_release.files)
    assert 0 < kept < total
    rerun = subprocess.run(args[:-2], env=env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert _summary(rerun.stdout)["bytes_fetched"] == total - kept
    assert _tree(out) == _truth(egoexo_release)


def test_a_bad_relative_path_is_a_malformed_row_counted_and_named(
    sandbox: Sandbox, egoexo_release: EgoExoSeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    good = egoexo_release.for_part("metadata")[0]
    src = f"s3://{good.obj.bucket}/{good.obj.key}"
    entries = [
        {"uid": "ok", "paths": [{"source_path": src, "relative_path": "ok/takes.json"}]},
        {"uid": "up", "paths": [{"source_path": src, "relative_path": "../outside.json"}]},
        {"uid": "abs", "paths": [{"source_path": src, "relative_path": "/tmp/abs.json"}]},
        {"uid": "ours", "paths": [{"source_path": src, "relative_path": ".ego4d-dl/x.json"}]},
    ]
    key = "egoexo-public/vbad/metadata/manifest.json"
    sandbox.put_object(CONSORTIUM_BUCKET, key, json.dumps(entries).encode())
    out = tmp_path / "out"
    ran = egoexo_dl(
        "-o", out, "--release", "vbad", "--parts", "metadata", "-y",
        "--endpoint-url", sandbox.endpoint_url,
    )  # fmt: skip
    assert ran.code == 1
    assert "3 malformed manifest paths skipped" in ran.stderr
    assert "relative_path leaves the output directory ('..')" in ran.stderr
    assert _tree(out) == {"ok/takes.json": good.obj.md5_hex}
    assert not (tmp_path / "outside.json").exists()


# ---------------------------------------------------------------------------------------------
# --delete


def _strays(out: Path, outside: Path) -> dict[str, bytes | None]:
    files: dict[str, bytes | None] = {
        "notes.txt": b"mine, at the top",
        "takes/cmu_bike01_2/aria01.vrs": b"a file of a part not selected",
        ".ego4d-dl/mine.txt": b"ego4d-dl's own folder",
        "annotations/old_release_file.json": b"no longer listed",
        "annotations/keystep_train.json.F14eE010": b"a leftover temporary file",
        "annotations/ego_pose/train/body/annotation/gone.json": b"no longer listed",
        "annotations/link.json": None,
    }
    outside.write_bytes(b"outside the output directory")
    for rel, data in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            path.symlink_to(outside)
        else:
            path.write_bytes(data)
    return files


def test_delete_lists_asks_and_removes_exactly_the_unlisted_files(
    sandbox: Sandbox, egoexo_release: EgoExoSeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    outside = tmp_path / "outside.txt"
    before = _strays(out, outside)
    gone = {
        "annotations/old_release_file.json",
        "annotations/keystep_train.json.F14eE010",
        "annotations/ego_pose/train/body/annotation/gone.json",
    }
    base = ("-o", out, "--parts", "annotations", "--endpoint-url", sandbox.endpoint_url)
    doc = _plan(sandbox, out, "--parts", "annotations", "--delete")
    assert set(doc["delete"]) == gone
    shown = egoexo_dl("plan", *base, "--delete")
    assert all(f"delete {rel}" in shown.stdout for rel in gone)

    declined = CliRunner().invoke(app, [str(a) for a in (*base, "-y", "-d")], input="n\n")
    assert declined.exit_code == 0, declined.stderr
    assert "nothing removed" in declined.stderr
    # The original's leftover temporary file beside a planned one goes with any download.
    leftover = "annotations/keystep_train.json.F14eE010"
    assert not (out / leftover).exists()
    assert all((out / rel).is_symlink() or (out / rel).exists() for rel in set(before) - {leftover})

    ran = egoexo_dl(*base, "-y", "-d", "-dy")
    assert ran.code == 0, ran.stderr
    assert "removed 2 files" in ran.stderr
    for rel in before:
        assert (out / rel).is_symlink() or (out / rel).exists() or rel in gone
        assert not ((out / rel).exists() and rel in gone)
    assert outside.read_bytes() == b"outside the output directory"
    annotations = {f.relative_path: f.obj.md5_hex for f in egoexo_release.for_part("annotations")}
    tree = _tree(out)
    assert {rel: tree[rel] for rel in annotations} == annotations
    assert set(tree) - set(annotations) == {
        "notes.txt",
        "takes/cmu_bike01_2/aria01.vrs",
    }


def test_delete_is_refused_with_a_shard(tmp_path: Path) -> None:
    ran = egoexo_dl("-o", tmp_path, "-d", "--shard", "1/2", "-y")
    assert ran.code == 2
    assert "--delete needs the whole selection" in ran.stderr


# ---------------------------------------------------------------------------------------------
# Adoption of the original's downloads


@pytest.fixture(scope="module")
def originals(
    sandbox: Sandbox, egoexo_release: EgoExoSeededRelease, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    if not ORIGINAL_PYTHON.exists():
        pytest.skip(f"the original CLI's Python is not at {ORIGINAL_PYTHON}")
    root = tmp_path_factory.mktemp("egoexo-original")
    return run_original_commands(sandbox, egoexo_release, root, ("default", "all_keystep_train"))


@pytest.mark.parametrize("name", ["default", "all_keystep_train"])
def test_a_folder_the_original_filled_is_adopted_without_refetching(
    originals: dict[str, Any],
    sandbox: Sandbox,
    egoexo_release: EgoExoSeededRelease,
    aws_env: dict[str, str],
    name: str,
) -> None:
    run = originals[name]
    assert run.returncode == 0, run.output
    flags = ORIGINAL_COMMANDS[name](egoexo_release).flags
    ran = egoexo_dl(
        "-o", run.out, *flags.argv(), "-y", "--json", "--endpoint-url", sandbox.endpoint_url
    )
    assert ran.code == 0, ran.stderr
    summary = _summary(ran.stdout)
    # Only the empty files the original never writes are "fetched": zero bytes.
    assert summary["bytes_fetched"] == 0
    checked = [e for e in json_lines(ran.stdout) if e["event"] == "FileChecked"]
    assert len(checked) == len(run.tree)
    truth = _truth(egoexo_release)
    tree = _tree(run.out)
    assert {rel: truth[rel] for rel in tree} == tree
    assert all(truth[rel] == _EMPTY_MD5 for rel in set(tree) - set(run.tree))


@pytest.mark.sandbox  # the demo starts a sandbox of its own
def test_the_demo_downloads_a_whole_fake_ego_exo4d_release(tmp_path: Path) -> None:
    ran = egoexo_dl("demo", "-o", tmp_path / "demo")
    assert ran.code == 0, ran.stderr
    assert "Ego-Exo4D v2" in ran.stdout
    assert "files are byte-identical to the sandbox's source" in ran.stdout


def _put_release(sandbox: Sandbox, release: str, parts: dict[str, list[dict[str, Any]]]) -> None:
    for part, entries in parts.items():
        key = f"egoexo-public/{release}/{part}/manifest.json"
        sandbox.put_object(CONSORTIUM_BUCKET, key, json.dumps(entries).encode())


def _path(f: Any, relative_path: str, **more: Any) -> dict[str, Any]:
    return {
        "source_path": f"s3://{f.obj.bucket}/{f.obj.key}",
        "relative_path": relative_path,
        **more,
    }


def test_an_object_that_is_not_what_its_manifest_says_fails_that_file(
    sandbox: Sandbox, egoexo_release: EgoExoSeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    one, two, three = egoexo_release.for_part("metadata")[:3]
    size = one.obj.size_bytes
    _put_release(
        sandbox,
        "vsize",
        {
            "metadata": [
                {"uid": "a", "paths": [_path(one, "wrong_size.json", size=size + 1)]},
                {"uid": "b", "paths": [_path(two, "wrong_md5.json", checksum="0" * 32)]},
                {"uid": "c", "paths": [_path(three, "right.json", checksum=three.obj.md5_hex)]},
            ]
        },
    )
    out = tmp_path / "out"
    args = ("-o", out, "--release", "vsize", "--parts", "metadata", "-y")
    ran = egoexo_dl(*args, "--endpoint-url", sandbox.endpoint_url)
    assert ran.code == 1
    assert f"the manifest says {size + 1:,} bytes, the object holds {size:,}" in ran.stdout
    assert "the manifest's checksum 0000" in ran.stdout
    assert _tree(out) == {"right.json": three.obj.md5_hex}


def test_parts_that_share_a_destination_fetch_it_once_or_stop_the_plan(
    sandbox: Sandbox, egoexo_release: EgoExoSeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    one, two = egoexo_release.for_part("metadata")[:2]
    shared = {"uid": "s", "paths": [_path(one, "shared/one.json")]}
    _put_release(sandbox, "vsame", {"metadata": [shared], "annotations": [shared]})
    out = tmp_path / "out"
    ran = egoexo_dl(
        "-o", out, "--release", "vsame", "--parts", "metadata", "annotations", "-y",
        "--endpoint-url", sandbox.endpoint_url,
    )  # fmt: skip
    assert ran.code == 0, ran.stderr
    assert "annotations: 1 paths repeat earlier ones; each fetched once" in ran.stderr
    assert _tree(out) == {"shared/one.json": one.obj.md5_hex}

    clash = {"uid": "t", "paths": [_path(two, "Shared/One.json")]}
    folder = {"uid": "u", "paths": [_path(two, "shared/one.json/inside.json")]}
    for name, entries in (("vclash", [clash]), ("vfolder", [folder])):
        _put_release(sandbox, name, {"metadata": [shared], "annotations": entries})
        ran = egoexo_dl(
            "plan", "-o", out, "--release", name, "--parts", "metadata", "annotations",
            "--endpoint-url", sandbox.endpoint_url,
        )  # fmt: skip
        assert ran.code == 2, (name, ran.stderr)
        assert "refusing to plan either" in ran.stderr


def test_shards_split_the_work_and_status_sees_both(
    sandbox: Sandbox, egoexo_release: EgoExoSeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    fetched = []
    for k in (1, 2):
        ran = egoexo_dl(
            "-o", out, "--parts", "all", "-y", "--json", "--shard", f"{k}/2",
            "--endpoint-url", sandbox.endpoint_url,
        )  # fmt: skip
        assert ran.code == 0, ran.stderr
        fetched.append(_summary(ran.stdout)["verified"])
    truth = _truth(egoexo_release)
    assert all(fetched) and sum(fetched) == len(truth)
    assert _tree(out) == truth
    status = egoexo_dl("status", "-o", out, "--parts", "all", "--json")
    assert status.code == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["shard_count"] == 2
    assert doc["totals"]["complete_files"] == len(truth)


def test_keys_the_server_refuses_end_with_exit_3_and_name_ego_exo4d_keys(
    sandbox: Sandbox,
    egoexo_release: EgoExoSeededRelease,
    aws_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An Ego-Exo4D user is told about their keys, not only Ego4D's."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    ran = egoexo_dl("-o", tmp_path / "out", "-y", "--endpoint-url", sandbox.endpoint_url)
    assert ran.code == 3, ran.stderr
    assert "Ego-Exo4D keys expire after 14 days" in ran.stderr
