"""Build a ``Plan``: fetch manifests, apply filters, look up every object, compare with disk.

Async orchestration over ``store``; the decisions themselves live in ``plan`` and
``manifest``. Never prints: progress goes to an ``EventSink``. Imports ``store``, ``lookup``,
``plan``, ``manifest``, ``catalog``, ``events``, ``retry``, ``config`` and ``errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import random
import time
from pathlib import Path

from .catalog import (
    CONSORTIUM_BUCKET,
    KNOWN_DATASETS,
    datasets_csv_key,
    manifest_key,
    metadata_key,
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
    TransferError,
)
from .events import EventSink, ManifestLoaded, ObjectsLookedUp, PlanBuilt, discard
from .lookup import LookupResult, lookup_objects
from .manifest import Selection, parse_manifest
from .plan import (
    Action,
    DatasetPlan,
    DatasetSelection,
    LocalIndex,
    Plan,
    PlannedFile,
    dataset_dir,
    select_rows,
)
from .retry import RetryPolicy, retry_call
from .store import ObjectStore

__all__ = [
    "PLAN_RETRY",
    "build_plan",
    "fetch_manifest",
    "list_dataset_rows",
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


async def list_dataset_rows(
    store: ObjectStore, version: str, *, policy: RetryPolicy = PLAN_RETRY
) -> list[tuple[str, str]]:
    """``(dataset, description)`` rows of the release's datasets.csv, in file order."""
    key = datasets_csv_key(version)
    text = _decode(
        await _get(store, CONSORTIUM_BUCKET, key, policy), f"s3://{CONSORTIUM_BUCKET}/{key}"
    )
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


def _planned(
    dataset: str,
    uid: str,
    where: tuple[str, str],
    dest: Path,
    found: dict[tuple[str, str], LookupResult],
    index: LocalIndex,
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
            bucket=bucket,
            key=key,
            dest=dest,
            size_bytes=0,
            etag="",
            action=action,
            note=str(info),
        )
    state = index.classify(
        dest=dest, bucket=bucket, key=key, size_bytes=info.size_bytes, etag=info.etag
    )
    return PlannedFile(
        dataset=dataset,
        uid=uid,
        bucket=bucket,
        key=key,
        dest=dest,
        size_bytes=info.size_bytes,
        etag=info.etag,
        action=state.action,
        present_bytes=state.present_bytes,
        note=state.note,
    )


async def build_plan(
    options: Options,
    store: ObjectStore,
    *,
    index: LocalIndex,
    sink: EventSink = discard,
    manifest_override: Path | None = None,
) -> Plan:
    """Everything the run would do, without moving a byte of any object."""
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
    else:
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = {
                    ds: tg.create_task(fetch_manifest(store, options.version, ds))
                    for ds in options.datasets
                }
        except* Ego4dDLError as group:
            # The user gets one line, not a group: manifests that fail together fail for
            # one reason (keys, network), so the first (credentials first) speaks for all.
            raise _first_error(group) from None
        manifests = {ds: t.result() for ds, t in tasks.items()}
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
        if chosen.unknown_uids:
            shown = ", ".join(chosen.unknown_uids[:10])
            more = " ..." if len(chosen.unknown_uids) > 10 else ""
            warnings.append(
                f"{ds}: {len(chosen.unknown_uids)} requested UIDs are not in the manifest: "
                f"{shown}{more}"
            )
        sink(
            ManifestLoaded(
                dataset=ds,
                rows=len(chosen.rows) + len(chosen.malformed),
                selected=len(chosen.rows),
                malformed=len(chosen.malformed),
            )
        )

    out = options.output_directory
    wanted = {(r.bucket, r.key) for s in selections for r in s.rows}
    meta = (CONSORTIUM_BUCKET, metadata_key(options.version))
    if options.metadata:
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
    if options.metadata:
        # The release's ego4d.json lands at the top of the output folder, as in the original.
        meta_file = _planned("metadata", "ego4d.json", meta, out / "ego4d.json", found, index)
        datasets.append(DatasetPlan(name="metadata", files=(meta_file,)))
    for chosen in selections:
        folder = dataset_dir(out, options.version, chosen.dataset)
        files: list[PlannedFile] = []
        for row in chosen.rows:
            dest = folder / row.filename
            if not dest.resolve().is_relative_to(out.resolve()):
                raise PlanError(f"{chosen.dataset}: line {row.line} would write outside {out}")
            files.append(
                _planned(chosen.dataset, row.uid, (row.bucket, row.key), dest, found, index)
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
        manifests=manifests,
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


def _first_error(group: BaseExceptionGroup[Ego4dDLError]) -> Ego4dDLError:
    """The leaf of a (possibly nested) group to report: a credentials error if any."""
    leaves: list[Ego4dDLError] = []

    def walk(g: BaseExceptionGroup[Ego4dDLError]) -> None:
        for exc in g.exceptions:
            if isinstance(exc, BaseExceptionGroup):
                walk(exc)
            else:
                leaves.append(exc)

    walk(group)
    return min(leaves, key=lambda e: not isinstance(e, CredentialsError))
