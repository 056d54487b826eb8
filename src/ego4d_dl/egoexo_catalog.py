"""What an Ego-Exo4D release is: its root in S3, its parts, ``default`` and ``all``; pure facts."""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from .errors import ConfigError

__all__ = [
    "ALL",
    "DEFAULT",
    "DEFAULT_BASE_DIR",
    "DEFAULT_PARTS",
    "DEFAULT_RELEASE",
    "MANIFEST_BUCKET",
    "MANIFEST_NAME",
    "PARTS",
    "RELEASES_PREFIX",
    "ExpandedParts",
    "ReleaseRoot",
    "expand_parts",
    "release_root",
]

# Every public release is a folder of the consortium bucket: egoexo-public/v2/ ...; each part
# of it a folder holding the part's manifest.json. The data itself lives in the buckets the
# manifests' source_path values name (the consortium's and the universities').
MANIFEST_BUCKET = "ego4d-consortium-sharing"
RELEASES_PREFIX = "egoexo-public/"
DEFAULT_BASE_DIR = f"s3://{MANIFEST_BUCKET}/{RELEASES_PREFIX}"
DEFAULT_RELEASE = "v2"
MANIFEST_NAME = "manifest.json"

ALL = "all"
DEFAULT = "default"
# The original's ``all`` set, in the order of its --parts help text.
PARTS: tuple[str, ...] = (
    "metadata",
    "annotations",
    "takes",
    "take_vrs_noimagestream",
    "take_trajectory",
    "take_eye_gaze",
    "take_point_cloud",
    "take_vrs",
    "take_audio",
    "take_transcription",
    "captures",
    "capture_trajectory",
    "capture_eye_gaze",
    "capture_point_cloud",
    "downscaled_takes/448",
    "features/omnivore_video",
    "features/maws_clip_2b",
    "ego_pose_pseudo_gt",
    "expert_commentary",
)
# The original's ``default`` set (also what it downloads when --parts is not given).
DEFAULT_PARTS: tuple[str, ...] = (
    "metadata",
    "annotations",
    "takes",
    "take_vrs_noimagestream",
    "take_trajectory",
    "captures",
)

# A release name becomes part of an S3 key: one plain segment, never "..".
_RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_BASE_DIR_RE = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])/(?P<prefix>.*)$")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseRoot:
    """Where a release's manifests are: ``s3://<bucket>/<prefix>``; ``prefix`` ends with ``/``."""

    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        """``s3://ego4d-consortium-sharing/egoexo-public/v2/`` for the default release."""
        return f"s3://{self.bucket}/{self.prefix}"

    def manifest_key(self, part: str) -> str:
        """The key of a part's manifest: ``egoexo-public/v2/takes/manifest.json``."""
        return f"{self.prefix}{part}/{MANIFEST_NAME}"


def release_root(release: str = DEFAULT_RELEASE, base_dir: str = DEFAULT_BASE_DIR) -> ReleaseRoot:
    """The root of ``release`` under ``base_dir`` (the original's ``--release``, ``--base_dir``).

    A ``ConfigError`` when ``base_dir`` is not an ``s3://bucket/...`` URL or ``release`` is not
    one plain name (the original joined either as given, so ``--release ../x`` left the
    release folder). Whether the release exists is the bucket's to say.
    """
    base = _BASE_DIR_RE.match(base_dir.strip())
    if base is None:
        raise ConfigError(f"--base_dir must be an s3://bucket/folder/ URL, not {base_dir!r}")
    name = release.strip().strip("/")
    if not _RELEASE_RE.match(name):
        raise ConfigError(
            f"invalid release {release!r}: a release is one folder name such as {DEFAULT_RELEASE}"
        )
    prefix = base["prefix"]
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if any(seg in ("", ".", "..") for seg in prefix.split("/")[:-1]):
        raise ConfigError(f"--base_dir {base_dir!r} holds an empty, '.' or '..' folder")
    return ReleaseRoot(bucket=base["bucket"], prefix=f"{prefix}{name}/")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpandedParts:
    """The parts a ``--parts`` list names, in catalog order, with the notes the original
    prints about the expansion (``all`` replacing the rest, what ``default`` stands for)."""

    parts: tuple[str, ...]
    notes: tuple[str, ...]


def expand_parts(requested: Iterable[str], *, known: Collection[str] = PARTS) -> ExpandedParts:
    """``--parts`` as the original reads it: ``all`` is every part and makes the others
    ignored; ``default`` adds ``DEFAULT_PARTS`` to whatever else is named; duplicates count
    once; nothing given means ``default``.

    ``known`` are the valid names (a later release may list more). A name that is none of them
    is a ``ConfigError`` naming the valid ones; the original only found out when the part's
    manifest was missing from S3 ("some supplied parts do not exist"), after reading the others.
    """
    names = [n.strip() for n in requested]
    notes: list[str] = []
    if not names:
        names = [DEFAULT]
    chosen = set(names)
    if ALL in chosen:
        ignored = sorted(chosen - {ALL})
        if ignored:
            notes.append(
                f"--parts all given: ignoring the other parts supplied ({', '.join(ignored)})"
            )
        chosen = set(known)
    elif DEFAULT in chosen:
        chosen.discard(DEFAULT)
        chosen.update(DEFAULT_PARTS)
        notes.append(f"--parts default stands for: {' '.join(DEFAULT_PARTS)}")
    unknown = sorted(chosen - set(known))
    if unknown:
        raise ConfigError(_unknown_parts_message(unknown, known))
    order = {part: i for i, part in enumerate((*PARTS, *sorted(set(known) - set(PARTS))))}
    return ExpandedParts(parts=tuple(sorted(chosen, key=order.__getitem__)), notes=tuple(notes))


def _unknown_parts_message(unknown: list[str], known: Collection[str]) -> str:
    shown = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(known), n=2, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        shown.append(f"{name!r}{hint}")
    valid = ", ".join((*[p for p in PARTS if p in known], *sorted(set(known) - set(PARTS))))
    return (
        f"some supplied parts do not exist: {', '.join(shown)}; the parts are {valid}, "
        f"or {DEFAULT} ({' '.join(DEFAULT_PARTS)}) or {ALL}"
    )
