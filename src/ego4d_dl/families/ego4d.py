"""The Ego4D family: its manifests (CSV per dataset), filters, destinations and checks."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..catalog import (
    CONSORTIUM_BUCKET,
    KNOWN_DATASETS,
    RELEASES_PREFIX,
    VIDEO_DATASETS,
    datasets_csv_key,
    major_version,
    manifest_key,
    metadata_key,
    release_names,
    suggest_datasets,
)
from ..config import Options
from ..errors import (
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
from ..locks import open_plain_stat
from ..manifest import MalformedRow, ManifestHeader, ManifestRow, Selection, parse_manifest
from ..ondisk import PART_SUFFIX
from ..planned import fold_name
from ..retry import RetryPolicy, retry_call
from ..store import ObjectStore
from . import Fetched, Selected, Wanted

__all__ = [
    "PLAN_RETRY",
    "RESERVED_NAMES",
    "DatasetSelection",
    "Ego4D",
    "check_release",
    "fetch_manifest",
    "list_dataset_rows",
    "list_releases",
    "select_rows",
]

# Planning lookups give up sooner than transfers: a plan is interactive.
PLAN_RETRY = RetryPolicy(max_attempts=5, base_delay_s=0.2, max_delay_s=4.0)


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{source}: not UTF-8 text (bad byte at offset {exc.start})") from None


async def _get(
    store: ObjectStore, bucket: str, key: str, policy: RetryPolicy, cached: bytes | None = None
) -> bytes:
    return await retry_call(
        lambda: store.get_bytes(bucket, key, cached=cached),
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
    store: ObjectStore,
    version: str,
    dataset: str,
    *,
    policy: RetryPolicy = PLAN_RETRY,
    cached: bytes | None = None,
) -> bytes:
    """The raw bytes of a dataset's manifest, with a helpful error when there is none;
    ``cached`` (the copy an earlier run kept) is returned if it is still the object."""
    key = manifest_key(version, dataset)
    try:
        return await _get(store, CONSORTIUM_BUCKET, key, policy, cached)
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


# A kept manifest larger than this is not read back (the largest Ego4D manifest is a few MiB).
_KEPT_MAX_BYTES = 256 << 20


def _kept(path: Path) -> bytes | None:
    """The bytes of a manifest an earlier run kept at ``path``, read never through a link;
    ``None`` if there is none (or it is not a plain file of ours)."""
    try:
        fd, st = open_plain_stat(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        if st.st_size > _KEPT_MAX_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(_KEPT_MAX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def _select(dataset: str, data: bytes, source: str, selection: Selection) -> DatasetSelection:
    header, rows = parse_manifest(io.StringIO(_decode(data, source), newline=""), source=source)
    return select_rows(dataset, header, rows, selection)


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


# Files the tool itself keeps in a dataset folder (the original CLI's names).
RESERVED_NAMES = frozenset({"manifest.csv", "manifest.ver"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetSelection:
    """The rows of one dataset that the user's filters admit, and what was left out and why."""

    dataset: str
    rows: tuple[ManifestRow, ...]
    malformed: tuple[MalformedRow, ...]
    unknown_uids: tuple[str, ...]
    warnings: tuple[str, ...]


_RESERVED_FOLDED = frozenset(fold_name(n) for n in RESERVED_NAMES)


def _refuse_collision(dataset: str, folded: dict[str, ManifestRow], item: ManifestRow) -> None:
    """Refuse two rows that would write one file, by exact name or by the rules of a
    case-insensitive or normalising filesystem; remember ``item`` otherwise."""
    key = fold_name(item.filename)
    previous = folded.get(key)
    if previous is None:
        folded[key] = item
        return
    if previous.filename == item.filename:
        names = f"{item.filename!r}"
    else:
        names = (
            f"{previous.filename!r} and {item.filename!r}, one file on a case-insensitive or "
            "normalising filesystem (exFAT, SMB, WSL /mnt/c, casefolded ext4)"
        )
    raise PlanError(
        f"{dataset}: lines {previous.line} and {item.line} would both write {names} "
        f"(s3://{previous.bucket}/{previous.key} and s3://{item.bucket}/{item.key}); "
        "refusing to overwrite one with the other"
    )


