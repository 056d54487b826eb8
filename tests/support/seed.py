"""Datasets of a test's own in the sandbox, seeded one way (``seed_dataset``), and what a test
checks on disk against them (``check_download``, ``tree_md5``). Imports ego4d_dl only to put
objects, never to compute the truth.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ego4d_dl.journal import JOURNAL_DIR
from ego4d_dl.sandbox import CONSORTIUM_BUCKET, Sandbox, fake_bytes

__all__ = [
    "FILES_BUCKET",
    "MIB",
    "VERSION",
    "Dataset",
    "SourceFile",
    "blobs",
    "check_download",
    "manifest_csv",
    "md5_hex",
    "put_manifest",
    "seed_dataset",
    "standard_files",
    "tree_md5",
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


def blobs(tag: str, sizes_bytes: Sequence[int], *, part_bytes: int = 8 * MIB) -> list[SourceFile]:
    """``blob-00.bin``, ``blob-01.bin``, ... of the given sizes; multipart (``part_bytes``
    parts, a shorter last one) above ``part_bytes``."""
    files = []
    for i, size in enumerate(sizes_bytes):
        parts = [part_bytes] * (size // part_bytes) if size > part_bytes else []
        if parts and size % part_bytes:
            parts.append(size % part_bytes)
        name = f"blob-{i:02d}.bin"
        files.append(SourceFile(name=name, data=fake_bytes(f"{tag}/{name}", size), parts=(*parts,)))
    return files


@dataclass(slots=True, kw_only=True)
class Dataset:
    """A dataset seeded for one test: where its objects are and what they hold."""

    name: str
    bucket: str
    files: dict[str, SourceFile]
    etags: dict[str, str] = field(default_factory=dict)
    version: str = VERSION

    def key(self, name: str) -> str:
        return f"public/v2/{self.name}/{name}"

    @property
    def key_pattern(self) -> str:
        """An fnmatch pattern for every object of the dataset (not its manifest)."""
        return f"public/v2/{self.name}/*"

    @property
    def size_bytes(self) -> int:
        return sum(len(f.data) for f in self.files.values())

    @property
    def md5_by_relpath(self) -> dict[str, str]:
        """``{path relative to the output directory: MD5}`` of every file."""
        return {self.relpath(name): md5_hex(f.data) for name, f in self.files.items()}

    @property
    def source_by_relpath(self) -> dict[str, tuple[str, str, int]]:
        """``{path relative to the output directory: (bucket, key, size)}``."""
        return {
            self.relpath(name): (self.bucket, self.key(name), len(f.data))
            for name, f in self.files.items()
        }

    def relpath(self, name: str) -> str:
        return f"v2/{self.name}/{name}"

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
    sandbox: Sandbox,
    name: str,
    files: Sequence[SourceFile],
    *,
    bucket: str = FILES_BUCKET,
    missing: int = 0,
) -> Dataset:
    """Upload ``files`` and a manifest naming them (uid ``uid-<file name>``), as dataset
    ``name`` of release v2_1; the manifest also names ``missing`` objects that do not exist
    (``gone-00.bin``, ... with uid ``<name>-gone-00``, ...).

    Needs the release's buckets (the ``release`` fixture).
    """
    dataset = Dataset(name=name, bucket=bucket, files={f.name: f for f in files})
    for source in files:
        dataset.replace(sandbox, source)
    rows = [(f"uid-{f.name}", f"s3://{bucket}/{dataset.key(f.name)}") for f in files]
    rows += [
        (f"{name}-gone-{i:02d}", f"s3://{bucket}/{dataset.key(f'gone-{i:02d}.bin')}")
        for i in range(missing)
    ]
    sandbox.put_object(
        CONSORTIUM_BUCKET, f"public/{VERSION}/{name}/manifest.csv", manifest_csv(rows)
    )
    return dataset


def put_manifest(
    sandbox: Sandbox, dataset: str, header: str, rows: Sequence[str], version: str = VERSION
) -> None:
    """Publish a manifest of the given text rows for ``dataset`` in the consortium bucket."""
    body = "\n".join([header, *rows]) + "\n"
    sandbox.create_bucket(CONSORTIUM_BUCKET)
    sandbox.put_object(CONSORTIUM_BUCKET, f"public/{version}/{dataset}/manifest.csv", body.encode())


def check_download(out: Path, dataset: Dataset) -> list[str]:
    """Paths (relative to ``out``) that are missing or differ from what was seeded."""
    bad = []
    for relpath, want in sorted(dataset.md5_by_relpath.items()):
        path = out / relpath
        if not path.is_file() or md5_hex(path.read_bytes()) != want:
            bad.append(relpath)
    return bad


def tree_md5(root: Path) -> dict[str, str]:
    """``{relative path: md5}`` of every file under ``root`` except ego4d-dl's own journals."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and rel.parts[0] != JOURNAL_DIR:
            out[str(rel)] = md5_hex(path.read_bytes())
    return out
