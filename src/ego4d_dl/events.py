"""Progress events and the sink protocol; pure values, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

__all__ = [
    "BytesHashed",
    "BytesReceived",
    "CheckStarted",
    "ConcurrencyCause",
    "ConcurrencyChanged",
    "Event",
    "EventSink",
    "FileChecked",
    "FileFailed",
    "FileOutcome",
    "FileRestarted",
    "FileSkipped",
    "FileStarted",
    "FileStatus",
    "FileVerified",
    "IntegrityFailed",
    "ManifestLoaded",
    "ObjectsLookedUp",
    "PlanBuilt",
    "RangeRetried",
    "RunFinished",
    "RunStarted",
    "RunSummary",
    "StopKind",
    "discard",
]


class FileStatus(StrEnum):
    """Why a file could not be had."""

    MISSING = "missing"  # the server answered 404
    DENIED = "denied"  # 403 for this object, although the keys are good
    FAILED = "failed"  # anything else: retries ran out, integrity kept failing, disk error


class StopKind(StrEnum):
    """Why a run stopped before every file was tried."""

    CREDENTIALS = "credentials"  # keys rejected or expired: renew them, run again
    DISK = "disk"  # no space left (or the journal cannot be written)
    NETWORK = "network"  # the endpoint stayed unreachable
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM, or output that could not be written


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestLoaded:
    """A dataset's manifest was fetched and parsed."""

    dataset: str
    rows: int
    selected: int
    malformed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectsLookedUp:
    """``count`` more objects' sizes and ETags are known (of ``total``)."""

    count: int
    total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanBuilt:
    """The plan is ready: what it holds and what the lookups cost."""

    files: int
    size_bytes: int
    fetch_bytes: int
    heads: int
    list_pages: int
    elapsed_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    """The engine starts on a plan: totals and the concurrency it begins with."""

    files: int
    size_bytes: int
    present_bytes: int
    fetch_bytes: int
    skipped_files: int
    concurrency: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileStarted:
    """A file's transfer began (``present_bytes`` were already on disk from a previous run)."""

    dataset: str
    key: str
    dest: Path
    size_bytes: int
    present_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BytesReceived:
    """``count`` more bytes of ``key`` were written to its part file."""

    dataset: str
    key: str
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeRetried:
    """A ranged GET failed transiently and will be retried after ``delay_s``."""

    dataset: str
    key: str
    start: int
    stop: int
    attempt: int
    delay_s: float
    reason: str
    throttled: bool = False
    stalled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class FileRestarted:
    """The object changed on the server (412 / new ETag): its download starts over."""

    dataset: str
    key: str
    old_etag: str
    new_etag: str
    discarded_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrityFailed:
    """Bytes on disk did not match the ETag; the named ranges are fetched again."""

    dataset: str
    key: str
    reason: str
    refetch_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileVerified:
    """A file is verified and at its final path."""

    dataset: str
    key: str
    dest: Path
    size_bytes: int
    level: str
    fetched_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSkipped:
    """A file was already complete; nothing was fetched."""

    dataset: str
    key: str
    dest: Path
    size_bytes: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FileFailed:
    """A file could not be had, and why."""

    dataset: str
    key: str
    dest: Path
    status: FileStatus
    reason: str


class ConcurrencyCause(StrEnum):
    """Why the limit on requests in flight moved."""

    THROTTLED = "throttled"  # the server answered SlowDown (503) or 429: halved
    RECOVERING = "recovering"  # a fixed --concurrency N growing back to N after throttling
    PROBING = "probing"  # adaptive: trying more requests, to see whether the rate grows
    GREW = "rate grew"  # adaptive: more requests made the rate grow; trying more still
    NO_GAIN = "no gain"  # adaptive: more requests did not make it faster: back to fewer
    LATENCY = "latency rose"  # adaptive: time to first byte climbed: trying fewer


@dataclass(frozen=True, slots=True, kw_only=True)
class ConcurrencyChanged:
    """The limit on requests in flight moved: ``limit`` from now on, ``cause`` and ``reason``
    (a short sentence with the measurement behind it) say why."""

    limit: int
    reason: str
    cause: ConcurrencyCause = ConcurrencyCause.THROTTLED

    @property
    def is_warning(self) -> bool:
        """Throttling, and growing back from it, is worth a warning line; the adaptive
        search for the link's rate is routine (the dashboard shows it, JSON has it)."""
        return self.cause in (ConcurrencyCause.THROTTLED, ConcurrencyCause.RECOVERING)


@dataclass(frozen=True, slots=True, kw_only=True)
class FileOutcome:
    """How one file ended, for the summary's list of problems."""

    dataset: str
    uid: str
    key: str
    dest: Path
    status: FileStatus
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary:
    """Everything a run did; the exit code is derived from it."""

    files: int
    verified: int
    skipped: int
    failed: int
    missing: int
    denied: int
    bytes_fetched: int
    size_bytes: int
    elapsed_s: float
    retries: int
    restarts: int
    levels: Mapping[str, int]
    problems: tuple[FileOutcome, ...]
    stopped_by: str | None = None
    stop_kind: StopKind | None = None

    @classmethod
    def empty(cls) -> RunSummary:
        """The summary of a run that had nothing to do."""
        return cls(
            files=0,
            verified=0,
            skipped=0,
            failed=0,
            missing=0,
            denied=0,
            bytes_fetched=0,
            size_bytes=0,
            elapsed_s=0.0,
            retries=0,
            restarts=0,
            levels={},
            problems=(),
        )

    @property
    def ok(self) -> bool:
        """Every requested file is complete and verified."""
        return self.stopped_by is None and not (self.failed or self.missing or self.denied)

    @property
    def throughput_bytes_s(self) -> float:
        """Mean bytes per second over the whole run."""
        return self.bytes_fetched / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished:
    """The run ended (completed, failed in part, or stopped)."""

    summary: RunSummary


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckStarted:
    """Files already on disk are about to be read back and checked (verify, adoption)."""

    files: int
    size_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BytesHashed:
    """``count`` more bytes of ``key`` were read back from disk and hashed."""

    dataset: str
    key: str
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileChecked:
    """A file on disk was checked: ``verdict`` is ``ok``, ``missing``, ``truncated``, ..."""

    dataset: str
    key: str
    dest: Path
    size_bytes: int
    verdict: str
    level: str
    reason: str


Event = (
    ManifestLoaded
    | ObjectsLookedUp
    | PlanBuilt
    | RunStarted
    | FileStarted
    | BytesReceived
    | RangeRetried
    | FileRestarted
    | IntegrityFailed
    | FileVerified
    | FileSkipped
    | FileFailed
    | ConcurrencyChanged
    | RunFinished
    | CheckStarted
    | BytesHashed
    | FileChecked
)
EventSink = Callable[[Event], None]


def discard(event: Event) -> None:
    """A sink that ignores everything."""
