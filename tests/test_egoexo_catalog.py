"""Ego-Exo4D release facts: parts, ``default`` and ``all`` as the original expands them, where
manifests live. The oracle is the original's own ``main`` (``egoexo_oracle.original_plan``),
which records the manifests it asks for."""

from __future__ import annotations

from pathlib import Path

import pytest

from ego4d_dl.egoexo_catalog import (
    DEFAULT_BASE_DIR,
    DEFAULT_PARTS,
    PARTS,
    expand_parts,
    release_root,
)
from ego4d_dl.errors import ConfigError
from tests.support.egoexo_oracle import Flags, original_plan

# Every part present, each an empty manifest: the original reads what it expands to, finds
# nothing to fetch and stops where it would look at the disk.
EVERY_PART = dict.fromkeys(PARTS, b"[]")


@pytest.mark.parametrize(
    "requested",
    [
        (),
        ("default",),
        ("all",),
        ("takes",),
        ("takes", "takes"),
        ("default", "take_vrs"),
        ("default", "takes"),
        ("all", "takes"),
        ("all", "default"),
        ("all", "bogus_part"),
        ("downscaled_takes/448", "features/maws_clip_2b", "expert_commentary"),
        tuple(PARTS),
    ],
    ids=lambda r: " ".join(r) or "no --parts",
)
def test_parts_expand_as_the_original_expands_them(
    requested: tuple[str, ...], tmp_path: Path
) -> None:
    flags = Flags(parts=requested or None)
    theirs = original_plan(EVERY_PART, flags, sizes={}, out_dir=tmp_path / "out")
    assert theirs.exit_code is None, theirs.printed
    ours = expand_parts(requested)
    assert set(ours.parts) == theirs.parts_read
    assert len(ours.parts) == len(set(ours.parts))
    assert list(ours.parts) == [p for p in PARTS if p in ours.parts], "catalog order"


def test_default_and_all_are_the_originals_sets(tmp_path: Path) -> None:
    every = original_plan(EVERY_PART, Flags(parts=("all",)), sizes={}, out_dir=tmp_path / "a")
    default = original_plan(EVERY_PART, Flags(), sizes={}, out_dir=tmp_path / "d")
    assert every.parts_read == set(PARTS) and len(PARTS) == 19
    assert default.parts_read == set(DEFAULT_PARTS) and len(DEFAULT_PARTS) == 6
    # What it says it expands to is what it reads.
    said = every.printed.split("equivalent to: --parts ", 1)[1].splitlines()[0].split()
    assert set(said) == set(PARTS)


def test_manifest_keys_are_where_the_original_reads_them(tmp_path: Path) -> None:
    theirs = original_plan({}, Flags(parts=("all",)), sizes={}, out_dir=tmp_path / "out")
    # No part exists: it asked for every manifest, then gave up.
    assert theirs.exit_code == 1
    assert "could not get manifests for all parts" in theirs.printed
    root = release_root()
    assert root.url == "s3://ego4d-consortium-sharing/egoexo-public/v2/" == f"{DEFAULT_BASE_DIR}v2/"
    assert root.manifest_key("downscaled_takes/448") == (
        "egoexo-public/v2/downscaled_takes/448/manifest.json"
    )
    assert {f"s3://{root.bucket}/{root.manifest_key(p)}" for p in PARTS} == {
        f"{root.url}{p}/manifest.json" for p in theirs.parts_read
    }


@pytest.mark.parametrize(
    "requested", [("takes", "bogus_part"), ("default", "Takes"), ("take_vrs", "features")]
)
def test_an_unknown_part_is_one_clear_error_naming_the_valid_ones(
    requested: tuple[str, ...], tmp_path: Path
) -> None:
    theirs = original_plan(EVERY_PART, Flags(parts=requested), sizes={}, out_dir=tmp_path / "out")
    unknown = requested[1]
    assert theirs.exit_code == 2
    assert f"ERROR: some supplied parts (['{unknown}']) do not exist" in theirs.printed
    with pytest.raises(ConfigError) as info:
        expand_parts(requested)
    message = str(info.value)
    assert message.startswith(f"some supplied parts do not exist: {unknown!r}")
    assert all(part in message for part in PARTS)
    assert "default" in message and "all" in message
    assert "\n" not in message


def test_an_unknown_part_gets_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"'take_trajectroy' \(did you mean take_trajectory or"):
        expand_parts(["take_trajectroy"])
    with pytest.raises(ConfigError, match=r"'metdata' \(did you mean metadata\?\)"):
        expand_parts(["metdata"])
    with pytest.raises(ConfigError, match=r"'\\x1b\[31m'; the parts are"):
        expand_parts(["\x1b[31m"])


def test_notes_say_what_default_stands_for_and_what_all_ignores() -> None:
    assert expand_parts(["all", "takes", "nope"]).notes == (
        "--parts all given: ignoring the other parts supplied (nope, takes)",
    )
    assert expand_parts(["all"]).notes == ()
    (note,) = expand_parts(["default"]).notes
    assert note.endswith(" ".join(DEFAULT_PARTS))
    assert expand_parts(["takes"]).notes == ()


def test_a_later_release_may_name_more_parts() -> None:
    known = (*PARTS, "take_cameras")
    assert expand_parts(["take_cameras", "metadata"], known=known).parts == (
        "metadata",
        "take_cameras",
    )
    assert expand_parts(["all"], known=known).parts == (*PARTS, "take_cameras")
    with pytest.raises(ConfigError):
        expand_parts(["take_cameras"])


def test_release_roots() -> None:
    assert release_root("v1").prefix == "egoexo-public/v1/"
    mirror = release_root("v2", "s3://my-mirror/ego/exo")
    assert (mirror.bucket, mirror.prefix) == ("my-mirror", "ego/exo/v2/")
    assert release_root("v2", "s3://my-mirror/").prefix == "v2/"
    assert release_root(" v2/ ").prefix == "egoexo-public/v2/"


@pytest.mark.parametrize(
    ("release", "base_dir"),
    [
        ("../public/v2_1", DEFAULT_BASE_DIR),
        ("v2/takes", DEFAULT_BASE_DIR),
        ("", DEFAULT_BASE_DIR),
        ("v2\x1b", DEFAULT_BASE_DIR),
        ("v2", "/local/folder/"),
        ("v2", "https://example.com/x/"),
        ("v2", "s3://bucket/a/../b/"),
        ("v2", "s3://bucket/a//b/"),
    ],
)
def test_bad_releases_and_base_dirs_are_config_errors(release: str, base_dir: str) -> None:
    with pytest.raises(ConfigError):
        release_root(release, base_dir)
