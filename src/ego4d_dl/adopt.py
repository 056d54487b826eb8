"""Adopt files already on disk that this run's journal does not know, instead of refetching.

Such files come from the original ``ego4d`` CLI (same layout: ``<out>/<major>/<dataset>/``,
with its ``manifest.ver``), from another shard's journal (the shard count changed, or a sharded
run follows an unsharded one), from a copy made by hand, or from this journal itself when a
kill fell between a file's rename and the commit recording it. A file of the object's size is
adopted: known complete to another journal of the directory (same object version, file
untouched since), it is taken at that journal's word; otherwise, with ``verify`` (``--verify
etag``), it is read back and checked against the ETag first, and one that fails is refetched.
Adopted files are recorded in the journal, so they are checked once. Files of the wrong size
are already planned for a refetch. The original CLI's leftover temporary files
(``<name>.<8 hex digits>``, from boto3's ``download_file``) next to a planned file are removed.
``manifest.ver`` is read, never written. Imports ``check``, ``journal``, ``layout``, ``plan``,
``store``, ``events`` and ``errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import os
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .check import Verdict, check_files, record_checks
from .errors import ConfigError
from .events import EventSink
from .journal import JOURNAL_DIR, Journal, JournalEntry
from .layout import Layout
from .plan import Action, Plan, PlannedFile
from .store import ObjectStore

__all__ = [
    "VERSION_FILE",
    "Adoption",
    "adopt_existing",
    "journal_snapshots",
    "leftover_temp_files",
    "read_version_file",
]

# The original CLI's record of finished downloads, one per dataset folder: uid,version,filename.
VERSION_FILE = "manifest.ver"
# s3transfer (boto3's download_file) writes to "<name>.<8 random hex digits>", then renames.
_LEFTOVER_RE = re.compile(r"^(?P<name>.+)\.[0-9a-fA-F]{8}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Adoption:
    """What adoption did to a plan."""

    plan: Plan  # adopted files keep SKIP with a note saying how; rejected ones became REFETCH
    adopted_files: int = 0
    adopted_bytes: int = 0
    checked_files: int = 0  # of the adopted and rejected, how many were read back
    from_journals: int = 0  # taken at another journal's word
    rejected_files: int = 0  # the right size, the wrong bytes (refetched)
    original_cli: bool = False  # a manifest.ver was found: the original CLI was here
    leftovers_removed: int = 0
    leftover_bytes: int = 0


def read_version_file(folder: Path) -> dict[str, str]:
    """``manifest.ver`` of a dataset folder as ``{filename: uid}``; ``{}`` if absent or unreadable.

    The original CLI writes every dataset's entries into the folder of the last dataset of its
    run, so a folder's file may name files of other datasets.
    """
    try:
        with (folder / VERSION_FILE).open(encoding="utf-8", newline="") as f:
            return {
                row["filename"]: row["uid"]
                for row in csv.DictReader(f)
                if row.get("filename") and row.get("uid")
            }
    except (OSError, UnicodeDecodeError, csv.Error, KeyError):
        return {}


def leftover_temp_files(files: Sequence[PlannedFile]) -> list[Path]:
    """The original CLI's temporary files (``<name>.<8 hex>``) beside these planned files."""
    by_folder: dict[Path, set[str]] = {}
    for f in files:
        by_folder.setdefault(f.dest.parent, set()).add(f.dest.name)
    found = []
    for folder, names in by_folder.items():
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            match = _LEFTOVER_RE.match(entry.name)
            if match and match["name"] in names and entry.is_file(follow_symlinks=False):
                found.append(Path(entry.path))
    return sorted(found)


def journal_snapshots(output_directory: Path, *, exclude: Path) -> dict[str, JournalEntry]:
    """Complete entries of every other journal in the directory, by destination.

    Other journals belong to other shards, possibly running on other hosts over NFS or
    Lustre, so they are read as immutable snapshots: no lock taken, nothing written, not even
    SQLite's shared-memory index. A snapshot misses what its writer has not checkpointed yet,
    which only means a file is checked again rather than taken at its word.
    """
    found: dict[str, JournalEntry] = {}
    for path in sorted((output_directory / JOURNAL_DIR).glob("journal*.sqlite")):
        if path == exclude:
            continue
        try:
            with Journal(path, readonly=True, snapshot=True) as other:
                for entry in other.entries():
                    if entry.complete:
                        found[entry.dest] = entry
        except (ConfigError, sqlite3.Error):
            continue  # a damaged or half-written journal of another shard only costs a re-check
    return found


def _layout_of(entry: JournalEntry | None, f: PlannedFile) -> Layout | None:
    """The part layout ``entry`` learned for ``f``'s version, if it did (a run cut short)."""
    if entry is None or entry.layout is None:
        return None
    if (entry.etag, entry.size_bytes) != (f.etag, f.size_bytes):
        return None
    return (entry.layout, entry.layout_exact)


