"""One answer to "is the file on disk this object version?": identities, snapshots, ``classify``."""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path

__all__ = [
    "PART_SUFFIX",
    "Classification",
    "DiskState",
    "FileStat",
    "JournalEntry",
    "Kind",
    "ObjectVersion",
    "OfVersion",
    "OnDisk",
    "Origin",
    "classify",
    "part_path",
    "snapshot",
]

PART_SUFFIX = ".part"


def part_path(dest: Path) -> Path:
    """Where ``dest`` is assembled before it is verified."""
    return dest.with_name(dest.name + PART_SUFFIX)


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectVersion:
    """One version of one S3 object. ``etag`` is normalised (no quotes, lower case).

    ``status`` works offline from saved manifests, where only the bucket and key are known: there
    ``etag`` is ``""`` and ``size_bytes`` is ``None`` until some journal names the version.
    """

    bucket: str
    key: str
    etag: str
    size_bytes: int | None

    @property
    def known(self) -> bool:
        """Whether the version (ETag and size) is known, not only the object."""
        return bool(self.etag) and self.size_bytes is not None

    def same_object(self, other: ObjectVersion) -> bool:
        """Whether both name the same S3 object, whatever its version."""
        return (self.bucket, self.key) == (other.bucket, other.key)


class OfVersion:
    """The object version's facts read through ``version`` (for records that hold one)."""

    __slots__ = ()
    version: ObjectVersion

    @property
    def bucket(self) -> str:
        return self.version.bucket

    @property
    def key(self) -> str:
        return self.version.key

    @property
    def etag(self) -> str:
        return self.version.etag

    @property
    def size_bytes(self) -> int:
        """The object's size (0 where it is not known, as for a file whose lookup failed)."""
        return self.version.size_bytes or 0


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntry(OfVersion):
    """What one journal records of one destination file (a value; ``journal`` reads them)."""

    id: int
    dest: str  # relative to the output directory, POSIX separators
    version: ObjectVersion
    complete: bool
    damaged: bool = False  # ``verify`` found the file at its final path corrupt or truncated
    layout: tuple[int, ...] | None = None
    layout_exact: bool = False
    verify_level: str | None = None
    # The file at its final path as it was when it was recorded complete.
    file_size: int | None = None
    file_mtime_ns: int | None = None
    file_ino: int | None = None  # None in journals of before schema 2: size and mtime decide
    file_dev: int | None = None  # kept for diagnosis only: network mounts renumber devices
    # The ``.part`` file the journaled ranges were written to.
    part_ino: int | None = None
    done_bytes: int = 0  # bytes covered by journaled ranges (of a partial download)
    journal: str = ""  # the journal's file name, for messages

    @property
    def dest_rel(self) -> Path:
        """The destination, relative to the output directory."""
        return Path(self.dest)


class Kind(Enum):
    """What a directory entry is, as ``lstat`` sees it (links are not followed)."""

    REGULAR = "regular file"
    SYMLINK = "symbolic link"
    DIRECTORY = "directory"
    OTHER = "special file"


@dataclass(frozen=True, slots=True, kw_only=True)
class FileStat:
    """The facts of one ``lstat``."""

    kind: Kind
    size_bytes: int
    mtime_ns: int
    ino: int
    dev: int
    nlinks: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStat:
        """From an ``os.lstat`` (or ``fstat``) result."""
        mode = st.st_mode
        kind = (
            Kind.REGULAR
            if stat.S_ISREG(mode)
            else Kind.SYMLINK
            if stat.S_ISLNK(mode)
            else Kind.DIRECTORY
            if stat.S_ISDIR(mode)
            else Kind.OTHER
        )
        return cls(
            kind=kind,
            size_bytes=st.st_size,
            mtime_ns=st.st_mtime_ns,
            ino=st.st_ino,
            dev=st.st_dev,
            nlinks=st.st_nlink,
        )

    @property
    def plain(self) -> bool:
        """A regular file with one name: ours to read, replace or write."""
        return self.kind is Kind.REGULAR and self.nlinks == 1

    @property
    def link(self) -> bool:
        """A symbolic link, or a regular file with more than one name (a hard link)."""
        return self.kind is Kind.SYMLINK or (self.kind is Kind.REGULAR and self.nlinks > 1)

    @property
    def in_the_way(self) -> bool:
        """A directory or a special file: never removed, so the file cannot be written."""
        return self.kind in (Kind.DIRECTORY, Kind.OTHER)

    def describe(self) -> str:
        """``"a symbolic link"``, ``"a hard link (3 names)"``, ``"a directory"``, ..."""
        if self.kind is Kind.REGULAR and self.nlinks > 1:
            return f"a hard link ({self.nlinks} names)"
        return f"a {self.kind.value}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskState:
    """What is at a destination and at its ``.part``, without following links."""

    final: FileStat | None
    part: FileStat | None


