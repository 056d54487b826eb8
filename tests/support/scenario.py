"""Test support for the fault, ownership and load tests: the arguments of a download of a
seeded dataset (``tests/support/seed.py``), a download run on this thread's loop with its
events, and what landed on disk and in the journal checked against the truth. Imports ego4d_dl
only to drive it, never to compute the truth.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ego4d_dl.config import Endpoint, Options
from ego4d_dl.downloading import DownloadResult, run_download
from ego4d_dl.engine import EngineSettings
from ego4d_dl.events import Event
from tests.support.seed import VERSION, Dataset, md5_hex

__all__ = [
    "FinalPathWatcher",
    "JournalState",
    "download_args",
    "iter_dests",
    "journal_state",
    "options_for",
    "run_in_process",
]


def download_args(out: Path, dataset: str, endpoint_url: str, *extra: str) -> list[str]:
    """``download`` of one dataset into ``out``, without metadata or a question (for
    ``cli_process``, or after ``COMMAND`` for a process of one's own)."""
    return [
        "download",
        "--output_directory",
        str(out),
        "--datasets",
        dataset,
        "--endpoint-url",
        endpoint_url,
        "--no-metadata",
        "--yes",
        *extra,
    ]


def options_for(
    out: Path,
    dataset: str,
    endpoint_url: str,
    *,
    concurrency: int = 16,
    stall_timeout_s: float = 60.0,
) -> Options:
    return Options(
        output_directory=out,
        version=VERSION,
        datasets=(dataset,),
        endpoint=Endpoint(url=endpoint_url, region="us-east-1"),
        concurrency=concurrency,
        stall_timeout_s=stall_timeout_s,
        metadata=False,
        assume_yes=True,
    )


def run_in_process(
    out: Path,
    dataset: str,
    endpoint_url: str,
    *,
    settings: EngineSettings | None = None,
    stall_timeout_s: float = 60.0,
) -> tuple[DownloadResult, list[Event]]:
    """Run a download on this thread's new event loop; return its result and every event.

    Credentials come from the environment (the ``aws_env`` fixture).
    """
    settings = settings or EngineSettings()
    options = options_for(
        out,
        dataset,
        endpoint_url,
        concurrency=settings.concurrency,
        stall_timeout_s=stall_timeout_s,
    )
    events: list[Event] = []

    async def yes(_: object) -> bool:
        return True

    result = asyncio.run(run_download(options, sink=events.append, confirm=yes, settings=settings))
    return result, events


# --- checking what is on disk ---------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalState:
    """What a journal says, checked against the bytes on disk and the source."""

    complete: dict[str, int]  # dest -> size: complete entries, and final files not journaled
    partial: dict[str, list[tuple[int, int]]]  # dest -> journaled ranges with a part file

    @property
    def journaled_bytes(self) -> int:
        """Bytes a resume may keep: complete files plus journaled ranges of part files."""
        return sum(self.complete.values()) + sum(
            b - a for ranges in self.partial.values() for a, b in ranges
        )


def journal_state(out: Path, sources: Mapping[str, bytes]) -> JournalState:
    """Read the journal and assert it is consistent with the disk: a complete entry's file
    holds exactly its source bytes; every journaled range of a part file holds the source's
    bytes at those offsets (its MD5, when recorded, matching too). ``sources`` maps a
    destination relative to ``out`` to its object's bytes."""
    db = sqlite3.connect(f"file:{out / '.ego4d-dl' / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        objects = db.execute("SELECT id, dest, etag, state FROM objects").fetchall()
        complete: dict[str, int] = {}
        partial: dict[str, list[tuple[int, int]]] = {}
        for object_id, dest, _etag, state in objects:
            path = out / dest
            source = sources[dest]
            if state == "complete":
                assert path.is_file(), f"journal says {dest} is complete but it is not there"
                assert md5_hex(path.read_bytes()) == md5_hex(source), f"{dest} is corrupt"
                complete[dest] = len(source)
                continue
            part = path.with_name(path.name + ".part")
            if path.exists():
                assert md5_hex(path.read_bytes()) == md5_hex(source), f"{dest} is corrupt"
            rows = db.execute(
                "SELECT start, stop, md5 FROM ranges WHERE object_id = ? ORDER BY start",
                (object_id,),
            ).fetchall()
            if not part.exists():
                continue
            data = part.read_bytes()
            for start, stop, md5 in rows:
                assert data[start:stop] == source[start:stop], (
                    f"{dest}: journaled range {start}-{stop} does not hold the object's bytes"
                )
                if md5 is not None:
                    assert bytes(md5) == hashlib.md5(source[start:stop]).digest()
            partial[dest] = [(int(a), int(b)) for a, b, _ in rows]
        known = {str(dest) for _, dest, _, _ in objects}
        for dest, source in sources.items():
            path = out / dest
            if dest not in known and path.exists():
                # Renamed into place, but the journal commit after it never happened: a
                # rerun keeps it by its size, so it must hold exactly the object's bytes.
                assert md5_hex(path.read_bytes()) == md5_hex(source), f"{dest} is corrupt"
                complete[dest] = len(source)
        return JournalState(complete=complete, partial=partial)
    finally:
        db.close()


class FinalPathWatcher:
    """Polls final paths while a run goes on and hashes whatever appears there, so a test can
    assert that no final path ever held bytes other than the object's."""

    def __init__(self, expected: Mapping[Path, str], interval_s: float = 0.002) -> None:
        self._expected = dict(expected)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.observed: list[tuple[Path, str]] = []

    def __enter__(self) -> FinalPathWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in self._expected:
                try:
                    data = path.read_bytes()
                except OSError:
                    continue
                self.observed.append((path, md5_hex(data)))
            self._stop.wait(self._interval_s)

    @property
    def bad(self) -> list[Path]:
        """Final paths seen holding anything but the expected bytes."""
        return [p for p, digest in self.observed if digest != self._expected[p]]


def iter_dests(out: Path, dataset: Dataset) -> Iterator[tuple[str, bytes]]:
    """``(dest relative to out, source bytes)`` of every file of ``dataset``."""
    for name, source in dataset.files.items():
        yield str(dataset.dest(out, name).relative_to(out)), source.data
