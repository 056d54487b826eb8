"""What to fetch: selected manifest rows, their destinations and actions; pure.

Decides, never does: the planner (``planner.py``) gathers manifests, remote metadata and what
is on disk (``ondisk``) and hands them here. Destinations always resolve inside the output
directory and never collide, not even on a case-insensitive or normalising filesystem.
Imports ``catalog``, ``manifest``, ``ondisk`` and ``errors``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .catalog import VIDEO_DATASETS, major_version
from .errors import PlanError
from .manifest import MalformedRow, ManifestHeader, ManifestRow, Selection
from .ondisk import PART_SUFFIX, Classification, ObjectVersion, OnDisk

__all__ = [
    "RESERVED_NAMES",
    "Action",
    "DatasetPlan",
    "DatasetSelection",
    "Plan",
    "PlannedFile",
    "Totals",
    "action_for",
    "dataset_dir",
    "fold_name",
    "select_rows",
]

# Files the tool itself keeps in a dataset folder (the original CLI's names).
RESERVED_NAMES = frozenset({"manifest.csv", "manifest.ver"})


class Action(Enum):
    """What the download will do with one file."""

    FETCH = "fetch"  # nothing usable on disk
    RESUME = "resume"  # a journaled partial download continues
    REFETCH = "refetch"  # the local copy is stale or damaged
    SKIP = "skip"  # complete and unchanged
    ADOPT = "adopt"  # on disk at full size, not journaled here: checked, then kept
    MISSING = "missing"  # the server answered 404
    DENIED = "denied"  # the server answered 403 for this object
    FAILED = "failed"  # the lookup itself failed (network, retries exhausted)

    @property
    def transfers(self) -> bool:
        """Whether this action moves bytes."""
        return self in (Action.FETCH, Action.RESUME, Action.REFETCH)

    @property
    def is_problem(self) -> bool:
        """Whether the file cannot be had in this run."""
        return self in (Action.MISSING, Action.DENIED, Action.FAILED)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedFile:
    """One file of the plan: where it comes from, where it goes, what happens to it."""

    dataset: str
    uid: str
    version: ObjectVersion
    dest: Path
    action: Action
    present_bytes: int = 0  # bytes already on disk and journaled (for RESUME)
    note: str = ""  # why: 404 text, reason for a refetch, ...
    # ADOPT: how the file is taken (another journal vouches, or it is read back first).
    found: Classification | None = None

    @property
    def bucket(self) -> str:
        return self.version.bucket

    @property
    def key(self) -> str:
        return self.version.key

    @property
    def etag(self) -> str:
        return self.version.etag

    @property
    def size_bytes(self) -> int:
        """The object's size (0 for a file whose lookup failed)."""
        return self.version.size_bytes or 0

    @property
    def bytes_to_fetch(self) -> int:
        """Bytes this file still needs from the network."""
        return self.size_bytes - self.present_bytes if self.action.transfers else 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Totals:
    """Counts and bytes of a set of planned files."""

    files: int = 0
    size_bytes: int = 0
    complete_files: int = 0
    complete_bytes: int = 0
    fetch_files: int = 0
    fetch_bytes: int = 0
    resume_files: int = 0
    adopt_files: int = 0
    adopt_bytes: int = 0
    problem_files: int = 0

    @classmethod
    def of(cls, files: Iterable[PlannedFile]) -> Totals:
        """Add up ``files``."""
        n = size = done_n = done_b = fetch_n = fetch_b = resume_n = problems = 0
        adopt_n = adopt_b = 0
        for f in files:
            n += 1
            size += f.size_bytes
            if f.action is Action.SKIP:
                done_n += 1
                done_b += f.size_bytes
            elif f.action is Action.ADOPT:
                adopt_n += 1
                adopt_b += f.size_bytes
            elif f.action.transfers:
                fetch_n += 1
                fetch_b += f.bytes_to_fetch
                resume_n += f.action is Action.RESUME
            else:
                problems += 1
        return cls(
            files=n,
            size_bytes=size,
            complete_files=done_n,
            complete_bytes=done_b,
            fetch_files=fetch_n,
            fetch_bytes=fetch_b,
            resume_files=resume_n,
            adopt_files=adopt_n,
            adopt_bytes=adopt_b,
            problem_files=problems,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetSelection:
    """The rows of one dataset that the user's filters admit, and what was left out and why."""

    dataset: str
    rows: tuple[ManifestRow, ...]
    malformed: tuple[MalformedRow, ...]
    unknown_uids: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetPlan:
    """One dataset of the plan."""

    name: str
    files: tuple[PlannedFile, ...]
    malformed: tuple[MalformedRow, ...] = ()
    unknown_uids: tuple[str, ...] = ()

    @property
    def totals(self) -> Totals:
        """Counts and bytes of this dataset."""
        return Totals.of(self.files)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The whole plan of a run."""

    version: str
    output_directory: Path
    datasets: tuple[DatasetPlan, ...]
    warnings: tuple[str, ...] = ()
    manifests: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def files(self) -> tuple[PlannedFile, ...]:
        """Every planned file, dataset by dataset."""
        return tuple(f for d in self.datasets for f in d.files)

    @property
    def totals(self) -> Totals:
        """Counts and bytes of the whole plan."""
        return Totals.of(self.files)


def action_for(found: Classification) -> Action:
    """What a download does with a file, given ``ondisk.classify``'s verdict on it."""
    if found.verdict is OnDisk.FOREIGN and found.blocked:
        return Action.FAILED
    return _ACTIONS[found.verdict]


_ACTIONS = {
    OnDisk.ABSENT: Action.FETCH,
    OnDisk.COMPLETE: Action.SKIP,
    OnDisk.RESUMABLE: Action.RESUME,
    OnDisk.ADOPTABLE: Action.ADOPT,
    OnDisk.STALE: Action.REFETCH,
    OnDisk.DAMAGED: Action.REFETCH,
    OnDisk.FOREIGN: Action.REFETCH,
}


def fold_name(name: str) -> str:
    """The name as a case-insensitive, normalising filesystem sees it (exFAT, SMB shares, WSL's
    ``/mnt/c``, casefolded ext4, APFS): NFC, then Unicode case folding."""
    return unicodedata.normalize("NFC", name).casefold()


def dataset_dir(output_directory: Path, version: str, dataset: str) -> Path:
    """``<out>/<major version>/<dataset>``, the original CLI's layout."""
    return output_directory / major_version(version) / dataset


_RESERVED_FOLDED = frozenset(fold_name(n) for n in RESERVED_NAMES)


def _refuse_collision(dataset: str, folded: dict[str, ManifestRow], item: ManifestRow) -> None:
    """Refuse two rows that would write one file, by exact name or by the rules of a
    case-insensitive or normalising filesystem; remember ``item`` otherwise."""
    key = fold_name(item.filename)
    previous = folded.get(key)
    if previous is None:
        folded[key] = item
        return
    if previous.filename == item.filename:
        names = f"{item.filename!r}"
    else:
        names = (
            f"{previous.filename!r} and {item.filename!r}, one file on a case-insensitive or "
            "normalising filesystem (exFAT, SMB, WSL /mnt/c, casefolded ext4)"
        )
    raise PlanError(
        f"{dataset}: lines {previous.line} and {item.line} would both write {names} "
        f"(s3://{previous.bucket}/{previous.key} and s3://{item.bucket}/{item.key}); "
        "refusing to overwrite one with the other"
    )


def select_rows(
    dataset: str,
    header: ManifestHeader,
    parsed: Iterable[ManifestRow | MalformedRow],
    selection: Selection,
) -> DatasetSelection:
    """Apply the filters to one dataset's parsed rows.

    As in the original CLI, UID filters apply to video datasets only and a benchmark filter
    is ignored (with a warning) for a manifest without a benchmarks column. Requested UIDs
    that the manifest lacks are reported, not fatal. Identical repeated rows collapse into one.
    """
    if selection.benchmarks and not header.has_benchmarks:
        selection = Selection(universities=selection.universities, uids=selection.uids)
        ignored_benchmarks = True
    else:
        ignored_benchmarks = False
    rows: list[ManifestRow] = []
    malformed: list[MalformedRow] = []
    warnings: list[str] = []
    seen: dict[str, ManifestRow] = {}
    folded: dict[str, ManifestRow] = {}  # by the name a case-insensitive filesystem sees
    present_uids: set[str] = set()
    uid_filter = selection.uids if dataset in VIDEO_DATASETS else frozenset()
    for item in parsed:
        if isinstance(item, MalformedRow):
            malformed.append(item)
            continue
        present_uids.add(item.uid)
        if uid_filter and item.uid not in uid_filter:
            continue
        if not selection.admits(item):
            continue
        previous = seen.get(item.filename)
        if previous is not None and (previous.bucket, previous.key) == (item.bucket, item.key):
            warnings.append(
                f"{dataset}: line {item.line} repeats line {previous.line}; downloaded once"
            )
            continue
        if fold_name(item.filename) in _RESERVED_FOLDED:
            raise PlanError(
                f"{dataset}: line {item.line} would overwrite the tool's own {item.filename}"
            )
        _refuse_collision(dataset, folded, item)
        seen[item.filename] = item
        rows.append(item)
    for row in rows:
        if fold_name(row.filename).endswith(PART_SUFFIX):
            base = folded.get(fold_name(row.filename)[: -len(PART_SUFFIX)])
            if base is not None:
                raise PlanError(
                    f"{dataset}: {row.filename!r} (line {row.line}) would clash with the "
                    f"temporary file of {base.filename!r} (line {base.line})"
                )
    if ignored_benchmarks:
        warnings.append(f"{dataset}: the manifest has no benchmarks column; --benchmarks ignored")
    if selection.uids and dataset not in VIDEO_DATASETS:
        warnings.append(f"{dataset}: --video_uids applies to video datasets only; ignored here")
    unknown = tuple(sorted(uid_filter - present_uids))
    return DatasetSelection(
        dataset=dataset,
        rows=tuple(rows),
        malformed=tuple(malformed),
        unknown_uids=unknown,
        warnings=tuple(warnings),
    )
