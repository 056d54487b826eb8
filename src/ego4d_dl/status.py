"""``ego4d-dl status``: the whole picture of an output directory, per shard and per dataset.

Offline by design: it reads the manifests that downloads saved in the directory
(``<out>/<major>/<dataset>/manifest.csv``), every journal under ``<out>/.ego4d-dl/`` and the
disk, and never touches the network, so it runs on a login node without keys while the shards
run elsewhere. Journals are read as immutable snapshots (``Journal(snapshot=True)``): no lock,
nothing written, safe over NFS or Lustre while their shards write them; a running shard's
figures are as of its journal's last checkpoint (a few minutes at most), a finished shard's are
exact. Sizes come from the journals, so bytes still to fetch are known only for files some
shard has started; ``ego4d-dl plan`` asks S3 for the rest. What each file is, is
``ondisk.classify``'s verdict, as for a download. Imports ``journal``, ``ondisk``,
``manifest``, ``plan``, ``shard``, ``catalog``, ``config`` and ``errors``.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from .catalog import major_version
from .config import Options
from .errors import ConfigError, Ego4dDLError
from .families import Family, Fetched, Wanted
from .journal import Journal, JournalEntry, find_journals
from .ondisk import Classification, DiskState, ObjectVersion, OnDisk, Origin, classify, snapshot
from .planning import family_for
from .results import DatasetStatus, ShardStatus, Status, StatusCounts
from .shard import Shard, shard_of

__all__ = [
    "DatasetStatus",
    "ShardStatus",
    "Status",
    "StatusCounts",
    "collect_status",
    "find_journals",
]


def _read_journal(path: Path, known: dict[str, list[JournalEntry]]) -> str | None:
    """Add a journal snapshot's entries to ``known``; a warning if it cannot be read."""
    try:
        with Journal(path, readonly=True, snapshot=True) as journal:
            for entry in journal.entries():
                known.setdefault(entry.dest, []).append(entry)
    except (ConfigError, sqlite3.Error) as exc:
        if "no such table" in str(exc):
            return None  # a shard that just started: nothing checkpointed yet
        return f"{path.name}: not readable right now ({exc}); its shard's files show as to fetch"
    return None


def _shard_count(
    requested: Shard | None, sharded: dict[Shard, Path], warnings: list[str]
) -> int | None:
    if requested is not None:
        return requested[1]
    counts = {n for _, n in sharded}
    if len(counts) <= 1:
        return next(iter(counts), None)
    # The shard count changed between runs: show the latest one; the others' journals still
    # count (a file is complete whichever journal says so).
    latest = max(sharded.items(), key=lambda item: item[1].stat().st_mtime)[0][1]
    others = ", ".join(str(n) for n in sorted(counts - {latest}))
    warnings.append(
        f"journals of runs with different shard counts ({others} and {latest}); shown as "
        f"{latest} shards, every journal counted"
    )
    return latest


def _wanted_files(
    family: Family, out: Path, datasets: Sequence[str] | None, warnings: list[str]
) -> list[Wanted]:
    """The files the saved manifests ask for (after the same filters as the download)."""
    wanted = list(family.extras())
    for ds, source in family.saved(out, datasets).items():
        try:
            data = source.read_bytes()
        except FileNotFoundError:
            warnings.append(f"{ds}: no manifest saved in {source.parent}; run the download first")
            continue
        except OSError as exc:
            warnings.append(f"{ds}: cannot read {source}: {exc}")
            continue
        fetched = Fetched(dataset=ds, data=data, source=str(source), keep_as=None)
        wanted.extend(family.select(fetched).wanted)
    return wanted


# Which of several journals' verdicts on one file tells most: done beats begun beats nothing.
_RANK = {
    OnDisk.COMPLETE: 0,
    OnDisk.ADOPTABLE: 1,
    OnDisk.RESUMABLE: 2,
    OnDisk.DAMAGED: 3,
    OnDisk.STALE: 3,
    OnDisk.FOREIGN: 3,
    OnDisk.ABSENT: 4,
}


def _verdict(w: Wanted, mine: list[JournalEntry], disk: DiskState) -> Classification:
    """``classify`` with each journal's version of the object as the one wanted (offline, the
    server's current version is unknown); the most telling verdict wins."""
    if not mine:
        unknown = ObjectVersion(bucket=w.bucket, key=w.key, etag="", size_bytes=None)
        return classify(unknown, None, disk)
    verdicts = [classify(e.version, e, disk, others=[o for o in mine if o is not e]) for e in mine]
    return min(verdicts, key=lambda c: (_RANK[c.verdict], -c.present_bytes))