def _lstat(path: Path) -> FileStat | None:
    try:
        return FileStat.of(os.lstat(path))
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise


def snapshot(dest: Path) -> DiskState:
    """``lstat`` the destination and its ``.part`` (folders on the way are followed: a dataset
    folder may be a link to another disk on purpose; the last component never is)."""
    return DiskState(final=_lstat(dest), part=_lstat(part_path(dest)))


class OnDisk(StrEnum):
    """The verdict on one destination."""

    ABSENT = "absent"  # nothing usable there: fetch
    COMPLETE = "complete"  # journaled verified for this version, untouched since: skip
    RESUMABLE = "resumable"  # a ``.part`` of this version with journaled ranges: resume
    ADOPTABLE = "adoptable"  # a file of the right size no journal vouches for here: check it
    STALE = "stale"  # another version or size: fetch again
    DAMAGED = "damaged"  # verified once, since changed or found corrupt: fetch again
    FOREIGN = "foreign"  # a link, directory or special file where our file should be


class Origin(StrEnum):
    """Where an adoptable file came from, which decides how much checking it needs."""

    NONE = ""
    OTHER_JOURNAL = "other-journal"  # complete in another journal of the directory
    CUT_RECORD = "cut-record"  # renamed complete just before a run stopped
    CHANGED_INODE = "changed-inode"  # verified once, then replaced by a copy (a restore?)
    UNJOURNALED = "unjournaled"  # the original CLI's, a copy made by hand, ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Classification:
    """``classify``'s answer: the verdict, what it leaves on disk, and why, in words."""

    verdict: OnDisk
    present_bytes: int = 0  # journaled bytes of a resumable ``.part``
    note: str = ""
    origin: Origin = Origin.NONE  # of an adoptable file
    voucher: JournalEntry | None = None  # the other journal's entry that vouches for it
    # FOREIGN only: a directory or special file is in the way, and is never removed for us.
    blocked: bool = False
    # A link at ``.part``: removed (never written through) before a fresh download.
    part_in_the_way: bool = False
    # STALE only: the object was replaced on the server since the file was verified.
    server_changed: bool = False


def _untouched(entry: JournalEntry, final: FileStat) -> bool:
    """The file at the final path is the one the entry recorded complete."""
    if final.kind is not Kind.REGULAR:
        return False
    if entry.file_ino is not None and entry.file_ino != final.ino:
        return False
    return (final.size_bytes, final.mtime_ns) == (entry.file_size, entry.file_mtime_ns)


def _resumable(want: ObjectVersion, entry: JournalEntry | None, part: FileStat | None) -> bool:
    return (
        entry is not None
        and not entry.complete
        and want.known
        and entry.version == want
        and entry.done_bytes > 0
        and part is not None
        and part.plain
        and (entry.part_ino is None or entry.part_ino == part.ino)
    )


def classify(
    want: ObjectVersion,
    entry: JournalEntry | None,
    disk: DiskState,
    *,
    others: Sequence[JournalEntry] = (),
) -> Classification:
    """The verdict on one destination.

    ``want`` is the planned object version; ``entry`` what this run's journal records of the
    destination; ``disk`` its ``snapshot``; ``others`` what other journals of the directory
    record for it (other shards, an unsharded run): a complete entry there that names this very
    file (same version, inode, size and mtime) vouches for it without a read.

    Only a file recorded complete for this version whose inode, size and mtime are unchanged is
    ``COMPLETE``. A regular file of the object's size that nothing vouches for that way is
    ``ADOPTABLE``: read back and checked, not fetched again. A link where a file of ours should
    be is ``FOREIGN``: it is replaced, never written through; a directory or special file there
    blocks the file (``blocked``).
    """
    part = disk.part
    if part is None or part.plain:
        return _classify(want, entry, disk.final, part, others)
    if part.in_the_way:
        return Classification(
            verdict=OnDisk.FOREIGN,
            blocked=True,
            note=f"{part.describe()} is where its temporary .part file goes; move it away",
        )
    found = _classify(want, entry, disk.final, None, others)
    if found.blocked:
        return found
    aside = f"{part.describe()} at its .part is replaced, never written through"
    return dataclasses.replace(
        found,
        note=f"{found.note}; {aside}" if found.note else aside,
        part_in_the_way=True,
    )


