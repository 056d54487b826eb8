"""Catalog facts and name handling."""

from __future__ import annotations

import pytest

from ego4d_dl.catalog import (
    KNOWN_DATASETS,
    UNIVERSITY_TO_BUCKET,
    VIDEO_DATASETS,
    major_version,
    manifest_key,
    normalise_dataset,
    normalise_university,
    normalise_version,
    release_names,
    suggest_datasets,
)
from ego4d_dl.errors import ConfigError

SEED_DATASETS = {"full_scale", "clips", "annotations", "viz", "3d", "av_models", "vq2d_models"}
ORIGINAL_DATASETS = {
    "video_540ss",
    "annotations_540ss",
    "imu",
    "3d_scans",
    "3d_scan_keypoints",
    "slowfast8x8_r101_k400",
    "lta_models",
    "sta_models",
    "nlq_models",
    "moments_models",
}


def test_catalog_knows_every_seed_and_original_dataset() -> None:
    assert SEED_DATASETS | ORIGINAL_DATASETS <= KNOWN_DATASETS


def test_versions_and_layout() -> None:
    assert normalise_version("v2_1") == "v2_1"
    assert normalise_version("V2.1") == "v2_1"
    assert major_version("v2_1") == "v2"
    assert major_version("v1") == "v1"
    assert manifest_key("v2_1", "clips") == "public/v2_1/clips/manifest.csv"
    # Any vN / vN_M is a release name; whether it exists is the bucket's to say.
    assert normalise_version("v3") == "v3"
    assert normalise_version("v10.2") == "v10_2"
    assert major_version("v10_2") == "v10"
    for bad in ("latest", "2_1", "v2_", "v2/../x", ""):
        with pytest.raises(ConfigError, match="unknown release"):
            normalise_version(bad)


def test_releases_are_read_from_the_bucket_folders() -> None:
    folders = ["public/v2_1/", "public/v10/", "public/v1/", "public/v2/", "public/egoexo/"]
    assert release_names(folders) == ("v1", "v2", "v2_1", "v10")
    assert release_names([]) == ()


def test_components_videos_is_a_video_dataset_as_in_the_original() -> None:
    assert {"full_scale", "clips", "components/videos", "video_540ss"} == VIDEO_DATASETS


def test_dataset_names() -> None:
    assert normalise_dataset("full-scale") == "full_scale"
    assert normalise_dataset("Annotations") == "annotations"
    assert normalise_dataset("brand_new") == "brand_new"
    for bad in ("../etc", "/abs", "a/../b", "a b"):
        with pytest.raises(ConfigError):
            normalise_dataset(bad)


def test_suggestions_catch_the_seed_readme_typo() -> None:
    assert suggest_datasets("vq2s_models", KNOWN_DATASETS)[0] == "vq2d_models"


def test_universities() -> None:
    assert UNIVERSITY_TO_BUCKET["nus"] == "ego4d-speac"
    assert UNIVERSITY_TO_BUCKET["unict"] == "ego4d-unict-milan"
    assert UNIVERSITY_TO_BUCKET["cmu_africa"] == "ego4d-universityaf"
    assert normalise_university("CMU") == "cmu"
    with pytest.raises(ConfigError, match="known universities"):
        normalise_university("mit")