def select_rows(
    dataset: str,
    header: ManifestHeader,
    parsed: Iterable[ManifestRow | MalformedRow],
    selection: Selection,
) -> DatasetSelection:
    """Apply the filters to one dataset's parsed rows.

    As in the original CLI, UID filters apply to video datasets only and a benchmark filter
    is ignored (with a warning) for a manifest without a benchmarks column. Requested UIDs
    that the manifest lacks are reported, not fatal. Identical repeated rows collapse into one.
    """
    if selection.benchmarks and not header.has_benchmarks:
        selection = Selection(universities=selection.universities, uids=selection.uids)
        ignored_benchmarks = True
    else:
        ignored_benchmarks = False
    rows: list[ManifestRow] = []
    malformed: list[MalformedRow] = []
    warnings: list[str] = []
    seen: dict[str, ManifestRow] = {}
    folded: dict[str, ManifestRow] = {}  # by the name a case-insensitive filesystem sees
    present_uids: set[str] = set()
    uid_filter = selection.uids if dataset in VIDEO_DATASETS else frozenset()
    for item in parsed:
        if isinstance(item, MalformedRow):
            malformed.append(item)
            continue
        present_uids.add(item.uid)
        if uid_filter and item.uid not in uid_filter:
            continue
        if not selection.admits(item):
            continue
        previous = seen.get(item.filename)
        if previous is not None and (previous.bucket, previous.key) == (item.bucket, item.key):
            warnings.append(
                f"{dataset}: line {item.line} repeats line {previous.line}; downloaded once"
            )
            continue
        if fold_name(item.filename) in _RESERVED_FOLDED:
            raise PlanError(
                f"{dataset}: line {item.line} would overwrite the tool's own {item.filename}"
            )
        _refuse_collision(dataset, folded, item)
        seen[item.filename] = item
        rows.append(item)
    for row in rows:
        if fold_name(row.filename).endswith(PART_SUFFIX):
            base = folded.get(fold_name(row.filename)[: -len(PART_SUFFIX)])
            if base is not None:
                raise PlanError(
                    f"{dataset}: {row.filename!r} (line {row.line}) would clash with the "
                    f"temporary file of {base.filename!r} (line {base.line})"
                )
    if ignored_benchmarks:
        warnings.append(f"{dataset}: the manifest has no benchmarks column; --benchmarks ignored")
    if selection.uids and dataset not in VIDEO_DATASETS:
        warnings.append(f"{dataset}: --video_uids applies to video datasets only; ignored here")
    unknown = tuple(sorted(uid_filter - present_uids))
    return DatasetSelection(
        dataset=dataset,
        rows=tuple(rows),
        malformed=tuple(malformed),
        unknown_uids=unknown,
        warnings=tuple(warnings),
    )