def _classify(
    want: ObjectVersion,
    entry: JournalEntry | None,
    final: FileStat | None,
    part: FileStat | None,
    others: Sequence[JournalEntry],
) -> Classification:
    ours = entry if entry is not None and entry.version.same_object(want) else None
    if final is not None and final.in_the_way:
        return Classification(
            verdict=OnDisk.FOREIGN,
            blocked=True,
            note=f"{final.describe()} is in the way; move it away to download this file",
        )
    if ours is not None and ours.complete:
        if want.known and ours.version != want:
            return Classification(
                verdict=OnDisk.STALE, note="changed on the server", server_changed=True
            )
        if final is None:
            return Classification(verdict=OnDisk.ABSENT, note="deleted since it was downloaded")
        if _untouched(ours, final):
            # Our own verified inode: more names for it (``cp -al`` snapshots) change nothing,
            # since a file at its final path is only ever replaced, never written in place.
            return Classification(verdict=OnDisk.COMPLETE, note=f"verified ({ours.verify_level})")
    if final is not None and final.link:
        return Classification(
            verdict=OnDisk.FOREIGN,
            note=f"{final.describe()} is at its path; replaced by the downloaded file (a link is "
            "never written through, its target stays as it is)",
        )
    if final is not None and (not want.known or final.size_bytes == want.size_bytes):
        return _right_size(want, ours, final, part, others)
    if _resumable(want, ours, part):
        assert ours is not None
        return Classification(verdict=OnDisk.RESUMABLE, present_bytes=ours.done_bytes)
    if final is None:
        return Classification(verdict=OnDisk.ABSENT)
    if ours is not None and ours.complete:
        return Classification(verdict=OnDisk.DAMAGED, note="modified since it was downloaded")
    return Classification(
        verdict=OnDisk.STALE, note=f"local size {final.size_bytes} != remote {want.size_bytes}"
    )


def _right_size(
    want: ObjectVersion,
    ours: JournalEntry | None,
    final: FileStat,
    part: FileStat | None,
    others: Sequence[JournalEntry],
) -> Classification:
    """A plain file of the object's size at the final path, not known complete here."""
    if ours is not None and ours.damaged:
        return Classification(verdict=OnDisk.DAMAGED, note="found damaged by verify")
    if ours is not None and ours.complete:
        return Classification(
            verdict=OnDisk.ADOPTABLE,
            note="changed since it was verified (another inode or mtime); checked again",
            origin=Origin.CHANGED_INODE,
        )
    for other in others:
        names_it = other.version == want if want.known else other.version.same_object(want)
        if other.complete and names_it and _untouched(other, final):
            return Classification(
                verdict=OnDisk.ADOPTABLE,
                note=f"complete in another journal of this directory "
                f"({other.journal}, {other.verify_level})",
                origin=Origin.OTHER_JOURNAL,
                voucher=other,
            )
    if _resumable(want, ours, part):
        # A file of the right size from elsewhere beside a partial download of ours: finish
        # ours rather than trust the other.
        assert ours is not None
        return Classification(verdict=OnDisk.RESUMABLE, present_bytes=ours.done_bytes)
    if ours is not None and want.known and ours.version == want:
        # A file reaches its final name only verified and synced, and the journal commit
        # follows the rename: a kill in between leaves exactly this.
        return Classification(
            verdict=OnDisk.ADOPTABLE,
            note="renamed complete just before a run stopped",
            origin=Origin.CUT_RECORD,
        )
    return Classification(
        verdict=OnDisk.ADOPTABLE, note="on disk, in no journal", origin=Origin.UNJOURNALED
    )
