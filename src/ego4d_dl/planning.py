"""Build a ``Plan``: fetch manifests, apply filters, look up every object, compare with disk."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from .config import Options
from .errors import (
    AccessDeniedError,
    ObjectNotFoundError,
    PlanError,
    TransferError,
)
from .events import EventSink, ObjectsLookedUp, PlanBuilt, discard
from .families import Family, Wanted, announce, manifest_mismatch
from .families.ego4d import PLAN_RETRY, Ego4D
from .journal import JournalView
from .lookup import LookupResult, lookup_objects
from .ondisk import Classification, ObjectVersion, OnDisk, Origin, classify, snapshot
from .planned import (
    Action,
    DatasetPlan,
    Plan,
    PlannedFile,
    action_for,
)
from .shard import owns
from .store import ObjectStore

__all__ = [
    "PLAN_RETRY",
    "build_plan",
    "family_for",
    "look_on_disk",
    "refresh",
]


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` is below ``root``, lexically (no symlinks are followed or created)."""
    return os.path.normpath(path).startswith(os.path.normpath(root) + os.sep)


def family_for(options: Options) -> Family:
    """The release family ``options`` describe: Ego-Exo4D for ``egoexo-dl``, else Ego4D."""
    if options.egoexo is None:
        return Ego4D(options)
    # Imported on use: an Ego4D run never loads the Ego-Exo4D manifest code.
    from .families.egoexo import EgoExo

    return EgoExo(options)


def look_on_disk(version: ObjectVersion, dest: Path, view: JournalView) -> Classification:
    """``ondisk.classify`` of one destination, with the facts gathered: this run's journal
    entry, an ``lstat`` of the file and its ``.part`` and, only for a file no journal of ours
    knows, what the folder's other journals say of it."""
    entry = view.entry(dest)
    disk = snapshot(dest)
    found = classify(version, entry, disk)
    if found.verdict is OnDisk.ADOPTABLE and found.origin is Origin.UNJOURNALED:
        others = view.others(dest)
        if others:
            found = classify(version, entry, disk, others=others)
    return found


def _with_disk(f: PlannedFile, view: JournalView) -> PlannedFile:
    found = look_on_disk(f.version, f.dest, view)
    return dataclasses.replace(
        f,
        action=action_for(found),
        present_bytes=found.present_bytes,
        note=found.note,
        found=found,
    )


def refresh(plan: Plan, view: JournalView) -> Plan:
    """The plan with every looked-up file classified again against ``view``: what is on disk
    may have changed since the plan was shown (the journal could only be read as a snapshot
    before the run claimed the folder)."""
    return dataclasses.replace(
        plan,
        datasets=tuple(
            dataclasses.replace(
                d,
                files=tuple(f if f.action.is_problem else _with_disk(f, view) for f in d.files),
            )
            for d in plan.datasets
        ),
    )


def _planned(
    dataset: str,
    uid: str,
    where: tuple[str, str],
    dest: Path,
    found: dict[tuple[str, str], LookupResult],
    view: JournalView,
) -> PlannedFile:
    """One planned file from its lookup result and what is on disk."""
    bucket, key = where
    info = found[where]
    if isinstance(info, TransferError):
        action = (
            Action.MISSING
            if isinstance(info, ObjectNotFoundError)
            else Action.DENIED
            if isinstance(info, AccessDeniedError)
            else Action.FAILED
        )
        return PlannedFile(
            dataset=dataset,
            uid=uid,
            version=ObjectVersion(bucket=bucket, key=key, etag="", size_bytes=None),
            dest=dest,
            action=action,
            note=str(info),
        )
    version = ObjectVersion(bucket=bucket, key=key, etag=info.etag, size_bytes=info.size_bytes)
    planned = PlannedFile(dataset=dataset, uid=uid, version=version, dest=dest, action=Action.FETCH)
    return _with_disk(planned, view)


def _planned_group(
    name: str,
    wanted: Sequence[Wanted],
    out: Path,
    found: dict[tuple[str, str], LookupResult],
    view: JournalView,
) -> tuple[PlannedFile, ...]:
    files = []
    for w in wanted:
        dest = out / w.dest
        if not _inside(dest, out):
            raise PlanError(f"{name}: {w.dest} would be written outside {out}")
        planned = _planned(w.dataset, w.uid, (w.bucket, w.key), dest, found, view)
        problem = (
            None
            if planned.action.is_problem
            else manifest_mismatch(w, size_bytes=planned.size_bytes, etag=planned.etag)
        )
        if problem is not None:
            planned = dataclasses.replace(planned, action=Action.FAILED, note=problem)
        files.append(planned)
    return tuple(files)


async def build_plan(
    options: Options,
    store: ObjectStore,
    *,
    view: JournalView,
    sink: EventSink = discard,
    family: Family | None = None,
) -> Plan:
    """Everything the run would do, without moving a byte of any object or changing anything
    on disk (``view`` reads the journals; the files are only ``lstat``-ed). ``family`` is the
    release family (``family_for(options)`` when not given)."""
    started = time.monotonic()
    family = family or family_for(options)
    fetched = await family.fetch(store)
    selected = []
    warnings: list[str] = []
    for f in fetched:
        chosen = family.select(f)
        selected.append(chosen)
        warnings.extend(chosen.warnings)
        announce(sink, chosen)
    warnings.extend(family.check(selected))
    extras = [w for w in family.extras() if owns(options.shard, w.key)]
    if options.shard is not None:
        # Each process of a sharded run looks up and fetches only the keys it owns.
        selected = [
            dataclasses.replace(s, wanted=tuple(w for w in s.wanted if owns(options.shard, w.key)))
            for s in selected
        ]
    wanted = {(w.bucket, w.key) for s in selected for w in s.wanted}
    wanted.update((w.bucket, w.key) for w in extras)
    found, cost = await lookup_objects(
        store,
        wanted,
        concurrency=max(8, options.concurrency),
        policy=PLAN_RETRY,
        on_progress=lambda n: sink(ObjectsLookedUp(count=n, total=len(wanted))),
        merge_levels=family.lookup_merge_levels,
    )
    out = options.output_directory
    datasets = [
        DatasetPlan(name=name, files=_planned_group(name, group, out, found, view))
        for name, group in _by_dataset(extras).items()
    ]
    datasets.extend(
        DatasetPlan(
            name=s.dataset,
            files=_planned_group(s.dataset, s.wanted, out, found, view),
            malformed=s.malformed,
            unknown_uids=s.unknown_uids,
        )
        for s in selected
    )
    plan = Plan(
        version=family.release,
        output_directory=out,
        datasets=tuple(datasets),
        warnings=tuple(warnings),
        manifests={str(f.keep_as): f.data for f in fetched if f.keep_as is not None},
        family=family.name,
    )
    totals = plan.totals
    sink(
        PlanBuilt(
            files=totals.files,
            size_bytes=totals.size_bytes,
            fetch_bytes=totals.fetch_bytes,
            heads=cost.heads,
            list_pages=cost.list_pages,
            elapsed_s=time.monotonic() - started,
        )
    )
    return plan


def _by_dataset(wanted: Iterable[Wanted]) -> dict[str, list[Wanted]]:
    groups: dict[str, list[Wanted]] = {}
    for w in wanted:
        groups.setdefault(w.dataset, []).append(w)
    return groups
