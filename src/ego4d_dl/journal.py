"""The download journal: per object its version, part layout, completed ranges and state."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from .errors import ConfigError
from .journal_setup import (
    JOURNAL_DIR,
    JournalDamagedError,
    find_journals,
    is_plain,
    journal_path,
    open_readonly,
    prepare_files,
    set_aside,
    set_up,
    shard_of_path,
    table_columns,
)
from .locks import DirectoryClaim, Running
from .ondisk import JournalEntry, ObjectVersion
from .shard import Shard, format_shard

__all__ = [
    "JOURNAL_DIR",
    "Journal",
    "JournalDamagedError",
    "JournalEntry",
    "JournalView",
    "RangeRecord",
    "describe_running",
    "find_journals",
    "is_plain",
    "journal_path",
    "read_entries",
    "set_aside",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RangeRecord:
    """A completed byte range and, if it was received in one stream, its MD5."""

    start: int
    stop: int
    md5: bytes | None


def describe_running(output_directory: Path) -> Callable[[Running], str]:
    """For ``locks.DirectoryClaim``: who holds a conflicting claim (pid, host, since when),
    from the run rows of the journals involved, read as snapshots."""

    def describe(running: Running) -> str:
        plain, sharded = find_journals(output_directory)
        if running.unsharded:
            paths = [plain] if plain else []
        elif running.shard is not None:
            paths = [p for s, p in sharded.items() if s == running.shard]
        else:
            paths = [p for s, p in sharded.items() if s[1] == running.shard_count]
        rows: list[tuple[float, str, int, Shard | None]] = []
        for path in paths:
            with contextlib.suppress(ConfigError, sqlite3.Error), Journal(path, snapshot=True) as j:
                rows.extend(
                    (started, host, pid, shard_of_path(path))
                    for host, pid, started in j.db.execute(
                        "SELECT host, pid, started FROM runs WHERE ended IS NULL"
                    )
                )
        if not rows:
            return ""
        started, host, pid, shard = max(rows)
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(started))
        what = f"shard {format_shard(shard)}, " if shard and running.shard_count else ""
        return f"{what}pid {pid} on {host}, since {since}"

    return describe


class Journal:
    """One SQLite journal file; use as a context manager."""

    def __init__(self, path: Path, *, readonly: bool = False, snapshot: bool = False) -> None:
        """``readonly`` journals (plan, status) take no claim and create nothing. A
        ``snapshot`` (read-only too) does not even touch SQLite's shared-memory index, so it
        is safe on a journal another host is writing over NFS or Lustre, and changes nothing
        on disk; it sees what was checkpointed."""
        self.path = path
        self.readonly = readonly or snapshot
        self.snapshot = snapshot
        self._db: sqlite3.Connection | None = None
        self._claim: DirectoryClaim | None = None
        self._run_id: int | None = None
        self._columns: tuple[str, ...] = ()
        self._select_sql: tuple[tuple[str, ...] | None, str] = (None, "")
        # Things worth telling the user about this journal (links replaced, no file locks).
        self.notes: list[str] = []

    def __enter__(self) -> Self:
        if self._db is None:
            self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def shard(self) -> Shard | None:
        """The shard this journal belongs to (``None``: an unsharded run's)."""
        return shard_of_path(self.path)

    def open(self) -> None:
        """Open the journal; a writer first claims the output folder, then creates the file."""
        if self.readonly:
            self._db = open_readonly(self.path, snapshot=self.snapshot)
            self._columns = table_columns(self._db)
            return
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {folder}: {exc.strerror or exc}") from None
        self._claim = DirectoryClaim(
            folder, self.shard, describe=describe_running(self.path.parent.parent)
        )
        try:
            self._claim.acquire()
            if not self._claim.supported:
                self.notes.append(
                    f"the filesystem of {folder} has no file locks: ego4d-dl cannot stop two "
                    "runs from writing into it at once; make sure only one does"
                )
            prepare_files(self.path, self.notes)
            db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            self._release()
            raise ConfigError(f"cannot open the journal {self.path}: {exc}") from None
        except BaseException:
            self._release()
            raise
        try:
            self._db = db
            self._run_id = set_up(db, self.path)
            self._columns = table_columns(db)
        except JournalDamagedError:
            self._db = None
            db.close()
            self._release()
            raise
        except sqlite3.DatabaseError as exc:
            self._db = None
            db.close()
            self._release()
            raise JournalDamagedError(self.path, f"is damaged ({exc})") from None

    def _release(self) -> None:
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    def close(self) -> None:
        """Commit what is pending, record the run's end, close, give up the claim."""
        if self._db is not None:
            if not self.readonly:
                with contextlib.suppress(sqlite3.Error):
                    if self._run_id is not None:
                        self._db.execute(
                            "UPDATE runs SET ended = ? WHERE id = ?", (time.time(), self._run_id)
                        )
                    self._db.commit()
            self._db.close()
            self._db = None
        self._release()

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

    def _select(self) -> str:
        # Built once per set of columns: ``get`` runs once per planned file.
        if self._select_sql[0] is not self._columns:
            self._select_sql = (self._columns, self._build_select())
        return self._select_sql[1]

    def _build_select(self) -> str:
        def col(name: str) -> str:
            return name if name in self._columns else "NULL"

        done = "(SELECT COALESCE(SUM(r.stop - r.start), 0) FROM ranges r WHERE r.object_id = o.id)"
        columns = (
            "o.id, o.dest, o.bucket, o.key, o.etag, o.size, o.layout, o.layout_exact, o.state, "
            f"o.verify_level, o.file_size, o.file_mtime_ns, {col('file_ino')}, "
            f"{col('file_dev')}, {col('part_ino')}, {done}"
        )
        return f"SELECT {columns} FROM objects o"  # noqa: S608 - built from constants

    def _entry(self, row: Sequence[object]) -> JournalEntry:
        (id_, dest, bucket, key, etag, size, layout, exact, state, level, fsize, mtime) = row[:12]
        ino, dev, part_ino, done = row[12:]
        return JournalEntry(
            id=_int(id_),
            dest=str(dest),
            version=ObjectVersion(
                bucket=str(bucket), key=str(key), etag=str(etag), size_bytes=_int(size)
            ),
            layout=tuple(json.loads(str(layout))) if layout else None,
            layout_exact=bool(exact),
            complete=state == "complete",
            damaged=state == "damaged",
            verify_level=str(level) if level else None,
            file_size=_opt_int(fsize),
            file_mtime_ns=_opt_int(mtime),
            file_ino=_opt_int(ino),
            file_dev=_opt_int(dev),
            part_ino=_opt_int(part_ino),
            done_bytes=_int(done),
            journal=self.path.name,
        )

    def get(self, dest: str) -> JournalEntry | None:
        """The entry for a destination (relative path string), if any."""
        row = self.db.execute(f"{self._select()} WHERE o.dest = ?", (dest,)).fetchone()
        return self._entry(row) if row else None

    def entries(self) -> Iterator[JournalEntry]:
        """Every entry, in destination order."""
        for row in self.db.execute(f"{self._select()} ORDER BY o.dest"):
            yield self._entry(row)

    def ranges(self, object_id: int) -> list[RangeRecord]:
        """Completed ranges of an object, in order."""
        cur = self.db.execute(
            "SELECT start, stop, md5 FROM ranges WHERE object_id = ? ORDER BY start", (object_id,)
        )
        return [RangeRecord(start=a, stop=b, md5=m) for a, b, m in cur]

    def bytes_done(self, object_id: int) -> int:
        """Bytes covered by completed ranges."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(stop - start), 0) FROM ranges WHERE object_id = ?", (object_id,)
        ).fetchone()
        return int(row[0])

    # --- writing ---------------------------------------------------------------------------

    def begin(
        self,
        *,
        dest: str,
        version: ObjectVersion,
        layout: tuple[int, ...] | None,
        layout_exact: bool,
        keep_ranges: bool,
    ) -> int:
        """Start (or restart) the entry for this object version; with ``keep_ranges`` (a
        resume the classifier allowed) the journaled ranges stay, otherwise they go."""
        existing = self.get(dest)
        if existing is not None and not keep_ranges:
            self.db.execute("DELETE FROM ranges WHERE object_id = ?", (existing.id,))
        layout_json = json.dumps(list(layout)) if layout is not None else None
        values = (
            version.bucket,
            version.key,
            version.etag,
            version.size_bytes or 0,
            layout_json,
            int(layout_exact),
            time.time(),
        )
        if existing is None:
            cur = self.db.execute(
                "INSERT INTO objects (bucket, key, etag, size, layout, layout_exact, updated, "
                "dest, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'partial')",
                (*values, dest),
            )
            assert cur.lastrowid is not None
            return int(cur.lastrowid)
        self.db.execute(
            "UPDATE objects SET bucket = ?, key = ?, etag = ?, size = ?, layout = ?, "
            "layout_exact = ?, updated = ?, state = 'partial', verify_level = NULL, "
            "file_size = NULL, file_mtime_ns = NULL, file_ino = NULL, file_dev = NULL "
            "WHERE id = ?",
            (*values, existing.id),
        )
        return existing.id

    def set_part(self, object_id: int, part_ino: int) -> None:
        """Record the inode of the ``.part`` file the object's ranges are written to."""
        self.db.execute("UPDATE objects SET part_ino = ? WHERE id = ?", (part_ino, object_id))

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

    def mark_complete(self, object_id: int, *, verify_level: str, st: os.stat_result) -> None:
        """The file is verified and at its final path (``st``: its ``stat``); its ranges are
        no longer needed."""
        self.db.execute("DELETE FROM ranges WHERE object_id = ?", (object_id,))
        self.db.execute(
            "UPDATE objects SET state = 'complete', verify_level = ?, file_size = ?, "
            "file_mtime_ns = ?, file_ino = ?, file_dev = ?, part_ino = NULL, updated = ? "
            "WHERE id = ?",
            (
                verify_level,
                st.st_size,
                st.st_mtime_ns,
                st.st_ino,
                st.st_dev,
                time.time(),
                object_id,
            ),
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
        version: ObjectVersion,
        verify_level: str,
        st: os.stat_result,
        layout: tuple[int, ...] | None = None,
        layout_exact: bool = False,
    ) -> None:
        """Record a complete, verified file in one statement, whatever was known of it before
        (a small file fetched in one request, or one found on disk); ``st`` is its ``stat``."""
        self.db.execute(
            "DELETE FROM ranges WHERE object_id = (SELECT id FROM objects WHERE dest = ?)",
            (dest,),
        )
        self.db.execute(
            "INSERT INTO objects (dest, bucket, key, etag, size, layout, layout_exact, state, "
            "verify_level, file_size, file_mtime_ns, file_ino, file_dev, part_ino, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'complete', ?, ?, ?, ?, ?, NULL, ?) "
            "ON CONFLICT(dest) DO UPDATE SET bucket = excluded.bucket, key = excluded.key, "
            "etag = excluded.etag, size = excluded.size, layout = excluded.layout, "
            "layout_exact = excluded.layout_exact, state = 'complete', "
            "verify_level = excluded.verify_level, file_size = excluded.file_size, "
            "file_mtime_ns = excluded.file_mtime_ns, file_ino = excluded.file_ino, "
            "file_dev = excluded.file_dev, part_ino = NULL, updated = excluded.updated",
            (
                dest,
                version.bucket,
                version.key,
                version.etag,
                version.size_bytes or 0,
                json.dumps(list(layout)) if layout is not None else None,
                int(layout_exact),
                verify_level,
                st.st_size,
                st.st_mtime_ns,
                st.st_ino,
                st.st_dev,
                time.time(),
            ),
        )


def _int(value: object) -> int:
    if isinstance(value, int | float | str):
        return int(value)
    raise TypeError(f"not an integer in the journal: {value!r}")


def _opt_int(value: object) -> int | None:
    return None if value is None else _int(value)


def read_entries(path: Path) -> list[JournalEntry]:
    """Every entry of a journal read as an immutable snapshot: no lock, nothing written, not
    even SQLite's shared-memory index; safe on a journal another host writes over NFS."""
    with Journal(path, snapshot=True) as journal:
        return list(journal.entries())


class JournalView:
    """What the journals of an output folder know of its files, for ``ondisk.classify``.

    ``own`` is this run's journal (or ``None``: there is none yet); the other journals of the
    folder (other shards, an unsharded run) are read once, as snapshots, when first asked.
    """

    def __init__(self, output_directory: Path, own: Journal | None, own_path: Path) -> None:
        self._out = output_directory
        self._own = own
        self._own_path = own_path
        self._others: dict[str, list[JournalEntry]] | None = None
        self.warnings: list[str] = []

    def entry(self, dest: Path) -> JournalEntry | None:
        """This run's journal's entry for ``dest``."""
        if self._own is None:
            return None
        return self._own.get(self.rel(dest))

    def rel(self, dest: Path) -> str:
        """``dest`` relative to the output folder, as journals key it."""
        return dest.relative_to(self._out).as_posix()

    def others(self, dest: Path) -> list[JournalEntry]:
        """The entries other journals of the folder hold for ``dest``."""
        if self._others is None:
            self._others = {}
            plain, sharded = find_journals(self._out)
            for path in [plain, *sharded.values()]:
                if path is None or path == self._own_path:
                    continue
                try:
                    entries = read_entries(path)
                except (ConfigError, sqlite3.Error):
                    # Another shard's damaged or half-written journal only costs a re-check.
                    continue
                for e in entries:
                    self._others.setdefault(e.dest, []).append(e)
        return self._others.get(self.rel(dest), [])