async def adopt_existing(
    plan: Plan,
    *,
    store: ObjectStore,
    journal: Journal,
    verify: bool,
    jobs: int,
    sink: EventSink,
) -> Adoption:
    """Adopt the plan's files that are on disk at full size but unknown to ``journal``.

    Records them in the journal (the caller commits) and returns the plan with each adopted
    file's note saying how it was adopted, and each rejected one turned into a refetch.
    """
    out = plan.output_directory
    leftovers = await asyncio.to_thread(leftover_temp_files, plan.files)
    leftover_bytes = 0
    for path in leftovers:
        with contextlib.suppress(OSError):
            leftover_bytes += path.stat().st_size
            path.unlink()
    # What this journal knows of each file planned as a skip: nothing (found at full size), or
    # not complete (renamed just before a kill cut its journal record short).
    mine: dict[Path, JournalEntry | None] = {}
    for f in plan.files:
        if f.action is Action.SKIP:
            recorded = journal.get(str(f.dest.relative_to(out)))
            if recorded is None or not recorded.complete:
                mine[f.dest] = recorded
    candidates = [f for f in plan.files if f.dest in mine]
    if not candidates:
        return Adoption(plan=plan, leftovers_removed=len(leftovers), leftover_bytes=leftover_bytes)
    folders = _dataset_folders(plan)
    original = any((folder / VERSION_FILE).is_file() for folder in folders)
    listed: dict[str, str] = {}
    for folder in folders:
        listed.update(read_version_file(folder))
    known = await asyncio.to_thread(journal_snapshots, out, exclude=journal.path)

    notes: dict[Path, PlannedFile] = {}
    to_check: list[PlannedFile] = []
    from_journals = 0
    for f in candidates:
        rel = str(f.dest.relative_to(out))
        entry = known.get(rel)
        if entry is not None and _vouches(entry, f):
            journal.record_complete(
                dest=rel,
                bucket=f.bucket,
                key=f.key,
                etag=f.etag,
                size_bytes=f.size_bytes,
                verify_level=entry.verify_level or "size",
                file_mtime_ns=entry.file_mtime_ns or 0,
            )
            own = journal.get(rel)
            if entry.layout is not None and own is not None:
                journal.set_layout(own.id, entry.layout, exact=entry.layout_exact)
            from_journals += 1
            notes[f.dest] = dataclasses.replace(
                f, note=f"complete in another journal of this directory ({entry.verify_level})"
            )
        else:
            to_check.append(f)
    for f in to_check:
        if mine[f.dest] is not None:
            note = "adopted a file renamed complete just before a run stopped"
        elif f.dest.name in listed:
            note = "adopted the original ego4d CLI's copy"
        else:
            note = "adopted an unjournaled copy"
        notes[f.dest] = dataclasses.replace(f, note=note)
    rejected = 0
    if verify and to_check:
        checks = await check_files(
            store, [(f, _layout_of(mine[f.dest], f)) for f in to_check], jobs=jobs, sink=sink
        )
        record_checks(journal, out, checks)
        for c in checks:
            base = notes[c.planned.dest]
            if c.verdict is Verdict.OK:
                notes[c.planned.dest] = dataclasses.replace(base, note=f"{base.note} ({c.level})")
            else:
                rejected += 1
                notes[c.planned.dest] = dataclasses.replace(
                    base,
                    action=Action.REFETCH if c.verdict.repairable else base.action,
                    note=f"found on disk, but {c.verdict.value}: {c.reason}",
                )
    else:
        for f in to_check:
            try:
                st = f.dest.stat()
            except OSError:
                continue  # gone since it was planned: the engine will report it
            journal.record_complete(
                dest=str(f.dest.relative_to(out)),
                bucket=f.bucket,
                key=f.key,
                etag=f.etag,
                size_bytes=f.size_bytes,
                verify_level="size",
                file_mtime_ns=st.st_mtime_ns,
            )
            base = notes[f.dest]
            notes[f.dest] = dataclasses.replace(base, note=f"{base.note} (size)")
    new_plan = dataclasses.replace(
        plan,
        datasets=tuple(
            dataclasses.replace(d, files=tuple(notes.get(f.dest, f) for f in d.files))
            for d in plan.datasets
        ),
    )
    adopted = [notes[f.dest] for f in candidates if notes[f.dest].action is Action.SKIP]
    return Adoption(
        plan=new_plan,
        adopted_files=len(adopted),
        adopted_bytes=sum(f.size_bytes for f in adopted),
        checked_files=len(to_check) if verify else 0,
        from_journals=from_journals,
        rejected_files=rejected,
        original_cli=original,
        leftovers_removed=len(leftovers),
        leftover_bytes=leftover_bytes,
    )


def _vouches(entry: JournalEntry, f: PlannedFile) -> bool:
    """Whether another journal's complete entry covers this very file, untouched since."""
    if (entry.bucket, entry.key, entry.etag, entry.size_bytes) != (
        f.bucket,
        f.key,
        f.etag,
        f.size_bytes,
    ):
        return False
    try:
        st = f.dest.stat()
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) == (entry.file_size, entry.file_mtime_ns)


def _dataset_folders(plan: Plan) -> list[Path]:
    """Folders of the plan's files: where the original CLI kept its ``manifest.ver``."""
    return sorted({f.dest.parent for f in plan.files})
