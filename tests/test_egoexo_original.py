"""The original ``egoexo`` command against the sandbox's fake Ego-Exo4D release.

Its command lines (``egoexo_oracle.ORIGINAL_COMMANDS``) run once per module, together; each
test checks what one left behind against our selection of the same flags and the seeded
truth. So the fake release is one the original downloads as it would the real one, our
selection is the files it writes, and its differences (empty files, ``--delete``) are pinned
for the ``egoexo-dl`` end-to-end tests to come.
"""

from __future__ import annotations

import hashlib
import io

import pytest

from ego4d_dl.egoexo_catalog import DEFAULT_PARTS, PARTS, release_root
from ego4d_dl.egoexo_manifest import EgoExoRow, parse_manifest
from ego4d_dl.sandbox import (
    EgoExoSeededRelease,
    Sandbox,
    egoexo_manifest_json,
    egoexo_release_spec,
)
from tests.support.egoexo_oracle import (
    ORIGINAL_COMMANDS,
    ORIGINAL_PYTHON,
    OriginalRun,
    ours,
    run_original_commands,
)


@pytest.fixture(scope="module")
def runs(
    sandbox: Sandbox,
    egoexo_release: EgoExoSeededRelease,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, OriginalRun]:
    if not ORIGINAL_PYTHON.exists():
        pytest.skip(f"the original CLI's Python is not at {ORIGINAL_PYTHON}")
    return run_original_commands(sandbox, egoexo_release, tmp_path_factory.mktemp("egoexo"))


def _md5s(release: EgoExoSeededRelease) -> dict[tuple[str, str], str]:
    return {(f.obj.bucket, f.obj.key): f.obj.md5_hex for f in release.files}


def _selected(release: EgoExoSeededRelease, name: str) -> list[EgoExoRow]:
    flags = ORIGINAL_COMMANDS[name](release).flags
    return [r for p in ours(release.manifest_json, flags) for r in p.rows]


def test_the_seeded_manifests_are_in_s3_and_name_the_seeded_objects(
    sandbox: Sandbox, egoexo_release: EgoExoSeededRelease
) -> None:
    assert egoexo_release.parts == PARTS
    assert egoexo_release.manifest_json == _spec_manifests()
    root = release_root(egoexo_release.release, egoexo_release.base_dir)
    admin = sandbox.admin_client()
    objects = {(f.obj.bucket, f.obj.key): f.obj for f in egoexo_release.files}
    for part in PARTS:
        body = admin.get_object(Bucket=root.bucket, Key=root.manifest_key(part))["Body"].read()
        assert body == egoexo_release.manifest_json[part]
        rows = list(parse_manifest(_text(body), source=part))
        assert rows and all(isinstance(r, EgoExoRow) for r in rows)
        for row in rows:
            assert isinstance(row, EgoExoRow)
            obj = objects[(row.bucket, row.key)]
            head = admin.head_object(Bucket=row.bucket, Key=row.key)
            assert head["ContentLength"] == obj.size_bytes
            assert row.size_bytes in (None, obj.size_bytes)
    sizes = [f.obj.size_bytes for f in egoexo_release.files]
    assert sum(sizes) < 16 << 20 and len(sizes) > 150
    assert sum(1 for f in egoexo_release.files if f.obj.part_sizes_bytes) == 2
    assert sum(1 for f in egoexo_release.files if not f.size_in_manifest) >= 3


