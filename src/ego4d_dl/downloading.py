"""One download run: plan, confirm, then claim the folder, keep the manifests, adopt, transfer.

Orchestration shared by ``ego4d-dl download`` and ``ego4d-dl demo``; the questions it must ask
the user (confirmation) and the engine handle (for Ctrl-C) go through callbacks, so nothing
here prints or reads a terminal. Nothing in the output folder changes before the user says yes:
the plan is made against snapshots of the journals and ``lstat``s; only then is the folder
claimed (``locks``), the journal opened, the plan refreshed against it, the manifests saved,
leftovers removed and files on disk adopted (``adopt``). After the run, each dataset folder's
``manifest.ver`` names its complete files, so the original CLI would not fetch them again
(``versionfile``). Imports ``engine``, ``planner``, ``adopt``, ``versionfile``, ``bandwidth``,
``journal``, ``locks``, ``files``, ``store``, ``plan``, ``catalog``, ``config``, ``events`` and
``errors``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import stat
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .adopt import Adoption, adopt
from .bandwidth import TokenBucket
from .catalog import PRIMARY_DATASET
from .config import Options
from .engine import Engine, EngineSettings
from .errors import ConfigError, DiskFullError
from .events import EventSink, RunSummary
from .families.ego4d import fetch_manifest
from .files import ensure_dir, part_path
from .formatting import bytes_exact
from .journal import (
    JOURNAL_DIR,
    Journal,
    JournalView,
    describe_running,
    is_plain,
    journal_path,
)
from .locks import DirectoryClaim, RunConflictError, holds_exactly, open_plain
from .planned import Plan, PlannedFile
from .planning import build_plan, refresh
from .session import open_store
from .store import ObjectStore, S3Store
from .versionfile import update_version_files

__all__ = [
    "DownloadResult",
    "adopt_into",
    "check_free_space",
    "default_jobs",
    "finish_download",
    "free_bytes",
    "make_engine",
    "make_throttle",
    "plan_readonly",
    "run_download",
    "save_manifests",
    "save_release_manifest",
    "space_needed",
    "transfer",
]


# Runs that stopped this way skip writing manifest.ver: the user wants out (interrupted) or
# every request would fail (keys, network); the next run writes it.
_NO_BOOKKEEPING = frozenset({"interrupted", "credentials", "network"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadResult:
    """What a run did: its plan and, unless it stopped before the engine, its summary."""

    plan: Plan
    summary: RunSummary | None
    declined: bool = False
    adoption: Adoption | None = None
    notes: tuple[str, ...] = ()  # about the folder itself: links replaced, no file locks
    release_manifest: Path | None = None  # where --manifest kept the full_scale manifest


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
            part = part_path(f.dest).lstat()
            held = part.st_blocks * 512 if stat.S_ISREG(part.st_mode) else 0
        except OSError:
            held = 0
        need += max(0, f.size_bytes - held)
    return need


def check_free_space(out: Path, need_bytes: int) -> None:
    """Refuse (``DiskFullError``) to start with less than ``need_bytes`` free in ``out``."""
    free = free_bytes(out)
    if free is not None and need_bytes > free:
        raise DiskFullError(
            f"not enough free space in {out}: {bytes_exact(need_bytes)} more needed, "
            f"{bytes_exact(free)} free (free some space, narrow the selection, or pass "
            "--no-space-check)"
        )


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
    """``dest`` replaced by ``data`` in one rename: written to a new temporary file of ours
    (never through a link; a link at ``dest`` is replaced, its target left alone), synced.
    A plain file that already holds ``data`` (a rerun's manifests) is left as it is."""
    if holds_exactly(dest, data):
        return
    ensure_dir(dest.parent)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.ego4d-dl-tmp")
    # The original CLI's files are 0644 less the umask; mkstemp's 0600 would hide them from
    # a group that shares the dataset.
    fd = open_plain(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_manifests(plan: Plan) -> list[Path]:
    """Keep the release's manifests where the family says (Ego4D: ``<out>/<major>/<dataset>/
    manifest.csv``, as the original CLI does), each written atomically."""
    written = []
    for relative, data in plan.manifests.items():
        dest = plan.output_directory / relative
        _write_atomic(dest, data)
        written.append(dest)
    return written


async def save_release_manifest(store: ObjectStore, plan: Plan) -> Path:
    """``--manifest``: the release's full_scale manifest as ``<out>/manifest.csv``, where the
    original CLI keeps it (like the original, the download then goes on)."""
    data = plan.manifests.get(PRIMARY_DATASET)
    if data is None:
        data = await fetch_manifest(store, plan.version, PRIMARY_DATASET)
    dest = plan.output_directory / "manifest.csv"
    await asyncio.to_thread(_write_atomic, dest, data)
    return dest


async def plan_readonly(
    options: Options,
    store: S3Store,
    *,
    sink: EventSink,
    running_ok: bool = False,
) -> Plan:
    """The plan, made without changing anything on disk: the journal (if any) is read as an
    immutable snapshot, the files are only ``lstat``-ed.

    When another run holds a claim that would overlap this one, a download is refused at once
    (``locks.RunConflictError``); with ``running_ok`` (``plan``, ``doctor``) the plan is made
    anyway, from what that run's journal has checkpointed, with a warning.
    """
    out = options.output_directory
    path = journal_path(out, options.shard)
    warnings: list[str] = []
    running = False
    try:
        DirectoryClaim(out / JOURNAL_DIR, options.shard, describe=describe_running(out)).probe()
    except RunConflictError as exc:
        if not running_ok:
            raise
        running = True
        warnings.append(f"{exc}; its latest progress may not be shown yet")
    journal = Journal(path, snapshot=True) if is_plain(path) else None
    if journal is None and path.is_symlink():
        warnings.append(f"{path} is a link: replaced by a journal of ego4d-dl's own if it starts")
    if journal is not None:
        try:
            journal.open()
        except ConfigError:
            if not running:
                raise
            # Being written right now: an immutable snapshot may catch it mid-change.
            journal = None
    try:
        plan = await build_plan(
            options,
            store,
            view=JournalView(out, journal, path),
            sink=sink,
        )
    finally:
        if journal is not None:
            journal.close()
    return dataclasses.replace(plan, warnings=(*warnings, *plan.warnings))


async def run_download(
    options: Options,
    *,
    sink: EventSink,
    confirm: Callable[[Plan], Awaitable[bool]],
    on_engine: Callable[[Engine], None] = lambda _: None,
    settings: EngineSettings | None = None,
    space_check: bool = True,
) -> DownloadResult:
    """Plan, ask ``confirm``, then claim the folder and transfer; nothing on disk changes
    before ``confirm`` says yes (it is not asked when there is nothing to do)."""
    settings = settings or EngineSettings.from_options(options)
    async with open_store(options, max_connections=settings.max_requests) as store:
        plan = await plan_readonly(options, store, sink=sink)
        return await finish_download(
            options,
            plan,
            store=store,
            settings=settings,
            sink=sink,
            confirm=confirm,
            on_engine=on_engine,
            space_check=space_check,
        )


async def finish_download(
    options: Options,
    plan: Plan,
    *,
    store: S3Store,
    settings: EngineSettings,
    sink: EventSink,
    confirm: Callable[[Plan], Awaitable[bool]],
    on_engine: Callable[[Engine], None],
    space_check: bool,
) -> DownloadResult:
    """``run_download`` once the plan is made: ask, claim, keep the manifests, adopt, transfer
    (in this process: ``processes`` runs several)."""
    out = options.output_directory
    if space_check:
        check_free_space(out, await asyncio.to_thread(space_needed, plan.files))
    work = plan.totals.fetch_files + plan.totals.adopt_files
    if work and not await confirm(plan):
        return DownloadResult(plan=plan, summary=None, declined=True)
    await asyncio.to_thread(ensure_dir, out)
    with Journal(journal_path(out, options.shard)) as journal:
        notes = tuple(journal.notes)
        await asyncio.to_thread(save_manifests, plan)
        kept = await save_release_manifest(store, plan) if options.release_manifest else None
        adoption = await adopt_into(options, plan, store=store, journal=journal, sink=sink)
        plan = adoption.plan
        if space_check and adoption.rejected_files:
            check_free_space(out, await asyncio.to_thread(space_needed, plan.files))
        summary = await transfer(
            options, settings, plan, store=store, journal=journal, sink=sink, on_engine=on_engine
        )
        return DownloadResult(
            plan=plan, summary=summary, adoption=adoption, notes=notes, release_manifest=kept
        )


async def adopt_into(
    options: Options, plan: Plan, *, store: S3Store, journal: Journal, sink: EventSink
) -> Adoption:
    """The plan classified again against the claimed ``journal``, its files on disk adopted
    into it (``adopt``) and the journal committed."""
    plan = refresh(plan, JournalView(options.output_directory, journal, journal.path))
    adoption = await adopt(
        plan,
        store=store,
        journal=journal,
        verify=options.verify == "etag",
        jobs=default_jobs(),
        sink=sink,
    )
    journal.commit()
    return adoption


async def transfer(
    options: Options,
    settings: EngineSettings,
    plan: Plan,
    *,
    store: S3Store,
    journal: Journal,
    sink: EventSink,
    on_engine: Callable[[Engine], None],
) -> RunSummary:
    """The engine over ``plan`` with a claimed ``journal``, then the ``manifest.ver`` files."""
    engine = make_engine(options, settings, store=store, journal=journal, sink=sink)
    on_engine(engine)
    summary = await engine.run(plan.files)
    if summary.stop_kind not in _NO_BOOKKEEPING:
        await update_version_files(plan, journal, store, concurrency=options.concurrency)
    return summary
