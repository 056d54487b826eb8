"""What to fetch: selected manifest rows, their destinations and actions; pure."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .catalog import major_version
from .manifest import MalformedRow
from .ondisk import Classification, ObjectVersion, OfVersion, OnDisk

__all__ = [
    "Action",
    "DatasetPlan",
    "Plan",
    "PlannedFile",
    "Totals",
    "action_for",
    "dataset_dir",
    "fold_name",
]


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
class PlannedFile(OfVersion):
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
    # The release's manifests to keep in the output folder: relative path -> bytes.
    manifests: Mapping[str, bytes] = field(default_factory=dict)
    family: str = "Ego4D"

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