class Ego4D:
    """The Ego4D family for one run's options (``Family``)."""

    name = "Ego4D"
    lookup_merge_levels = 0  # a dataset is one folder of many keys

    def __init__(self, options: Options) -> None:
        self.options = options
        self.release = options.version
        self._selection = Selection(
            benchmarks=options.benchmarks,
            universities=options.universities,
            uids=options.video_uids,
        )
        self._kept: dict[str, DatasetSelection] = {}

    def _folder(self, dataset: str) -> PurePosixPath:
        return PurePosixPath(major_version(self.release), dataset)

    async def fetch(self, store: ObjectStore) -> Sequence[Fetched]:
        """Every dataset's manifest, fetched at once; ``--manifest-override-path`` is read
        instead (never kept as the release's ``manifest.csv``)."""
        override = self.options.manifest_override
        datasets = self.options.datasets
        if override is not None:
            if len(datasets) != 1:
                raise PlanError("--manifest-override-path needs exactly one dataset")
            try:
                data = await asyncio.to_thread(Path.read_bytes, override)
            except OSError as exc:
                raise PlanError(f"cannot read manifest {override}: {exc}") from None
            return [Fetched(dataset=datasets[0], data=data, source=str(override), keep_as=None)]
        out = self.options.output_directory
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = {
                    ds: tg.create_task(self._fetch_one(store, ds, out / self._folder(ds)))
                    for ds in datasets
                }
        except BaseExceptionGroup as group:
            raise most_relevant(group) from None
        return [
            Fetched(
                dataset=ds,
                data=task.result(),
                source=f"s3://{CONSORTIUM_BUCKET}/{manifest_key(self.release, ds)}",
                keep_as=self._folder(ds) / "manifest.csv",
            )
            for ds, task in tasks.items()
        ]

    async def _fetch_one(self, store: ObjectStore, dataset: str, folder: Path) -> bytes:
        """A dataset's manifest; only asked for if it changed since the copy kept in its
        folder (a rerun then moves none of its bytes: a full_scale manifest is megabytes)."""
        cached = await asyncio.to_thread(_kept, folder / "manifest.csv")
        return await fetch_manifest(store, self.release, dataset, cached=cached)

    def select(self, fetched: Fetched) -> Selected:
        """A dataset's rows after the filters, each with its destination."""
        ds = fetched.dataset
        chosen = _select(ds, fetched.data, fetched.source, self._selection)
        self._kept[ds] = chosen
        warnings = list(chosen.warnings)
        if ds not in KNOWN_DATASETS:
            warnings.insert(0, f"{ds}: not a dataset this tool knows; downloading it anyway")
        if chosen.malformed:
            lines = ", ".join(str(m.line) for m in chosen.malformed[:10])
            more = " ..." if len(chosen.malformed) > 10 else ""
            warnings.append(
                f"{ds}: {len(chosen.malformed)} malformed manifest rows skipped "
                f"(lines {lines}{more}); first: {chosen.malformed[0].reason}"
            )
        folder = self._folder(ds)
        return Selected(
            dataset=ds,
            wanted=tuple(
                # Safe by construction: the file name is one checked path segment (manifest.py).
                Wanted(
                    dataset=ds,
                    uid=r.uid,
                    bucket=r.bucket,
                    key=r.key,
                    dest=folder / r.filename,
                    line=r.line,
                )
                for r in chosen.rows
            ),
            rows=len(chosen.rows) + len(chosen.malformed),
            malformed=chosen.malformed,
            unknown_uids=chosen.unknown_uids,
            warnings=tuple(warnings),
        )

    def check(self, selected: Sequence[Selected]) -> list[str]:
        """Requested video UIDs against what the video datasets hold (``_check_uids``)."""
        return _check_uids([self._kept[s.dataset] for s in selected], self.options)

    def extras(self) -> Sequence[Wanted]:
        """The release's ``ego4d.json``, at the top of the output folder as in the original."""
        if not self.options.metadata:
            return ()
        return (
            Wanted(
                dataset="metadata",
                uid="ego4d.json",
                bucket=CONSORTIUM_BUCKET,
                key=metadata_key(self.release),
                dest=PurePosixPath("ego4d.json"),
            ),
        )

    def saved(self, output_directory: Path, datasets: Sequence[str] | None) -> Mapping[str, Path]:
        """Where earlier downloads kept the manifests of ``datasets`` (every dataset with a
        saved manifest when ``None``): ``status`` reads them offline."""
        root = output_directory / major_version(self.release)
        if datasets is None:
            found = sorted(root.glob("**/manifest.csv")) if root.is_dir() else []
            datasets = [p.parent.relative_to(root).as_posix() for p in found]
        return {ds: output_directory / self._folder(ds) / "manifest.csv" for ds in datasets}
