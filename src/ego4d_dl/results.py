"""What the commands find, as values: verify's verdicts, doctor's findings, status counts."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Self

from .etags import Layout
from .events import RunSummary
from .planned import Plan, PlannedFile
from .shard import Shard

__all__ = [
    "Blame",
    "DatasetStatus",
    "Diagnosis",
    "FileCheck",
    "Finding",
    "Severity",
    "ShardStatus",
    "Status",
    "StatusCounts",
    "Verdict",
    "VerifyResult",
]


class Verdict(StrEnum):
    """What a check found."""

    OK = "ok"  # the bytes match the ETag (or the size, where the ETag proves nothing more)
    MISSING = "missing"  # not on disk
    TRUNCATED = "truncated"  # shorter than the object
    OVERSIZED = "oversized"  # longer than the object
    CORRUPT = "corrupt"  # the right size, the wrong bytes
    CHANGED = "changed"  # the object was replaced on the server since this copy was made
    INCOMPLETE = "incomplete"  # a partial download that the next run resumes
    UNAVAILABLE = "unavailable"  # the server has no such object, or denies it
    UNCHECKED = "unchecked"  # the check itself failed (a layout lookup ran out of retries)
    FOREIGN = "foreign"  # a link where the file should be: replaced on repair, never followed
    BLOCKED = "blocked"  # a directory or special file in the way: never removed for us

    @property
    def repairable(self) -> bool:
        """Whether fetching the object again would fix it."""
        return self in _REPAIRABLE


_REPAIRABLE = frozenset(
    {
        Verdict.MISSING,
        Verdict.TRUNCATED,
        Verdict.OVERSIZED,
        Verdict.CORRUPT,
        Verdict.CHANGED,
        Verdict.INCOMPLETE,
        Verdict.FOREIGN,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileCheck:
    """The outcome of checking one planned file, and the layout learnt on the way."""

    planned: PlannedFile
    verdict: Verdict
    level: str = ""  # a VerifyLevel value when the verdict is OK
    reason: str = ""
    layout: Layout | None = None
    st: os.stat_result | None = None  # of the file as it was checked (OK verdicts)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    """Every planned file's verdict and, with ``--repair``, what the repair run did."""

    plan: Plan
    checks: tuple[FileCheck, ...]
    elapsed_s: float
    repair: RunSummary | None = None
    # A damaged journal that --repair set aside and rebuilt: where the old one now is.
    rebuilt_from: Path | None = None

    @property
    def bad(self) -> tuple[FileCheck, ...]:
        """The checks that found something wrong."""
        return tuple(c for c in self.checks if c.verdict is not Verdict.OK)

    @property
    def counts(self) -> dict[str, int]:
        """How many files got each verdict."""
        return dict(Counter(c.verdict.value for c in self.checks))

    @property
    def hashed_bytes(self) -> int:
        """Bytes read back from disk and hashed."""
        return sum(
            c.planned.size_bytes
            for c in self.checks
            if c.verdict in (Verdict.OK, Verdict.CORRUPT) and c.level != "size"
        )

    @property
    def ok(self) -> bool:
        """Every file is good, or was bad in a way the repair run fixed."""
        if not self.bad:
            return True
        if self.repair is None:
            return False
        return self.repair.ok and all(c.verdict.repairable for c in self.bad)


class Severity(StrEnum):
    """How a check came out."""

    OK = "ok"
    WARN = "warn"  # a download would start, but something deserves attention
    FAIL = "fail"  # a download would not start, or not get far
    SKIP = "skip"  # not checked, because an earlier check failed


class Blame(StrEnum):
    """What a failure is about, which decides the exit code."""

    NONE = ""
    CONFIG = "config"  # flags, profile, output directory (exit 2)
    CREDENTIALS = "credentials"  # the keys or the clock they are signed with (exit 3)
    NETWORK = "network"  # the endpoint or a bucket cannot be reached (exit 1)
    ACCESS = "access"  # reachable, but files are denied or missing (exit 1)
    DISK = "disk"  # not enough free space (exit 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """The outcome of one check, in words a user can act on."""

    check: str
    severity: Severity
    detail: str
    blame: Blame = Blame.NONE


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnosis:
    """Every finding, and the plan when one could be made."""

    findings: tuple[Finding, ...]
    plan: Plan | None = None

    @property
    def would_start(self) -> bool:
        """Whether a download with these options would start."""
        return all(f.severity is not Severity.FAIL for f in self.findings)

    @property
    def blame(self) -> Blame:
        """The most serious failure's kind: credentials, then configuration, then the rest."""
        failed = {f.blame for f in self.findings if f.severity is Severity.FAIL}
        for kind in (Blame.CREDENTIALS, Blame.CONFIG, Blame.NETWORK, Blame.ACCESS, Blame.DISK):
            if kind in failed:
                return kind
        return Blame.NONE


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusCounts:
    """Files (and bytes, where known) of one shard, dataset or total, by state."""

    files: int = 0
    complete_files: int = 0
    complete_bytes: int = 0
    partial_files: int = 0
    partial_done_bytes: int = 0  # already on disk and journaled
    partial_size_bytes: int = 0
    fetch_files: int = 0
    fetch_known_bytes: int = 0  # bytes to fetch of files whose size a journal knows
    fetch_unknown_files: int = 0  # files to fetch whose size no journal knows
    # On disk at full name, in no journal: the next download adopts them (after a check).
    unjournaled_files: int = 0
    unjournaled_bytes: int = 0

    @classmethod
    def total(cls, parts: Iterable[StatusCounts]) -> Self:
        """The field-wise sum of ``parts``."""
        sums = dict.fromkeys((f.name for f in fields(cls)), 0)
        for part in parts:
            for name in sums:
                sums[name] += getattr(part, name)
        return cls(**sums)


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetStatus:
    """One dataset within one shard (or within the whole directory)."""

    name: str
    counts: StatusCounts


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardStatus:
    """One shard: its journal (``None``: never started) and its datasets."""

    shard: Shard | None  # None: an unsharded directory
    journal: Path | None
    datasets: tuple[DatasetStatus, ...]

    @property
    def counts(self) -> StatusCounts:
        """The shard's totals."""
        return StatusCounts.total(d.counts for d in self.datasets)


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """The directory: shards, datasets across shards, totals, and what to be wary of."""

    output_directory: Path
    version: str
    shard_count: int | None
    shards: tuple[ShardStatus, ...]
    datasets: tuple[DatasetStatus, ...]
    journals: tuple[Path, ...]
    warnings: tuple[str, ...] = ()
    family: str = "Ego4D"

    @property
    def counts(self) -> StatusCounts:
        """The directory's totals."""
        return StatusCounts.total(d.counts for d in self.datasets)
