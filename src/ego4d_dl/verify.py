"""``ego4d-dl verify``: plan, read every downloaded file back against its ETag, optionally repair.

The plan comes from the release's manifests and one lookup per object, exactly as a download
makes it, so a directory without a journal (the original CLI's, a copy) is verified too and
files that were never downloaded show as missing. Files the journal knows are checked with its
recorded part layout; the others learn theirs with ``HEAD ?partNumber=N``. What the check
proves is written back to the journal: good files become complete (the next download trusts
them), damaged ones incomplete (the next download refetches them). ``repair`` runs the engine
on the damaged, missing and incomplete files at once, and rebuilds a damaged journal from the
disk and the manifests (the old one is set aside). Never prints. Imports ``check``,
``layout``, ``download``, ``engine``, ``planner``, ``journal``, ``ondisk``, ``store``,
``plan``, ``config`` and ``events``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from .config import Options
from .downloading import check_free_space, make_engine
from .engine import Engine, EngineSettings
from .etags import Layout
from .events import EventSink
from .journal import Journal, JournalDamagedError, JournalView, journal_path, set_aside
from .planned import Action, Plan, PlannedFile
from .planning import build_plan
from .readback import check_files, record_checks
from .results import FileCheck, Verdict, VerifyResult
from .session import open_store

__all__ = ["VerifyResult", "run_verify"]


def _triage(
    plan: Plan, journal: Journal
) -> tuple[dict[str, FileCheck], list[tuple[PlannedFile, Layout | None]]]:
    """Verdicts that need no reading (by destination), and the files to read back."""
    out = plan.output_directory
    decided: dict[str, FileCheck] = {}
    to_check: list[tuple[PlannedFile, Layout | None]] = []
    for f in plan.files:
        rel = str(f.dest.relative_to(out))
        found = f.found
        if f.action.is_problem and (found is None or not found.blocked):
            decided[rel] = FileCheck(planned=f, verdict=Verdict.UNAVAILABLE, reason=f.note)
        elif found is not None and found.blocked:
            decided[rel] = FileCheck(planned=f, verdict=Verdict.BLOCKED, reason=f.note)
        elif f.action is Action.RESUME:
            decided[rel] = FileCheck(
                planned=f,
                verdict=Verdict.INCOMPLETE,
                reason=f"{f.present_bytes:,} of {f.size_bytes:,} bytes downloaded so far",
            )
        elif found is not None and found.server_changed:
            entry = journal.get(rel)
            was = f" (ETag {entry.version.etag} is now {f.etag})" if entry else ""
            decided[rel] = FileCheck(
                planned=f,
                verdict=Verdict.CHANGED,
                reason=f"replaced on the server since it was downloaded{was}",
            )
        else:
            entry = journal.get(rel)
            same = entry is not None and entry.layout is not None and entry.version == f.version
            layout = (entry.layout, entry.layout_exact) if same and entry and entry.layout else None
            to_check.append((f, layout))
    return decided, to_check


def _repair_action(c: FileCheck) -> PlannedFile:
    f = c.planned
    if c.verdict is Verdict.INCOMPLETE:
        return f
    action = Action.FETCH if c.verdict is Verdict.MISSING else Action.REFETCH
    return dataclasses.replace(f, action=action, present_bytes=0, note=f"repair: {c.verdict}")


async def run_verify(
    options: Options,
    *,
    sink: EventSink,
    repair: bool,
    jobs: int,
    on_engine: Callable[[Engine], None] = lambda _: None,
    space_check: bool = True,
) -> VerifyResult:
    """Plan, check every file of this shard, record the verdicts; with ``repair``, refetch."""
    out = options.output_directory
    settings = dataclasses.replace(EngineSettings.from_options(options), verify="etag")
    async with open_store(options) as store:
        path = journal_path(out, options.shard)
        rebuilt_from = None
        journal = Journal(path)
        try:
            journal.open()
        except JournalDamagedError:
            if not repair:
                raise
            # What the journal knew is re-learnt from the disk: every file is read back.
            rebuilt_from = set_aside(path)
            journal.open()
        with journal:
            plan = await build_plan(
                options, store, view=JournalView(out, journal, journal.path), sink=sink
            )
            started = time.monotonic()
            decided, to_check = _triage(plan, journal)
            checked = await check_files(store, to_check, jobs=jobs, sink=sink)
            record_checks(journal, out, checked)
            journal.commit()
            for c in checked:
                decided[str(c.planned.dest.relative_to(out))] = c
            checks = tuple(decided[str(f.dest.relative_to(out))] for f in plan.files)
            result = VerifyResult(
                plan=plan,
                checks=checks,
                elapsed_s=time.monotonic() - started,
                rebuilt_from=rebuilt_from,
            )
            todo = [_repair_action(c) for c in result.bad if c.verdict.repairable]
            if not repair or not todo:
                return result
            if space_check:
                check_free_space(out, sum(f.bytes_to_fetch for f in todo))
            engine = make_engine(options, settings, store=store, journal=journal, sink=sink)
            on_engine(engine)
            summary = await engine.run(todo)
            return dataclasses.replace(result, repair=summary)
