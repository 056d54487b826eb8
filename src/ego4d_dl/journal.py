"""The download journal: per object its version, part layout, completed ranges and state.

SQLite in WAL mode under ``<output>/.ego4d-dl/``. Writes accumulate in an open transaction and
become durable at ``commit()``, which the engine calls only after the bytes those rows describe
were synced to disk, so after ``kill -9`` or a power loss the journal never claims more than
the disk holds. Only the event-loop thread touches a ``Journal``. One file per shard: SQLite
must not be shared across hosts over NFS or Lustre. Imports ``plan``, ``integrity`` and
``errors``.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from .errors import ConfigError
from .files import part_path
from .integrity import merge_ranges
from .plan import Action, LocalState

__all__ = [
    "JOURNAL_DIR",
    "DiskIndex",
    "Journal",
    "JournalEntry",
    "JournalIndex",
    "RangeRecord",
    "journal_path",
]

JOURNAL_DIR = ".ego4d-dl"
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    id INTEGER PRIMARY KEY,
    dest TEXT NOT NULL UNIQUE,          -- relative to the output directory
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    layout TEXT,                        -- JSON list of part sizes; NULL until known
    layout_exact INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,                -- 'partial', 'complete' or 'damaged' (by verify)
    verify_level TEXT,
    file_size INTEGER,
    file_mtime_ns INTEGER,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS ranges (
    object_id INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
    start INTEGER NOT NULL,
    stop INTEGER NOT NULL,
    md5 BLOB,                           -- MD5 of the bytes as received, when streamed whole
    PRIMARY KEY (object_id, start)
) WITHOUT ROWID;
"""


def journal_path(output_directory: Path, shard: tuple[int, int] | None = None) -> Path:
    """Where a run's journal lives; each shard ``K/N`` has its own file."""
    name = "journal.sqlite" if shard is None else f"journal-shard-{shard[0]}-of-{shard[1]}.sqlite"
    return output_directory / JOURNAL_DIR / name


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeRecord:
    """A completed byte range and, if it was received in one stream, its MD5."""

    start: int
    stop: int
    md5: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntry:
    """What the journal knows of one destination file."""

    id: int
    dest: str
    bucket: str
    key: str
    etag: str
    size_bytes: int
    layout: tuple[int, ...] | None
    layout_exact: bool
    complete: bool
    verify_level: str | None
    file_size: int | None
    file_mtime_ns: int | None
    damaged: bool = False  # ``verify`` found the file at its final path corrupt or truncated

    @property
    def dest_rel(self) -> Path:
        """The destination, relative to the output directory."""
        return Path(self.dest)


