"""Opening a journal file: its name, its schema and migrations, its files never followed through a
link, a damaged one recognised (and set aside on request)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
import stat
import sys
import time
import urllib.parse
from pathlib import Path

from .errors import ConfigError
from .locks import open_plain
from .shard import Shard

__all__ = [
    "JOURNAL_DIR",
    "JournalDamagedError",
    "find_journals",
    "is_plain",
    "journal_path",
    "open_readonly",
    "prepare_files",
    "set_aside",
    "set_up",
    "shard_of_path",
    "table_columns",
]

JOURNAL_DIR = ".ego4d-dl"
_SCHEMA_VERSION = 2

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
    updated REAL NOT NULL,
    file_ino INTEGER,                   -- schema 2: the verified file's inode and device
    file_dev INTEGER,
    part_ino INTEGER                    -- schema 2: the .part the ranges were written to
);
CREATE TABLE IF NOT EXISTS ranges (
    object_id INTEGER NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
    start INTEGER NOT NULL,
    stop INTEGER NOT NULL,
    md5 BLOB,                           -- MD5 of the bytes as received, when streamed whole
    PRIMARY KEY (object_id, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (       -- who wrote this journal, for "what is running"
    id INTEGER PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    command TEXT NOT NULL
);
"""

# Schema 1 journals gain the columns of schema 2; their complete entries have no inode.
_MIGRATIONS = (
    "ALTER TABLE objects ADD COLUMN file_ino INTEGER",
    "ALTER TABLE objects ADD COLUMN file_dev INTEGER",
    "ALTER TABLE objects ADD COLUMN part_ino INTEGER",
)

_SHARD_JOURNAL_RE = re.compile(r"^journal-shard-(\d+)-of-(\d+)\.sqlite$")

_SIDECARS = ("", "-wal", "-shm", "-journal")


class JournalDamagedError(ConfigError):
    """The journal cannot be read (truncated, garbage, a newer schema); it can be rebuilt."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(
            f"the journal {path} {problem}; rebuild it from the files on disk with "
            "`ego4d-dl verify --repair` (same options as the download; the old journal is "
            "kept beside it), or move it away to start over"
        )
        self.path = path


def is_plain(path: Path) -> bool:
    """Whether ``path`` is a regular file with one name (not a link to something else)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1


def journal_path(output_directory: Path, shard: Shard | None = None) -> Path:
    """Where a run's journal lives; each shard ``K/N`` has its own file."""
    name = "journal.sqlite" if shard is None else f"journal-shard-{shard[0]}-of-{shard[1]}.sqlite"
    return output_directory / JOURNAL_DIR / name


def shard_of_path(path: Path) -> Shard | None:
    match = _SHARD_JOURNAL_RE.match(path.name)
    return (int(match[1]), int(match[2])) if match else None


def find_journals(output_directory: Path) -> tuple[Path | None, dict[Shard, Path]]:
    """The unsharded journal (if any) and every shard's, by ``(K, N)``."""
    folder = output_directory / JOURNAL_DIR
    plain = folder / "journal.sqlite"
    sharded: dict[Shard, Path] = {}
    if folder.is_dir():
        for path in folder.iterdir():
            shard = shard_of_path(path)
            if shard is not None:
                sharded[shard] = path
    return (plain if plain.is_file() else None), sharded


def _command() -> str:
    return " ".join(["ego4d-dl", *sys.argv[1:]])[:500]


def set_aside(path: Path) -> Path:
    """Move a damaged journal (and its WAL files) beside itself; return the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in _SIDECARS:
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).rename(aside.with_name(aside.name + suffix))
    return aside


def prepare_files(path: Path, notes: list[str]) -> None:
    """The journal's files are ours: a link at one of their names is removed, never
    followed (SQLite itself would follow it)."""
    for suffix in _SIDECARS:
        name = path.with_name(path.name + suffix)
        try:
            st = name.lstat()
        except FileNotFoundError:
            continue
        if name.is_symlink() or st.st_nlink > 1:
            kind = "symbolic link" if name.is_symlink() else "hard link"
            name.unlink()
            notes.append(f"{name} was a {kind}; replaced by a file of ego4d-dl's own")
    if not path.exists():
        os.close(open_plain(path, os.O_RDWR | os.O_CREAT | os.O_EXCL))


def set_up(db: sqlite3.Connection, path: Path) -> int | None:
    """Pragmas, a check, migrations, the schema, and this run's row; returns its id."""
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a crash never corrupts, a power loss may drop the last commits,
    # which only means re-fetching a little.
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > _SCHEMA_VERSION:
        raise JournalDamagedError(
            path, f"was written by a newer ego4d-dl (schema {version}); upgrade, or"
        )
    problem = db.execute("PRAGMA quick_check").fetchone()[0]
    if problem != "ok":
        raise JournalDamagedError(path, f"is damaged ({problem})")
    if version == 1:
        for statement in _MIGRATIONS:
            db.execute(statement)
    db.executescript(_SCHEMA)
    db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
    cur = db.execute(
        "INSERT INTO runs (host, pid, started, command) VALUES (?, ?, ?, ?)",
        (socket.gethostname(), os.getpid(), time.time(), _command()),
    )
    db.commit()
    # Readers of snapshots (another run explaining why it is refused, ``status`` on a
    # login node) see only what is checkpointed.
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return cur.lastrowid


def open_readonly(path: Path, *, snapshot: bool) -> sqlite3.Connection:
    """A read-only connection; a ``snapshot`` is immutable (see ``Journal``). Refuses a link,
    a journal of a newer schema, and one that cannot be read."""
    if not is_plain(path):
        raise ConfigError(f"{path} is not a journal of ego4d-dl's own (a link?)")
    immutable = "&immutable=1" if snapshot else ""
    # Quoted: a '?', '#' or '%' in the output directory would end the URI's path.
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro{immutable}"
    db = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > _SCHEMA_VERSION:
            raise JournalDamagedError(
                path, f"was written by a newer ego4d-dl (schema {version}); upgrade, or"
            )
        db.execute("SELECT count(*) FROM objects").fetchone()
    except BaseException as exc:
        db.close()
        if not isinstance(exc, sqlite3.Error):
            raise
        if "no such table" in str(exc):
            raise ConfigError(f"cannot read the journal {path}: {exc}") from None
        raise JournalDamagedError(path, f"cannot be read ({exc})") from None
    return db


def table_columns(db: sqlite3.Connection) -> tuple[str, ...]:
    return tuple(str(row[1]) for row in db.execute("PRAGMA table_info(objects)"))
