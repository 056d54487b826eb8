"""One download run: plan against the journal, keep the manifests, confirm, run the engine.

Orchestration shared by ``ego4d-dl download`` and ``ego4d-dl demo``; the questions it must ask
the user (confirmation) and the engine handle (for Ctrl-C) go through callbacks, so nothing
here prints or reads a terminal. Files on disk that the journal does not know (the original
CLI's, another shard's) are adopted before the free-space check (``adopt``). Imports ``engine``,
``planner``, ``adopt``, ``bandwidth``, ``journal``, ``files``, ``store``, ``plan``, ``config``,
``events`` and ``errors``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .adopt import Adoption, adopt_existing
from .bandwidth import TokenBucket
from .config import Options
from .engine import Engine, EngineSettings
from .errors import DiskFullError
from .events import EventSink, RunSummary
from .files import part_path
from .journal import Journal, JournalIndex, journal_path
from .plan import Plan, PlannedFile, dataset_dir
from .planner import build_plan
from .store import S3Store

__all__ = [
    "DownloadResult",
    "check_free_space",
    "default_jobs",
    "free_bytes",
    "make_engine",
    "make_throttle",
    "run_download",
    "save_manifests",
    "space_needed",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadResult:
    """What a run did: its plan and, unless it stopped before the engine, its summary."""

    plan: Plan
    summary: RunSummary | None
    declined: bool = False
    adoption: Adoption | None = None


def free_bytes(path: Path) -> int | None:
    """Free space on the filesystem that holds (or will hold) ``path``."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def space_needed(files: Sequence[PlannedFile]) -> int:
    """Bytes of new disk space the transfers need: their sizes, less what their part files
    already hold (a resumed file's space was reserved by the run that began it)."""
    need = 0
    for f in files:
        if not f.action.transfers:
            continue
        try:
            held = part_path(f.dest).stat().st_blocks * 512
        except OSError:
            held = 0
        need += max(0, f.size_bytes - held)
    return need


def check_free_space(out: Path, need_bytes: int) -> None:
    """Refuse (``DiskFullError``) to start with less than ``need_bytes`` free in ``out``."""
    free = free_bytes(out)
    if free is not None and need_bytes > free:
        raise DiskFullError(
            f"not enough free space in {out}: {_size(need_bytes)} more needed, {_size(free)} "
            "free (free some space, narrow the selection, or pass --no-space-check)"
        )


def _size(n: int) -> str:
    short = f"{n / 1024**3:,.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:,.1f} MiB"
    return f"{short} ({n:,} bytes)"


def default_jobs() -> int:
    """Files hashed at once when reading files back: one per core (hashing is CPU-bound)."""
    return max(2, os.cpu_count() or 2)


def make_engine(
    options: Options,
    settings: EngineSettings,
    *,
    store: S3Store,
    journal: Journal,
    sink: EventSink,
) -> Engine:
    """The engine for one run: its store, journal and sink, and the ``--max-bandwidth`` cap."""
    throttle = make_throttle(options, settings)
    return Engine(
        store=store,
        journal=journal,
        output_directory=options.output_directory,
        settings=settings,
        sink=sink,
        reload_credentials=store.reload_credentials,
        throttle=throttle.acquire if throttle is not None else None,
    )


def make_throttle(options: Options, settings: EngineSettings) -> TokenBucket | None:
    """The run's shared ``--max-bandwidth`` bucket, or ``None`` without a cap."""
    if options.max_bandwidth_bytes_s is None:
        return None
    # One chunk of burst: anything larger would show as overshoot in a short measured run.
    return TokenBucket(options.max_bandwidth_bytes_s, burst_bytes=settings.chunk_bytes)


def _write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".ego4d-dl-tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        Path(tmp).replace(dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_manifests(plan: Plan) -> list[Path]:
    """Keep each dataset's manifest as ``<out>/<major>/<dataset>/manifest.csv`` (as the
    original CLI does), written atomically."""
    written = []
    for dataset, data in plan.manifests.items():
        dest = dataset_dir(plan.output_directory, plan.version, dataset) / "manifest.csv"
        _write_atomic(dest, data)
        written.append(dest)
    return written


async def run_download(
    options: Options,
    *,
    sink: EventSink,
    confirm: Callable[[Plan], Awaitable[bool]],
    on_engine: Callable[[Engine], None] = lambda _: None,
    settings: EngineSettings | None = None,
    manifest_override: Path | None = None,
    space_check: bool = True,
) -> DownloadResult:
    """Plan, save manifests, ask ``confirm``, then transfer; the journal is held throughout."""
    settings = settings or EngineSettings(concurrency=options.concurrency, verify=options.verify)
    out = options.output_directory
    async with S3Store(
        credentials=options.credentials,
        endpoint=options.endpoint,
        max_connections=options.concurrency,
        stall_timeout_s=options.stall_timeout_s,
    ) as store:
        with Journal(journal_path(out, options.shard)) as journal:
            plan = await build_plan(
                options,
                store,
                index=JournalIndex(journal, out),
                sink=sink,
                manifest_override=manifest_override,
            )
            await asyncio.to_thread(save_manifests, plan)
            if options.manifest_only:
                return DownloadResult(plan=plan, summary=None)
            adoption = await adopt_existing(
                plan,
                store=store,
                journal=journal,
                verify=options.verify == "etag",
                jobs=default_jobs(),
                sink=sink,
            )
            journal.commit()
            plan = adoption.plan
            if space_check:
                check_free_space(out, await asyncio.to_thread(space_needed, plan.files))
            if plan.totals.fetch_files and not await confirm(plan):
                return DownloadResult(plan=plan, summary=None, declined=True, adoption=adoption)
            engine = make_engine(options, settings, store=store, journal=journal, sink=sink)
            on_engine(engine)
            summary = await engine.run(plan.files)
            return DownloadResult(plan=plan, summary=summary, adoption=adoption)