@pytest.mark.parametrize(
    "name",
    ["default", "all", "takes_captures_ego_cmu", "all_keystep_train", "uids", "unknown_benchmark"],
)
def test_the_original_writes_exactly_our_selection(
    runs: dict[str, OriginalRun], egoexo_release: EgoExoSeededRelease, name: str
) -> None:
    run = runs[name]
    assert run.returncode == 0, run.output
    md5 = _md5s(egoexo_release)
    rows = _selected(egoexo_release, name)
    assert rows
    # The original never writes an empty file: a size of 0 in the manifest is "nothing to
    # fetch", a HEAD that says 0 is a failed stat ("failed to get stats ... will skip").
    empty = {r.relative_path for r in rows if md5[(r.bucket, r.key)] == _EMPTY_MD5}
    expected = {
        r.relative_path: md5[(r.bucket, r.key)] for r in rows if r.relative_path not in empty
    }
    assert run.tree == expected
    if any(r.size_bytes is None and r.relative_path in empty for r in rows):
        assert "failed to get stats for 1 files, will skip. [zero_size=1" in run.output


def test_the_original_says_what_default_and_all_stand_for(runs: dict[str, OriginalRun]) -> None:
    def said(output: str, what: str) -> set[str]:
        line = output.split(f"NOTE: {what} part supplied; equivalent to: --parts ", 1)[1]
        return set(line.splitlines()[0].split())

    assert said(runs["default"].output, "default") == set(DEFAULT_PARTS)
    assert said(runs["all"].output, "all") == set(PARTS)


def test_an_unknown_benchmark_is_a_warning_and_the_others_still_filter(
    runs: dict[str, OriginalRun], egoexo_release: EgoExoSeededRelease
) -> None:
    run = runs["unknown_benchmark"]
    assert "WARN: Provided invalid benchmarks: {'bogus'}" in run.output
    assert "Proceeding anyway via setting benchmarks to the empty set" in run.output
    # ... which changes nothing: the selection was made before, with "relations" in it.
    assert any(
        r.benchmarks == ("relations", "translation")
        for r in _selected(egoexo_release, "unknown_benchmark")
    )
    assert not any("keystep" in rel for rel in run.tree)


def test_an_unknown_part_stops_the_original_after_reading_the_others(
    runs: dict[str, OriginalRun],
) -> None:
    run = runs["unknown_part"]
    assert run.returncode == 2
    assert "ERROR: some supplied parts (['bogus_part']) do not exist" in run.output
    assert run.tree == {}


def test_refused_keys_read_as_parts_that_do_not_exist(runs: dict[str, OriginalRun]) -> None:
    # Its S3 path manager answers "no such object" to any error but Bad Request: a 403 on
    # every manifest (keys for Ego4D only, expired, mistyped) ends in "nothing to download"
    # (with two parts of which one is refused, "some supplied parts do not exist").
    run = runs["refused_keys"]
    assert run.returncode == 1
    assert "ERROR: could not get manifests for all parts (nothing to download)" in run.output
    assert "Did you supply the right parts?" in run.output
    assert "403" not in run.output and "SignatureDoesNotMatch" not in run.output
    assert run.tree == {}


def test_the_originals_delete_removes_every_file_no_selected_manifest_names(
    runs: dict[str, OriginalRun], egoexo_release: EgoExoSeededRelease
) -> None:
    run = runs["delete"]
    command = ORIGINAL_COMMANDS["delete"](egoexo_release)
    assert run.returncode == 0, run.output
    # It asks even with -dy, then ignores the answer ("n" here).
    assert f"Will delete: {len(command.before)} files" in run.output
    # Everything put there before is gone: a file of another part, another tool's state
    # (ego4d-dl's journal folder), a leftover temporary file, a symlink (not its target).
    assert not set(command.before) & set(run.tree)
    assert (run.out.parent / "outside.txt").read_bytes() == b"outside the output directory"
    md5 = _md5s(egoexo_release)
    rows = _selected(egoexo_release, "delete")
    assert run.tree == {
        r.relative_path: md5[(r.bucket, r.key)]
        for r in rows
        if md5[(r.bucket, r.key)] != _EMPTY_MD5
    }


_EMPTY_MD5 = hashlib.md5(b"").hexdigest()


def _spec_manifests() -> dict[str, bytes]:
    return {part: egoexo_manifest_json(entries) for part, entries in egoexo_release_spec().parts}


def _text(body: bytes) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(body), encoding="utf-8")