def _classify(
    w: Wanted, dest: Path, out: Path, known: dict[str, list[JournalEntry]]
) -> StatusCounts:
    """One file's counts: complete, partial, to fetch, or on disk without a journal entry."""
    rel = str(w.dest)
    mine = [e for e in known.get(rel, []) if (e.version.bucket, e.version.key) == (w.bucket, w.key)]
    disk = snapshot(dest)
    found = _verdict(w, mine, disk)
    on_disk = disk.final.size_bytes if disk.final is not None else 0
    if found.verdict is OnDisk.COMPLETE or (
        found.verdict is OnDisk.ADOPTABLE
        and found.origin in (Origin.OTHER_JOURNAL, Origin.CUT_RECORD)
    ):
        # A cut record: journaled ranges and a file at its final name; the engine renames only
        # verified files, and the snapshot predates the commit that says so.
        return StatusCounts(files=1, complete_files=1, complete_bytes=on_disk)
    if found.verdict is OnDisk.ADOPTABLE:
        return StatusCounts(files=1, unjournaled_files=1, unjournaled_bytes=on_disk)
    if found.verdict is OnDisk.RESUMABLE:
        best = max((e for e in mine if not e.complete), key=lambda e: e.done_bytes)
        return StatusCounts(
            files=1,
            partial_files=1,
            partial_done_bytes=found.present_bytes,
            partial_size_bytes=best.version.size_bytes or 0,
        )
    if mine:
        size = max(e.version.size_bytes or 0 for e in mine)
        return StatusCounts(files=1, fetch_files=1, fetch_known_bytes=size)
    return StatusCounts(files=1, fetch_files=1, fetch_unknown_files=1)


def collect_status(options: Options, *, datasets_given: bool) -> Status:
    """Status of ``options.output_directory``; with ``options.shard``, of that shard only.

    Without ``datasets_given``, the datasets are those whose manifests are saved in the
    directory. Raises ``ConfigError`` when there is nothing to report on.
    """
    out = options.output_directory
    warnings: list[str] = []
    if not out.is_dir():
        raise ConfigError(f"output directory {out} does not exist")
    family = family_for(options)
    datasets = options.datasets if datasets_given else None
    if not family.saved(out, datasets) and not family.extras():
        where = out if options.egoexo else out / major_version(options.version)
        raise ConfigError(f"no saved manifests under {where}")
    plain, sharded = find_journals(out)
    journals = ([plain] if plain else []) + [sharded[s] for s in sorted(sharded)]
    known: dict[str, list[JournalEntry]] = {}
    for path in journals:
        warning = _read_journal(path, known)
        if warning:
            warnings.append(warning)
    try:
        wanted = _wanted_files(family, out, datasets, warnings)
    except Ego4dDLError as exc:
        raise ConfigError(f"cannot read a saved manifest: {exc}") from None
    count = _shard_count(options.shard, sharded, warnings)

    per: dict[tuple[int | None, str], list[StatusCounts]] = defaultdict(list)
    names: list[str] = []
    for w in wanted:
        if w.dataset not in names:
            names.append(w.dataset)
        k = shard_of(w.key, count) if count else None
        per[(k, w.dataset)].append(_classify(w, out / w.dest, out, known))

    shard_ids: list[int | None] = list(range(1, count + 1)) if count else [None]
    if options.shard is not None:
        shard_ids = [options.shard[0]]
    shards = tuple(
        ShardStatus(
            shard=(k, count) if k is not None and count else None,
            journal=(sharded.get((k, count)) if k is not None and count else plain),
            datasets=tuple(
                DatasetStatus(name=n, counts=StatusCounts.total(per.get((k, n), []))) for n in names
            ),
        )
        for k in shard_ids
    )
    by_dataset = tuple(
        DatasetStatus(
            name=n,
            counts=StatusCounts.total(d.counts for s in shards for d in s.datasets if d.name == n),
        )
        for n in names
    )
    return Status(
        output_directory=out,
        version=options.version,
        shard_count=count,
        shards=shards,
        datasets=by_dataset,
        journals=tuple(journals),
        warnings=tuple(warnings),
        family=family.name,
    )
