"""What an Ego4D release is: versions, datasets, university buckets and where manifests live."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from .errors import ConfigError

__all__ = [
    "BUCKET_TO_UNIVERSITY",
    "CONSORTIUM_BUCKET",
    "DEFAULT_DATASETS",
    "DEFAULT_VERSION",
    "FILE_DATASETS",
    "KNOWN_DATASETS",
    "PRIMARY_DATASET",
    "RELEASES_PREFIX",
    "UNIVERSITY_TO_BUCKET",
    "VIDEO_DATASETS",
    "datasets_csv_key",
    "major_version",
    "manifest_key",
    "metadata_key",
    "normalise_dataset",
    "normalise_university",
    "normalise_version",
    "release_names",
    "suggest_datasets",
]

CONSORTIUM_BUCKET = "ego4d-consortium-sharing"
# Every release is a folder of the consortium bucket: public/v1/, public/v2/, public/v2_1/ ...
# Releases are found there, not listed here, so the next one needs no new ego4d-dl.
RELEASES_PREFIX = "public/"
DEFAULT_VERSION = "v2_1"
# The original CLI downloads annotations when no dataset is named.
DEFAULT_DATASETS = ("annotations",)

# The dataset whose manifest --manifest keeps as <out>/manifest.csv (the original's
# DATASET_PRIMARY).
PRIMARY_DATASET = "full_scale"
# The original's DATASETS_VIDEO: rows land as <uid>.mp4 and --video_uids filters them.
VIDEO_DATASETS = frozenset({"full_scale", "clips", "components/videos", "video_540ss"})
FILE_DATASETS = frozenset(
    {
        "annotations",
        "annotations_540ss",
        "viz",
        "3d",
        "3d_scans",
        "3d_scan_keypoints",
        "imu",
        "gaze",
        "av_models",
        "vq2d_models",
        "vq2d_detections",
        "slowfast8x8_r101_k400",
        "lta_models",
        "sta_models",
        "nlq_models",
        "moments_models",
        "social_test",
        "egotracks",
        "paco_annotations",
        "paco_frames",
    }
)
KNOWN_DATASETS = VIDEO_DATASETS | FILE_DATASETS

UNIVERSITY_TO_BUCKET: dict[str, str] = {
    "bristol": "ego4d-bristol",
    "cmu": "ego4d-cmu",
    "cmu_africa": "ego4d-universityaf",
    "frl_track_1_public": "ego4d-consortium-sharing",
    "georgiatech": "ego4d-georgiatech",
    "iiith": "ego4d-iiith",
    "indiana": "ego4d-indiana",
    "kaust": "ego4d-kaust",
    "minnesota": "ego4d-minnesota",
    "nus": "ego4d-speac",
    "uniandes": "ego4d-university-sa",
    "unict": "ego4d-unict-milan",
    "utokyo": "ego4d-utokyo",
    "sfu": "ego4d-sfu",
    "unc": "ego4d-unc",
    "upenn": "ego4d-penn",
    "fair": "ego4d-fair",
}
BUCKET_TO_UNIVERSITY: dict[str, str] = {b: u for u, b in UNIVERSITY_TO_BUCKET.items()}

# A dataset name becomes a directory, so it must stay one harmless path segment (or a
# few, like the original's "components/videos").
_DATASET_RE = re.compile(r"^[a-z0-9][a-z0-9_.]*(/[a-z0-9][a-z0-9_.]*)*$")


# vN, vN_M (and vN_M_K): the shape of every Ego4D release name. Whether a release exists is
# the bucket's to say (``release_names``); the shape keeps the name one safe path segment.
_RELEASE_RE = re.compile(r"^v[0-9]+(?:_[0-9]+)*$")


def normalise_version(version: str) -> str:
    """The canonical release name (``v2_1``), accepting ``V2.1``/``v2-1`` spellings.

    Any ``vN`` or ``vN_M`` is accepted; the planner asks the bucket whether it exists.
    """
    canon = version.strip().lower().replace(".", "_").replace("-", "_")
    if not _RELEASE_RE.match(canon):
        raise ConfigError(
            f"unknown release {version!r}: release names look like v2 or v2_1 "
            f"(default {DEFAULT_VERSION})"
        )
    return canon


def major_version(version: str) -> str:
    """The folder a release lands in: ``v2_1`` -> ``v2``, ``v10_3`` -> ``v10``.

    The original CLI's rule (``version.split("_")[0]``), so both tools fill the same folders.
    """
    return version.split("_", 1)[0]


def release_names(folders: Iterable[str]) -> tuple[str, ...]:
    """The releases among the consortium bucket's ``public/`` folders, oldest first.

    ``folders`` are common prefixes (``public/v2_1/``) or bare names; others are ignored.
    Sorted by number, so ``v2_1`` comes before ``v10``.
    """
    names = {f.removeprefix(RELEASES_PREFIX).strip("/") for f in folders}
    found = [n for n in names if _RELEASE_RE.match(n)]
    return tuple(sorted(found, key=lambda n: tuple(int(x) for x in n[1:].split("_"))))


def normalise_dataset(name: str) -> str:
    """Canonical dataset name: lower case, ``full-scale`` -> ``full_scale``.

    Unknown names are returned as they are (new datasets appear in datasets.csv); names that
    could escape the output directory are refused.
    """
    canon = name.strip().lower()
    if canon.replace("-", "_") in KNOWN_DATASETS:
        canon = canon.replace("-", "_")
    if not _DATASET_RE.match(canon) or ".." in canon:
        raise ConfigError(f"invalid dataset name {name!r}")
    return canon


def suggest_datasets(name: str, candidates: frozenset[str] | set[str]) -> tuple[str, ...]:
    """The closest known dataset names, best first (for "did you mean" hints)."""
    return tuple(difflib.get_close_matches(name, sorted(candidates), n=3, cutoff=0.6))


def normalise_university(name: str) -> str:
    """Canonical university id; an unknown one is a ``ConfigError`` listing the known ids."""
    canon = name.strip().lower().replace("-", "_")
    if canon not in UNIVERSITY_TO_BUCKET:
        known = ", ".join(sorted(UNIVERSITY_TO_BUCKET))
        raise ConfigError(f"unknown university {name!r}; known universities: {known}")
    return canon


def manifest_key(version: str, dataset: str) -> str:
    """Key of a dataset's manifest in the consortium bucket."""
    return str(PurePosixPath("public", version, dataset, "manifest.csv"))


def metadata_key(version: str) -> str:
    """Key of the release's primary metadata, ``ego4d.json``."""
    return f"public/{version}/ego4d.json"


def datasets_csv_key(version: str) -> str:
    """Key of the release's dataset list."""
    return f"public/{version}/datasets.csv"
