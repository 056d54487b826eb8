"""Test support for the fault, bad-input and load tests: seed a dataset of one's own into the
sandbox, run ego4d-dl (as a subprocess or in-process), and check what landed on disk and in
the journal against the truth. Imports ego4d_dl only to drive it, never to compute the truth.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import itertools
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ego4d_dl.config import Endpoint, Options
from ego4d_dl.downloading import DownloadResult, run_download
from ego4d_dl.engine import EngineSettings
from ego4d_dl.events import Event
from ego4d_dl.sandbox import CONSORTIUM_BUCKET, Sandbox, fake_bytes

__all__ = [
    "MIB",
    "CliResult",
    "Dataset",
    "FinalPathWatcher",
    "SourceFile",
    "journal_state",
    "md5_hex",
    "run_cli",
    "run_in_process",
    "seed_dataset",
    "standard_files",
    "unique_name",
]

MIB = 1 << 20
VERSION = "v2_1"
FILES_BUCKET = "ego4d-cmu"
_counter = itertools.count()


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def unique_name(label: str) -> str:
    """A dataset name of our own (lower case, digits, underscores), unique in the session."""
    clean = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:40]
    return f"t{next(_counter)}_{os.getpid()}_{clean}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceFile:
    """One file to seed: its name, bytes and multipart part sizes (empty: one PUT)."""

    name: str
    data: bytes
    parts: tuple[int, ...] = ()


def standard_files(tag: str) -> list[SourceFile]:
    """A small mix (about 14 MiB): multipart with a short last part, single-part, small, tiny."""
    return [
        SourceFile(
            name="multi.bin",
            data=fake_bytes(f"{tag}/multi", 11 * MIB + 5),
            parts=(5 * MIB, 5 * MIB, MIB + 5),
        ),
        SourceFile(name="single.bin", data=fake_bytes(f"{tag}/single", 3 * MIB)),
        SourceFile(name="small.json", data=fake_bytes(f"{tag}/small", 100 * 1024)),
        SourceFile(name="tiny.txt", data=fake_bytes(f"{tag}/tiny", 10)),
    ]


@dataclass(slots=True, kw_only=True)
class Dataset:
    """A dataset seeded for one test: where its objects are and what they hold."""

    name: str
    bucket: str
    files: dict[str, SourceFile]
    etags: dict[str, str] = field(default_factory=dict)

    def key(self, name: str) -> str:
        return f"public/v2/{self.name}/{name}"

    @property
    def key_pattern(self) -> str:
        """An fnmatch pattern for every object of the dataset (not its manifest)."""
        return f"public/v2/{self.name}/*"

    @property
    def size_bytes(self) -> int:
        return sum(len(f.data) for f in self.files.values())

    def folder(self, out: Path) -> Path:
        return out / "v2" / self.name

    def dest(self, out: Path, name: str) -> Path:
        return self.folder(out) / name

    def replace(self, sandbox: Sandbox, source: SourceFile) -> None:
        """Put a new version of one object on the server."""
        obj = sandbox.put_object(
            self.bucket, self.key(source.name), source.data, part_sizes_bytes=source.parts
        )
        self.files[source.name] = source
        self.etags[source.name] = obj.etag

    def check_complete(self, out: Path) -> None:
        """Every file is at its final path with exactly the source bytes; no part file left."""
        for name, source in self.files.items():
            dest = self.dest(out, name)
            assert dest.is_file(), f"{dest} is missing"
            assert md5_hex(dest.read_bytes()) == md5_hex(source.data), f"{dest} differs"
            assert not dest.with_name(dest.name + ".part").exists(), f"{dest}.part left behind"


def manifest_csv(rows: Sequence[tuple[str, str]]) -> bytes:
    """A file-dataset manifest (``file_uid,s3_path``) of ``(uid, location)`` rows."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file_uid", "s3_path", "type"])
    for uid, location in rows:
        writer.writerow([uid, location, "file"])
    return out.getvalue().encode()


def seed_dataset(
    sandbox: Sandbox, name: str, files: Sequence[SourceFile], *, bucket: str = FILES_BUCKET
) -> Dataset:
    """Upload ``files`` and a manifest naming them, as dataset ``name`` of release v2_1.

    Needs the release's buckets (the ``release`` fixture).
    """
    dataset = Dataset(name=name, bucket=bucket, files={f.name: f for f in files})
    for source in files:
        dataset.replace(sandbox, source)
    rows = [(f"uid-{f.name}", f"s3://{bucket}/{dataset.key(f.name)}") for f in files]
    sandbox.put_object(
        CONSORTIUM_BUCKET, f"public/{VERSION}/{name}/manifest.csv", manifest_csv(rows)
    )
    return dataset


# --- running ego4d-dl -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CliResult:
    """A finished ``python -m ego4d_dl`` run."""

    code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, Any]]:
        """The ``--json`` event lines."""
        out = []
        for line in self.stdout.splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    @property
    def summary(self) -> dict[str, Any]:
        """The run summary of a ``--json`` run."""
        finished = [e for e in self.events if e["event"] == "RunFinished"]
        assert finished, f"no RunFinished event; stderr:\n{self.stderr}"
        summary: dict[str, Any] = finished[-1]["summary"]
        return summary

    def error_line(self) -> str:
        """The one ``error:`` line on stderr (asserts there is exactly one, no traceback)."""
        assert "Traceback" not in self.stderr, self.stderr
        errors = [line for line in self.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, f"expected one error line, got:\n{self.stderr}"
        return errors[0]


def cli_args(out: Path, dataset: str, endpoint_url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ego4d_dl",
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


def run_cli(args: Sequence[str], *, env: Mapping[str, str], timeout_s: float = 120.0) -> CliResult:
    """Run the CLI to the end (``args`` start with the interpreter)."""
    proc = subprocess.run(
        list(args),
        env={**_base_env(), **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return CliResult(code=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)


def _base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if k in keep} | {"COLUMNS": "200"}


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