class Journal:
    """One SQLite journal file; use as a context manager."""

    def __init__(self, path: Path, *, readonly: bool = False, snapshot: bool = False) -> None:
        """``readonly`` journals (plan, status) take no lock and create nothing. A ``snapshot``
        (read-only too) does not even touch SQLite's shared-memory index, so it is safe on a
        journal another host is writing over NFS or Lustre; it sees what was checkpointed."""
        self.path = path
        self.readonly = readonly or snapshot
        self.snapshot = snapshot
        self._db: sqlite3.Connection | None = None
        self._lock_fd = -1

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Open (creating if needed) the journal file; writers take an exclusive lock."""
        if self.readonly:
            try:
                immutable = "&immutable=1" if self.snapshot else ""
                # Quoted: a '?', '#' or '%' in the output directory would end the URI's path.
                uri = f"file:{urllib.parse.quote(str(self.path))}?mode=ro{immutable}"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
                self._db.execute("SELECT count(*) FROM objects").fetchone()
            except sqlite3.Error as exc:
                raise ConfigError(f"cannot read the journal {self.path}: {exc}") from None
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
            db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            self._unlock()
            raise ConfigError(f"cannot open the journal {self.path}: {exc}") from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a crash never corrupts, a power loss may drop the last
            # commits, which only means re-fetching a little.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise ConfigError(
                    f"the journal {self.path} was written by a newer ego4d-dl; upgrade"
                )
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            db.commit()
        except sqlite3.DatabaseError as exc:
            db.close()
            self._unlock()
            raise ConfigError(
                f"the journal {self.path} is damaged ({exc}); move it away to start over"
            ) from None
        self._db = db

    def _lock(self) -> None:
        # Two runs on one output directory would race on the same part files. flock is
        # advisory and unreliable on some network filesystems, which is why shards keep
        # separate journals rather than relying on it.
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"another ego4d-dl is already downloading into {self.path.parent.parent} "
                "(journal locked); wait for it, or split the work with --shard K/N"
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = -1

    def close(self) -> None:
        """Commit what is pending, close, release the lock."""
        if self._db is not None:
            if not self.readonly:
                self._db.commit()
            self._db.close()
            self._db = None
        self._unlock()

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection."""
        if self._db is None:
            raise RuntimeError("journal is not open")
        return self._db

    def commit(self) -> None:
        """Make every write since the last commit durable (callers sync the data first)."""
        self.db.commit()

    # --- reading ---------------------------------------------------------------------------

    def _entry(self, row: tuple[object, ...]) -> JournalEntry:
        (id_, dest, bucket, key, etag, size, layout, exact, state, level, fsize, mtime) = row
        return JournalEntry(
            id=int(id_),  # type: ignore[call-overload]
            dest=str(dest),
            bucket=str(bucket),
            key=str(key),
            etag=str(etag),
            size_bytes=int(size),  # type: ignore[call-overload]
            layout=tuple(json.loads(str(layout))) if layout else None,
            layout_exact=bool(exact),
            complete=state == "complete",
            verify_level=str(level) if level else None,
            file_size=int(fsize) if fsize is not None else None,  # type: ignore[call-overload]
            file_mtime_ns=int(mtime) if mtime is not None else None,  # type: ignore[call-overload]
            damaged=state == "damaged",
        )

    _COLUMNS = (
        "id, dest, bucket, key, etag, size, layout, layout_exact, state, verify_level, "
        "file_size, file_mtime_ns"
    )

    def get(self, dest: str) -> JournalEntry | None:
        """The entry for a destination (relative path string), if any."""
        row = self.db.execute(
            f"SELECT {self._COLUMNS} FROM objects WHERE dest = ?",  # noqa: S608 - constant
            (dest,),
        ).fetchone()
        return self._entry(row) if row else None

    def entries(self) -> Iterator[JournalEntry]:
        """Every entry, in destination order."""
        cur = self.db.execute(f"SELECT {self._COLUMNS} FROM objects ORDER BY dest")  # noqa: S608
        for row in cur:
            yield self._entry(row)

    def ranges(self, object_id: int) -> list[RangeRecord]:
        """Completed ranges of an object, in order."""
        cur = self.db.execute(
            "SELECT start, stop, md5 FROM ranges WHERE object_id = ? ORDER BY start", (object_id,)
        )
        return [RangeRecord(start=a, stop=b, md5=m) for a, b, m in cur]

    def bytes_done(self, object_id: int) -> int:
        """Bytes covered by completed ranges."""
        return sum(
            b - a for a, b in merge_ranges((r.start, r.stop) for r in self.ranges(object_id))
        )

    # --- writing ---------------------------------------------------------------------------

    def begin(
        self,
        *,
        dest: str,
        bucket: str,
        key: str,
        etag: str,
        size_bytes: int,
        layout: tuple[int, ...] | None,
        layout_exact: bool,
    ) -> int:
        """Start (or restart) the entry for this object version; keep ranges of the same one."""
        existing = self.get(dest)
        same = (
            existing is not None
            and (existing.bucket, existing.key, existing.etag, existing.size_bytes)
            == (bucket, key, etag, size_bytes)
            and not existing.complete
        )
        if existing is not None and not same:
            self.db.execute("DELETE FROM ranges WHERE object_id = ?", (existing.id,))
        layout_json = json.dumps(list(layout)) if layout is not None else None
        if existing is None:
            cur = self.db.execute(
                "INSERT INTO objects (dest, bucket, key, etag, size, layout, layout_exact, state, "
                "updated) VALUES (?, ?, ?, ?, ?, ?, ?, 'partial', ?)",
                (dest, bucket, key, etag, size_bytes, layout_json, int(layout_exact), time.time()),
            )
            assert cur.lastrowid is not None
            return int(cur.lastrowid)
        self.db.execute(
            "UPDATE objects SET bucket = ?, key = ?, etag = ?, size = ?, layout = ?, "
            "layout_exact = ?, state = 'partial', verify_level = NULL, file_size = NULL, "
            "file_mtime_ns = NULL, updated = ? WHERE id = ?",
            (
                bucket,
                key,
                etag,
                size_bytes,
                layout_json,
                int(layout_exact),
                time.time(),
                existing.id,
            ),
        )
        return existing.id

    def set_layout(self, object_id: int, layout: tuple[int, ...], *, exact: bool) -> None:
        """Record the object's part layout."""
        self.db.execute(
            "UPDATE objects SET layout = ?, layout_exact = ?, updated = ? WHERE id = ?",
            (json.dumps(list(layout)), int(exact), time.time(), object_id),
        )

    def add_range(self, object_id: int, start: int, stop: int, md5: bytes | None) -> None:
        """Record a completed range (durable at the next ``commit``)."""
        self.db.execute(
            "INSERT OR REPLACE INTO ranges (object_id, start, stop, md5) VALUES (?, ?, ?, ?)",
            (object_id, start, stop, md5),
        )

    def drop_ranges(self, object_id: int, starts: list[int] | None = None) -> None:
        """Forget completed ranges (all, or those starting at ``starts``): they were bad."""
        if starts is None:
            self.db.execute("DELETE FROM ranges WHERE object_id = ?", (object_id,))
            return
        self.db.executemany(
            "DELETE FROM ranges WHERE object_id = ? AND start = ?",
            [(object_id, s) for s in starts],
        )

    def mark_complete(
        self, object_id: int, *, verify_level: str, file_size: int, file_mtime_ns: int
    ) -> None:
        """The file is verified and at its final path; its ranges are no longer needed."""
        self.db.execute("DELETE FROM ranges WHERE object_id = ?", (object_id,))
        self.db.execute(
            "UPDATE objects SET state = 'complete', verify_level = ?, file_size = ?, "
            "file_mtime_ns = ?, updated = ? WHERE id = ?",
            (verify_level, file_size, file_mtime_ns, time.time(), object_id),
        )

    def mark_damaged(self, object_id: int) -> None:
        """The file at the final path was checked and is not the object (``verify``): the
        next download refetches it even though its size is right."""
        self.db.execute(
            "UPDATE objects SET state = 'damaged', updated = ? WHERE id = ?",
            (time.time(), object_id),
        )

    def record_complete(
        self,
        *,
        dest: str,
        bucket: str,
        key: str,
        etag: str,
        size_bytes: int,
        verify_level: str,
        file_mtime_ns: int,
    ) -> None:
        """Record a complete, verified file in one statement, whatever was known of it before
        (a small file fetched in one request, or one found on disk)."""
        self.db.execute(
            "DELETE FROM ranges WHERE object_id = (SELECT id FROM objects WHERE dest = ?)",
            (dest,),
        )
        self.db.execute(
            "INSERT INTO objects (dest, bucket, key, etag, size, layout, layout_exact, state, "
            "verify_level, file_size, file_mtime_ns, updated) "
            "VALUES (?, ?, ?, ?, ?, NULL, 0, 'complete', ?, ?, ?, ?) "
            "ON CONFLICT(dest) DO UPDATE SET bucket = excluded.bucket, key = excluded.key, "
            "etag = excluded.etag, size = excluded.size, layout = NULL, layout_exact = 0, "
            "state = 'complete', verify_level = excluded.verify_level, "
            "file_size = excluded.file_size, file_mtime_ns = excluded.file_mtime_ns, "
            "updated = excluded.updated",
            (
                dest,
                bucket,
                key,
                etag,
                size_bytes,
                verify_level,
                size_bytes,
                file_mtime_ns,
                time.time(),
            ),
        )


