"""Build a ``Plan``: fetch manifests, apply filters, look up every object, compare with disk.

Async orchestration over ``store``; the decisions themselves live in ``plan``, ``manifest``
and ``ondisk`` (whose one classifier says what each file on disk is). Never prints: progress
goes to an ``EventSink``. With ``--shard K/N`` only the keys the shard owns are looked up and
planned. Imports ``store``, ``lookup``, ``journal``, ``ondisk``, ``plan``, ``shard``,
``manifest``, ``catalog``, ``events``, ``retry``, ``config`` and ``errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import io
import os
import random
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from .catalog import (
    CONSORTIUM_BUCKET,
    KNOWN_DATASETS,
    RELEASES_PREFIX,
    VIDEO_DATASETS,
    datasets_csv_key,
    manifest_key,
    metadata_key,
    release_names,
    suggest_datasets,
)
from .config import Options
from .errors import (
    AccessDeniedError,
    CredentialsError,
    DatasetNotFoundError,
    Ego4dDLError,
    ManifestError,
    ObjectNotFoundError,
    PlanError,
    ReleaseNotFoundError,
    TransferError,
    UidsNotFoundError,
    most_relevant,
)
from .events import EventSink, ManifestLoaded, ObjectsLookedUp, PlanBuilt, discard
from .journal import JournalView
from .lookup import LookupResult, lookup_objects
from .manifest import Selection, parse_manifest
from .ondisk import Classification, ObjectVersion, OnDisk, Origin, classify, snapshot
from .plan import (
    Action,
    DatasetPlan,
    DatasetSelection,
    Plan,
    PlannedFile,
    action_for,
    dataset_dir,
    select_rows,
)
from .retry import RetryPolicy, retry_call
from .shard import owns
from .store import ObjectStore

__all__ = [
    "PLAN_RETRY",
    "build_plan",
    "check_release",
    "fetch_manifest",
    "list_dataset_rows",
    "list_releases",
    "look_on_disk",
    "refresh",
]

# Planning lookups give up sooner than transfers: a plan is interactive.
PLAN_RETRY = RetryPolicy(max_attempts=5, base_delay_s=0.2, max_delay_s=4.0)


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{source}: not UTF-8 text (bad byte at offset {exc.start})") from None


async def _get(store: ObjectStore, bucket: str, key: str, policy: RetryPolicy) -> bytes:
    return await retry_call(
        lambda: store.get_bytes(bucket, key),
        policy=policy,
        sleep=asyncio.sleep,
        rng=random.Random(),
    )


async def list_releases(store: ObjectStore, *, policy: RetryPolicy = PLAN_RETRY) -> tuple[str, ...]:
    """The releases the consortium bucket holds (its ``public/vN[_M]/`` folders), oldest first."""
    folders = await retry_call(
        lambda: store.list_folders(CONSORTIUM_BUCKET, prefix=RELEASES_PREFIX),
        policy=policy,
        sleep=asyncio.sleep,
        rng=random.Random(),
    )
    return release_names(folders)


async def check_release(
    store: ObjectStore, version: str, *, policy: RetryPolicy = PLAN_RETRY
) -> None:
    """Raise ``ReleaseNotFoundError`` if the bucket lacks ``version``; silent when it has it
    or cannot be listed (the caller's own not-found error then stands)."""
    try:
        releases = await list_releases(store, policy=policy)
    except TransferError:
        return  # listing denied or failing: no list to offer
    if version not in releases:
        where = f"s3://{CONSORTIUM_BUCKET}/{RELEASES_PREFIX}"
        raise ReleaseNotFoundError(version, releases, where)


async def list_dataset_rows(
    store: ObjectStore, version: str, *, policy: RetryPolicy = PLAN_RETRY
) -> list[tuple[str, str]]:
    """``(dataset, description)`` rows of the release's datasets.csv, in file order."""
    key = datasets_csv_key(version)
    try:
        data = await _get(store, CONSORTIUM_BUCKET, key, policy)
    except ObjectNotFoundError:
        await check_release(store, version, policy=policy)
        raise
    text = _decode(data, f"s3://{CONSORTIUM_BUCKET}/{key}")
    out = []
    for row in csv.DictReader(io.StringIO(text, newline="")):
        name = (row.get("dataset") or "").strip()
        if name:
            out.append((name, (row.get("description") or "").strip()))
    return out


async def fetch_manifest(
    store: ObjectStore, version: str, dataset: str, *, policy: RetryPolicy = PLAN_RETRY
) -> bytes:
    """The raw bytes of a dataset's manifest, with a helpful error when there is none."""
    key = manifest_key(version, dataset)
    try:
        return await _get(store, CONSORTIUM_BUCKET, key, policy)
    except ObjectNotFoundError:
        # Most often a release that does not exist (a typo, or one not published yet).
        await check_release(store, version, policy=policy)
        names = set(KNOWN_DATASETS)
        # The hint is a courtesy; the error below stands on its own without it.
        with contextlib.suppress(Ego4dDLError):
            names |= {name for name, _ in await list_dataset_rows(store, version, policy=policy)}
        names.discard(dataset)
        raise DatasetNotFoundError(dataset, version, suggest_datasets(dataset, names)) from None
    except AccessDeniedError as exc:
        raise CredentialsError(
            f"access denied to the Ego4D manifests (s3://{CONSORTIUM_BUCKET}/{key}); are these "
            "the keys from your approved Ego4D licence?",
            code="AccessDenied",
        ) from exc


def _select(dataset: str, data: bytes, source: str, selection: Selection) -> DatasetSelection:
    header, rows = parse_manifest(io.StringIO(_decode(data, source), newline=""), source=source)
    return select_rows(dataset, header, rows, selection)


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` is below ``root``, lexically (no symlinks are followed or created)."""
    return os.path.normpath(path).startswith(os.path.normpath(root) + os.sep)


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


def _listed(uids: Iterable[str]) -> str:
    shown = sorted(uids)
    return ", ".join(shown[:10]) + (f" and {len(shown) - 10} more" if len(shown) > 10 else "")


def _check_uids(selections: Sequence[DatasetSelection], options: Options) -> list[str]:
    """Requested UIDs against what the video datasets hold after the filters.

    A UID that no requested video dataset holds stops the run before anything is fetched,
    as in the original CLI (``UidsNotFoundError``, exit 1). The original also stops when any
    one video dataset lacks a UID another holds (``--datasets full_scale clips`` with video
    UIDs); ego4d-dl fetches what each holds and says so: the warnings returned.
    """
    video = [s for s in selections if s.dataset in VIDEO_DATASETS]
    requested = options.video_uids
    if not requested or not video:
        return []
    held = {s.dataset: {r.uid for r in s.rows} for s in video}
    lost = requested - set().union(*held.values())
    if lost:
        in_no_manifest = lost.intersection(*(s.unknown_uids for s in video))
        filtered = lost - in_no_manifest
        names = ", ".join(s.dataset for s in video)
        parts = []
        if in_no_manifest:
            parts.append(f"not in the manifest: {_listed(in_no_manifest)}")
        if filtered:
            by = " and ".join(
                flag
                for flag, given in (
                    ("--universities", options.universities),
                    ("--benchmarks", options.benchmarks),
                )
                if given
            )
            parts.append(f"left out by {by or 'the filters'}: {_listed(filtered)}")
        raise UidsNotFoundError(
            f"{len(lost)} requested UIDs are in no requested video dataset ({names}); "
            + "; ".join(parts)
            + ". Nothing was downloaded (the original ego4d CLI stops here too)."
        )
    if len(video) == 1:
        return []
    warnings = []
    for s in video:
        lacking = requested - held[s.dataset]
        if lacking:
            warnings.append(
                f"{s.dataset}: {len(lacking)} requested UIDs are only in other datasets, "
                f"fetched from there: {_listed(lacking)} (the original ego4d CLI stops with "
                "exit 1 when any requested video dataset lacks a UID; ask for one dataset "
                "per run to have that check)"
            )
    return warnings


async def build_plan(
    options: Options,
    store: ObjectStore,
    *,
    view: JournalView,
    sink: EventSink = discard,
    manifest_override: Path | None = None,
) -> Plan:
    """Everything the run would do, without moving a byte of any object or changing anything
    on disk (``view`` reads the journals; the files are only ``lstat``-ed)."""
    started = time.monotonic()
    warnings: list[str] = []
    selection = Selection(
        benchmarks=options.benchmarks,
        universities=options.universities,
        uids=options.video_uids,
    )
    if manifest_override is not None:
        if len(options.datasets) != 1:
            raise PlanError("--manifest-override-path needs exactly one dataset")
        try:
            data = await asyncio.to_thread(Path.read_bytes, manifest_override)
        except OSError as exc:
            raise PlanError(f"cannot read manifest {manifest_override}: {exc}") from None
        manifests = {options.datasets[0]: data}
        sources = {options.datasets[0]: str(manifest_override)}
        # The user's file is not the release's manifest: never saved as its manifest.csv.
        release_manifests: dict[str, bytes] = {}
    else:
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = {
                    ds: tg.create_task(fetch_manifest(store, options.version, ds))
                    for ds in options.datasets
                }
        except BaseExceptionGroup as group:
            raise most_relevant(group) from None
        manifests = {ds: t.result() for ds, t in tasks.items()}
        release_manifests = manifests
        sources = {
            ds: f"s3://{CONSORTIUM_BUCKET}/{manifest_key(options.version, ds)}"
            for ds in options.datasets
        }

    selections: list[DatasetSelection] = []
    for ds in options.datasets:
        if ds not in KNOWN_DATASETS:
            warnings.append(f"{ds}: not a dataset this tool knows; downloading it anyway")
        chosen = _select(ds, manifests[ds], sources[ds], selection)
        selections.append(chosen)
        warnings.extend(chosen.warnings)
        if chosen.malformed:
            lines = ", ".join(str(m.line) for m in chosen.malformed[:10])
            more = " ..." if len(chosen.malformed) > 10 else ""
            warnings.append(
                f"{ds}: {len(chosen.malformed)} malformed manifest rows skipped "
                f"(lines {lines}{more}); first: {chosen.malformed[0].reason}"
            )
        sink(
            ManifestLoaded(
                dataset=ds,
                rows=len(chosen.rows) + len(chosen.malformed),
                selected=len(chosen.rows),
                malformed=len(chosen.malformed),
            )
        )

    warnings.extend(_check_uids(selections, options))
    if options.shard is not None:
        # Each process of a sharded run looks up and fetches only the keys it owns.
        selections = [
            dataclasses.replace(s, rows=tuple(r for r in s.rows if owns(options.shard, r.key)))
            for s in selections
        ]
    out = options.output_directory
    wanted = {(r.bucket, r.key) for s in selections for r in s.rows}
    meta = (CONSORTIUM_BUCKET, metadata_key(options.version))
    with_metadata = options.metadata and owns(options.shard, meta[1])
    if with_metadata:
        wanted.add(meta)
    total = len(wanted)
    found, cost = await lookup_objects(
        store,
        wanted,
        concurrency=max(8, options.concurrency),
        policy=PLAN_RETRY,
        on_progress=lambda n: sink(ObjectsLookedUp(count=n, total=total)),
    )

    datasets: list[DatasetPlan] = []
    if with_metadata:
        # The release's ego4d.json lands at the top of the output folder, as in the original.
        meta_file = _planned("metadata", "ego4d.json", meta, out / "ego4d.json", found, view)
        datasets.append(DatasetPlan(name="metadata", files=(meta_file,)))
    for chosen in selections:
        folder = dataset_dir(out, options.version, chosen.dataset)
        files: list[PlannedFile] = []
        if not _inside(folder, out):
            raise PlanError(f"{chosen.dataset}: would write outside {out}")
        for row in chosen.rows:
            # Safe by construction: the file name is one checked path segment (manifest.py).
            dest = folder / row.filename
            files.append(
                _planned(chosen.dataset, row.uid, (row.bucket, row.key), dest, found, view)
            )
        datasets.append(
            DatasetPlan(
                name=chosen.dataset,
                files=tuple(files),
                malformed=chosen.malformed,
                unknown_uids=chosen.unknown_uids,
            )
        )
    plan = Plan(
        version=options.version,
        output_directory=out,
        datasets=tuple(datasets),
        warnings=tuple(warnings),
        manifests=release_manifests,
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
