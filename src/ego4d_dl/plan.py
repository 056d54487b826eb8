"""What to fetch: selected manifest rows, their destinations and actions; pure.

Decides, never does: the planner (``planner.py``) gathers manifests and remote metadata and
hands them here. Destinations always resolve inside the output directory and never collide.
Imports ``catalog``, ``manifest`` and ``errors``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

from .catalog import VIDEO_DATASETS, major_version
from .errors import PlanError
from .manifest import MalformedRow, ManifestHeader, ManifestRow, Selection

__all__ = [
    "RESERVED_NAMES",
    "Action",
    "DatasetPlan",
    "DatasetSelection",
    "LocalIndex",
    "LocalState",
    "Plan",
    "PlannedFile",
    "Totals",
    "dataset_dir",
    "select_rows",
]

# Files the tool itself keeps in a dataset folder (the original CLI's names).
RESERVED_NAMES = frozenset({"manifest.csv", "manifest.ver"})
PART_SUFFIX = ".part"


class Action(Enum):
    """What the download will do with one file."""

    FETCH = "fetch"  # nothing usable on disk
    RESUME = "resume"  # a journaled partial download continues
    REFETCH = "refetch"  # the local copy is stale or damaged
    SKIP = "skip"  # complete and unchanged
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
    bucket: str
    key: str
    dest: Path
    size_bytes: int
    etag: str
    action: Action
    present_bytes: int = 0  # bytes already on disk and journaled (for RESUME)
    note: str = ""  # why: 404 text, reason for a refetch, ...

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
    problem_files: int = 0

    @classmethod
    def of(cls, files: Iterable[PlannedFile]) -> Totals:
        """Add up ``files``."""
        n = size = done_n = done_b = fetch_n = fetch_b = resume_n = problems = 0
        for f in files:
            n += 1
            size += f.size_bytes
            if f.action is Action.SKIP:
                done_n += 1
                done_b += f.size_bytes
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


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalState:
    """What is on disk for one planned file."""

    action: Action
    present_bytes: int = 0
    note: str = ""


class LocalIndex(Protocol):
    """Knows what is already downloaded; the journal is one, ``DiskIndex`` the fallback."""

    def classify(
        self, *, dest: Path, bucket: str, key: str, size_bytes: int, etag: str
    ) -> LocalState:
        """How far ``dest`` is from holding this object version."""
        ...


def dataset_dir(output_directory: Path, version: str, dataset: str) -> Path:
    """``<out>/<major version>/<dataset>``, the original CLI's layout."""
    return output_directory / major_version(version) / dataset


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
        if previous is not None:
            if (previous.bucket, previous.key) == (item.bucket, item.key):
                warnings.append(
                    f"{dataset}: line {item.line} repeats line {previous.line}; downloaded once"
                )
                continue
            raise PlanError(
                f"{dataset}: lines {previous.line} and {item.line} would both write "
                f"{item.filename!r} (s3://{previous.bucket}/{previous.key} and "
                f"s3://{item.bucket}/{item.key}); refusing to overwrite one with the other"
            )
        if item.filename in RESERVED_NAMES:
            raise PlanError(
                f"{dataset}: line {item.line} would overwrite the tool's own {item.filename}"
            )
        seen[item.filename] = item
        rows.append(item)
    names = set(seen)
    for name in names:
        if name.endswith(PART_SUFFIX) and name[: -len(PART_SUFFIX)] in names:
            raise PlanError(
                f"{dataset}: {name!r} would clash with the temporary file of "
                f"{name[: -len(PART_SUFFIX)]!r}"
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
