"""Carry out a plan's ``adopt`` actions: files already on disk that this run's journal does not
know complete are checked and recorded instead of fetched again."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .etags import Layout
from .events import EventSink
from .journal import Journal
from .locks import lock_file, open_plain
from .ondisk import JournalEntry, Origin, part_path
from .planned import Action, Plan, PlannedFile
from .readback import check_files, record_checks
from .results import Verdict
from .store import ObjectStore

__all__ = [
    "VERSION_FILE",
    "Adoption",
    "adopt",
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

    plan: Plan  # adopted files became SKIP with a note saying how; rejected ones REFETCH
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


def _remove_leftovers(files: Sequence[PlannedFile]) -> tuple[int, int]:
    count = size = 0
    for path in leftover_temp_files(files):
        with contextlib.suppress(OSError):
            size += path.lstat().st_size
            path.unlink()
            count += 1
    return count, size


def _remove_part_of(dest: Path) -> None:
    """A ``.part`` left beside a file that is complete (or was just adopted) is no longer
    needed: removed once we hold its lock (no one else is writing it)."""
    path = part_path(dest)
    try:
        fd = open_plain(path, os.O_RDWR)
    except OSError:
        return  # none, or a link (left to the engine's rules) or busy
    try:
        if lock_file(fd):
            path.unlink()
    except OSError:
        pass
    finally:
        os.close(fd)


_ADOPTED = {
    Origin.CUT_RECORD: "adopted a file renamed complete just before a run stopped",
    Origin.CHANGED_INODE: "adopted a copy put in place of a verified file",
    Origin.UNJOURNALED: "adopted an unjournaled copy",
}


def _layout_of(entry: JournalEntry | None, f: PlannedFile) -> Layout | None:
    """The part layout ``entry`` learned for ``f``'s version, if it did (a run cut short)."""
    if entry is None or entry.layout is None or entry.version != f.version:
        return None
    return (entry.layout, entry.layout_exact)


def _record_voucher(journal: Journal, rel: str, f: PlannedFile, voucher: JournalEntry) -> bool:
    """Record a file another journal vouches for; ``False`` if it changed since."""
    try:
        st = f.dest.lstat()
    except OSError:
        return False
    if (st.st_size, st.st_mtime_ns) != (voucher.file_size, voucher.file_mtime_ns):
        return False
    journal.record_complete(
        dest=rel,
        version=f.version,
        verify_level=voucher.verify_level or "size",
        st=st,
        layout=voucher.layout,
        layout_exact=voucher.layout_exact,
    )
    return True


async def adopt(
    plan: Plan,
    *,
    store: ObjectStore,
    journal: Journal,
    verify: bool,
    jobs: int,
    sink: EventSink,
) -> Adoption:
    """Carry out the plan's ``ADOPT`` actions (and remove the original CLI's leftovers).

    Records adopted files in the journal (the caller commits) and returns the plan with each
    of them a ``SKIP`` whose note says how it was adopted, and each rejected one a refetch.
    """
    removed, removed_bytes = await asyncio.to_thread(_remove_leftovers, plan.files)
    candidates = [f for f in plan.files if f.action is Action.ADOPT]
    if not candidates:
        return Adoption(plan=plan, leftovers_removed=removed, leftover_bytes=removed_bytes)
    folders = sorted({f.dest.parent for f in plan.files})
    listed: dict[str, str] = {}
    for folder in folders:
        listed.update(read_version_file(folder))
    decided, to_check = _take_vouched(plan.output_directory, candidates, journal, listed)
    from_journals = len(decided)
    if verify and to_check:
        rejected = await _read_back(plan.output_directory, to_check, store, journal, jobs, sink)
        decided.update(rejected)
    else:
        decided.update(_take_at_size(plan.output_directory, to_check, journal))
    for f in decided.values():
        if f.action is Action.SKIP:
            await asyncio.to_thread(_remove_part_of, f.dest)
    adopted = [decided[f.dest] for f in candidates if decided[f.dest].action is Action.SKIP]
    return Adoption(
        plan=_replaced(plan, decided),
        adopted_files=len(adopted),
        adopted_bytes=sum(f.size_bytes for f in adopted),
        checked_files=len(to_check) if verify else 0,
        from_journals=from_journals,
        rejected_files=sum(f.action in (Action.REFETCH, Action.FAILED) for f in decided.values()),
        original_cli=any((folder / VERSION_FILE).is_file() for folder in folders),
        leftovers_removed=removed,
        leftover_bytes=removed_bytes,
    )


def _take_vouched(
    out: Path, candidates: Sequence[PlannedFile], journal: Journal, listed: dict[str, str]
) -> tuple[dict[Path, PlannedFile], list[PlannedFile]]:
    """Files another journal vouches for, recorded at its word; the others, to be checked,
    each with a note saying where it came from."""
    decided: dict[Path, PlannedFile] = {}
    to_check: list[PlannedFile] = []
    for f in candidates:
        found = f.found
        rel = str(f.dest.relative_to(out))
        if (
            found is not None
            and found.voucher is not None
            and _record_voucher(journal, rel, f, found.voucher)
        ):
            decided[f.dest] = dataclasses.replace(f, action=Action.SKIP)
            continue
        origin = found.origin if found is not None else Origin.UNJOURNALED
        if origin is Origin.UNJOURNALED and f.dest.name in listed:
            note = "adopted the original ego4d CLI's copy"
        else:
            note = _ADOPTED.get(origin, "adopted an unjournaled copy")
        to_check.append(dataclasses.replace(f, note=note))
    return decided, to_check


async def _read_back(
    out: Path,
    to_check: Sequence[PlannedFile],
    store: ObjectStore,
    journal: Journal,
    jobs: int,
    sink: EventSink,
) -> dict[Path, PlannedFile]:
    """``--verify etag``: read each back against its ETag; good ones kept, others refetched
    (or failed, when the check itself could not be made)."""
    checks = await check_files(
        store,
        [(f, _layout_of(journal.get(str(f.dest.relative_to(out))), f)) for f in to_check],
        jobs=jobs,
        sink=sink,
    )
    record_checks(journal, out, checks)
    decided: dict[Path, PlannedFile] = {}
    for c in checks:
        base = c.planned
        if c.verdict is Verdict.OK:
            decided[base.dest] = dataclasses.replace(
                base, action=Action.SKIP, note=f"{base.note} ({c.level})"
            )
        else:
            decided[base.dest] = dataclasses.replace(
                base,
                action=Action.REFETCH if c.verdict.repairable else Action.FAILED,
                note=f"found on disk, but {c.verdict.value}: {c.reason}",
            )
    return decided


def _take_at_size(
    out: Path, to_check: Sequence[PlannedFile], journal: Journal
) -> dict[Path, PlannedFile]:
    """``--verify size``: the right size is enough (``verify`` can check them later)."""
    decided: dict[Path, PlannedFile] = {}
    for f in to_check:
        try:
            st = f.dest.lstat()
        except OSError:
            decided[f.dest] = dataclasses.replace(f, action=Action.FETCH, note="gone")
            continue
        journal.record_complete(
            dest=str(f.dest.relative_to(out)), version=f.version, verify_level="size", st=st
        )
        decided[f.dest] = dataclasses.replace(f, action=Action.SKIP, note=f"{f.note} (size)")
    return decided


def _replaced(plan: Plan, decided: dict[Path, PlannedFile]) -> Plan:
    return dataclasses.replace(
        plan,
        datasets=tuple(
            dataclasses.replace(d, files=tuple(decided.get(f.dest, f) for f in d.files))
            for d in plan.datasets
        ),
    )
