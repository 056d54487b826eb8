"""One download run: plan against the journal, keep the manifests, confirm, run the engine.

Orchestration shared by ``ego4d-dl download`` and ``ego4d-dl demo``; the questions it must ask
the user (confirmation) and the engine handle (for Ctrl-C) go through callbacks, so nothing
here prints or reads a terminal. Imports ``engine``, ``planner``, ``journal``, ``files``,
``store``, ``plan``, ``config``, ``events`` and ``errors``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import Options
from .engine import Engine, EngineSettings
from .errors import DiskFullError
from .events import EventSink, RunSummary
from .files import part_path
from .journal import Journal, JournalIndex, journal_path
from .plan import Plan, PlannedFile, dataset_dir
from .planner import build_plan
from .store import S3Store

__all__ = ["DownloadResult", "free_bytes", "run_download", "save_manifests", "space_needed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadResult:
    """What a run did: its plan and, unless it stopped before the engine, its summary."""

    plan: Plan
    summary: RunSummary | None
    declined: bool = False


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
        with Journal(journal_path(out)) as journal:
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
            need = await asyncio.to_thread(space_needed, plan.files)
            free = free_bytes(out)
            if space_check and free is not None and need > free:
                raise DiskFullError(
                    f"not enough free space in {out}: {need:,} more bytes needed, {free:,} "
                    "free (free some space, narrow the selection, or pass --no-space-check)"
                )
            if plan.totals.fetch_files and not await confirm(plan):
                return DownloadResult(plan=plan, summary=None, declined=True)
            engine = Engine(
                store=store,
                journal=journal,
                output_directory=out,
                settings=settings,
                sink=sink,
                reload_credentials=store.reload_credentials,
            )
            on_engine(engine)
            summary = await engine.run(plan.files)
            return DownloadResult(plan=plan, summary=summary)
