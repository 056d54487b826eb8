"""Values of a run: its settings, the state of one transfer, and why a run stopped."""

from __future__ import annotations

import resource
from dataclasses import dataclass, field

from ..config import Options
from ..events import FileOutcome, StopKind
from ..files import PartFile
from ..ondisk import ObjectVersion
from ..planned import PlannedFile
from ..retry import RetryPolicy

__all__ = ["Counters", "EngineSettings", "RunStopped", "Transfer"]

MiB = 1024 * 1024
_OPEN_FILES = 64
# File descriptors left for the journal, the interpreter, the event loop and threads.
_SPARE_FDS = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSettings:
    """Tunables of a run; defaults are the measured ones (see BENCHMARKS.md)."""

    # Requests in flight. ``max_concurrency`` None: ``concurrency`` exactly (a user's
    # --concurrency N; halved under throttling, then grown back). Otherwise adaptive: from
    # ``concurrency`` up to ``max_concurrency``, following the measured rate (concurrency.py).
    concurrency: int = 16
    max_concurrency: int | None = None
    max_open_files: int = _OPEN_FILES
    # Verified parts waiting for their batched rename stay open (and locked) until then.
    max_finished_parts: int = 256
    max_piece_bytes: int = 16 * MiB
    chunk_bytes: int = 1 * MiB
    # Objects up to this size take one GET and one writer-thread hop (see _fetch_small):
    # per-file overheads dominate thousands of annotation-sized files.
    small_object_bytes: int = 1 * MiB
    verify: str = "etag"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Restarts of one file after its object changed or its bytes failed verification.
    max_restarts: int = 3
    commit_interval_s: float = 0.5

    @property
    def max_requests(self) -> int:
        """The most requests that can ever be in flight: what the connection pool needs."""
        return max(self.concurrency, self.max_concurrency or 0)

    @classmethod
    def from_options(cls, options: Options, *, fd_limit: int | None = None) -> EngineSettings:
        """A download's settings: the user's ``--concurrency N`` exactly, or adaptive.

        Adaptive runs may open as many files as requests (each small file is one request),
        and keep files and sockets (besides the finished parts held for their rename) within
        ``fd_limit``, the process's file descriptors (default: its soft RLIMIT_NOFILE).
        """
        if options.max_concurrency is None:
            return cls(concurrency=options.concurrency, verify=options.verify)
        if fd_limit is None:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            fd_limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
        budget = (fd_limit - _SPARE_FDS - cls().max_finished_parts) // 2
        ceiling = max(options.concurrency, min(options.max_concurrency, budget))
        return cls(
            concurrency=options.concurrency,
            max_concurrency=ceiling,
            max_open_files=max(_OPEN_FILES, ceiling),
            verify=options.verify,
        )


class RunStopped(Exception):
    """Raised inside the run to stop scheduling: credentials, disk or network are gone."""

    def __init__(self, kind: StopKind, error: Exception) -> None:
        super().__init__(str(error))
        self.kind = kind
        self.error = error


@dataclass(slots=True, kw_only=True)
class Transfer:
    """The mutable state of one file being transferred."""

    planned: PlannedFile
    etag: str
    size_bytes: int
    object_id: int = 0
    layout: tuple[int, ...] = ()
    layout_exact: bool = False
    part: PartFile | None = None
    # Digest of each upload part, when known without reading the disk.
    part_md5: dict[int, bytes] = field(default_factory=dict)
    fetched_bytes: int = 0

    @property
    def key(self) -> str:
        return self.planned.key

    @property
    def version(self) -> ObjectVersion:
        """The object version this transfer fetches now (a restart may move it on)."""
        return ObjectVersion(
            bucket=self.planned.bucket, key=self.key, etag=self.etag, size_bytes=self.size_bytes
        )

    @property
    def dataset(self) -> str:
        return self.planned.dataset


@dataclass(slots=True, kw_only=True)
class Counters:
    """What a run has done so far, for its summary (written on the event-loop thread only)."""

    bytes_fetched: int = 0
    retries: int = 0
    restarts: int = 0
    verified: int = 0
    skipped: int = 0
    levels: dict[str, int] = field(default_factory=dict)
    problems: list[FileOutcome] = field(default_factory=list)