class DiskIndex:
    """No journal: a file of the right size counts as complete (the original CLI's test)."""

    def classify(
        self, *, dest: Path, bucket: str, key: str, size_bytes: int, etag: str
    ) -> LocalState:
        """A file of the expected size is complete; another size is stale."""
        try:
            st = dest.stat()
        except (FileNotFoundError, NotADirectoryError):
            return LocalState(action=Action.FETCH)
        if st.st_size == size_bytes:
            return LocalState(action=Action.SKIP, note="size matches (no journal)")
        return LocalState(
            action=Action.REFETCH, note=f"local size {st.st_size} != remote {size_bytes}"
        )


class JournalIndex:
    """Classifies planned files by the journal first, the disk second."""

    def __init__(self, journal: Journal, output_directory: Path) -> None:
        self._journal = journal
        self._out = output_directory

    def classify(
        self, *, dest: Path, bucket: str, key: str, size_bytes: int, etag: str
    ) -> LocalState:
        """Skip, resume, refetch or fetch, with the reason."""
        rel = str(dest.relative_to(self._out))
        entry = self._journal.get(rel)
        try:
            st = dest.stat()
        except (FileNotFoundError, NotADirectoryError):
            st = None
        if entry is not None and entry.complete:
            if (entry.bucket, entry.key, entry.etag) != (bucket, key, etag):
                return LocalState(action=Action.REFETCH, note="changed on the server")
            if st is None:
                return LocalState(action=Action.REFETCH, note="deleted since it was downloaded")
            if st.st_size != entry.file_size or st.st_mtime_ns != entry.file_mtime_ns:
                return LocalState(action=Action.REFETCH, note="modified since it was downloaded")
            return LocalState(action=Action.SKIP, note=f"verified ({entry.verify_level})")
        version = (bucket, key, etag, size_bytes)
        if (
            entry is not None
            and (entry.bucket, entry.key, entry.etag, entry.size_bytes) == version
            and part_path(dest).exists()
        ):
            done = self._journal.bytes_done(entry.id)
            return LocalState(action=Action.RESUME if done else Action.FETCH, present_bytes=done)
        if st is not None:
            if st.st_size != size_bytes:
                return LocalState(
                    action=Action.REFETCH, note=f"local size {st.st_size} != remote {size_bytes}"
                )
            if entry is None:
                return LocalState(action=Action.SKIP, note="size matches (no journal entry)")
            if entry.damaged:
                return LocalState(action=Action.REFETCH, note="found damaged by verify")
            if (entry.bucket, entry.key, entry.etag, entry.size_bytes) == version:
                # A file reaches its final name only verified and synced, and the journal
                # commit follows the rename: a kill in between leaves exactly this. Adoption
                # checks it (by ETag under --verify etag) instead of fetching it again.
                return LocalState(
                    action=Action.SKIP, note="renamed complete; its journal record was cut short"
                )
            return LocalState(
                action=Action.REFETCH, note="a download of another version was interrupted"
            )
        return LocalState(action=Action.FETCH)
