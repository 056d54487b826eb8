"""The bench's workloads: three Ego4D datasets of a fake release, seeded into a sandbox.

``large`` (six 256 MiB multipart videos), ``small`` (2,000 files of 64-256 KiB) and ``mixed``
(37 objects of every layout). ``quick=True`` gives smaller versions of each, for a smoke test
of the bench itself (``bench.py --quick``): their numbers mean nothing.
"""

from __future__ import annotations

import concurrent.futures
import csv
import io
import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from ego4d_dl.sandbox import CONSORTIUM_BUCKET, Sandbox, fake_bytes

__all__ = [
    "OUT_VERSION",
    "PROFILES",
    "VERSION",
    "KiB",
    "MiB",
    "Profile",
    "Row",
    "Seeded",
    "make_profile",
    "seed",
]

MiB = 1 << 20
KiB = 1 << 10
VERSION = "v2_1"
OUT_VERSION = "v2"
_UIDS = uuid.UUID("5b1e0c2a-8f43-4d7e-a1c9-0e4d1b2c3f4a")


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One object of a profile: its file name, size and multipart layout (empty: one PUT)."""

    name: str
    size_bytes: int
    part_sizes_bytes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """A benchmark workload: one Ego4D dataset of the fake release."""

    name: str
    dataset: str
    kind: Literal["video", "file"]
    description: str
    rows: tuple[Row, ...]

    @property
    def size_bytes(self) -> int:
        """Bytes of all objects."""
        return sum(r.size_bytes for r in self.rows)

    @property
    def prefix(self) -> str:
        """The S3 folder holding exactly this profile's objects."""
        return f"public/{OUT_VERSION}/{self.dataset}/"


def _uid(label: str) -> str:
    return str(uuid.uuid5(_UIDS, label))


def _large(quick: bool) -> Profile:
    count, parts = (2, 4) if quick else (6, 32)
    rows = tuple(
        Row(
            name=f"{_uid(f'large/{i}')}.mp4",
            size_bytes=parts * 8 * MiB,
            part_sizes_bytes=(8 * MiB,) * parts,
        )
        for i in range(count)
    )
    return Profile(
        name="large",
        dataset="full_scale",
        kind="video",
        description=f"{count} x {parts * 8} MiB, multipart with 8 MiB parts (like the real videos)",
        rows=rows,
    )


def _small(quick: bool) -> Profile:
    rng = random.Random(20240601)
    count = 200 if quick else 2000
    rows = tuple(
        Row(name=f"annotation_{i:05d}.json", size_bytes=rng.randint(64 * KiB, 256 * KiB))
        for i in range(count)
    )
    return Profile(
        name="small",
        dataset="annotations",
        kind="file",
        description=f"{count:,} files of 64-256 KiB, single PUT",
        rows=rows,
    )


def _mixed(quick: bool) -> Profile:
    rng = random.Random(20240602)
    rows: list[Row] = []

    def add(size: int, parts: tuple[int, ...] = ()) -> None:
        rows.append(
            Row(name=f"{_uid(f'mixed/{len(rows)}')}.mp4", size_bytes=size, part_sizes_bytes=parts)
        )

    # Single PUTs from one byte to 15 MiB at odd sizes.
    for size in (1, 4 * KiB + 1, 100 * KiB + 3, 999 * KiB, MiB + 7, 3 * MiB + 333):
        add(size)
    for _ in range(10):
        add(rng.randint(64 * KiB, 15 * MiB))
    # Uniform multipart uploads with a short last part, at several part sizes.
    for part, count in ((5 * MiB, 3), (8 * MiB, 4), (16 * MiB, 2), (6 * MiB, 5), (10 * MiB, 3)):
        for _ in range(2):
            last = rng.randint(1, part)
            add(part * (count - 1) + last, (part,) * (count - 1) + (last,))
    # Non-uniform layouts: the part sizes must be read one HEAD per part.
    for parts in (
        (5 * MiB, 7 * MiB, 9 * MiB, 3 * MiB),
        (9 * MiB, 5 * MiB, 5 * MiB + 17),
        (6 * MiB, 8 * MiB, 5 * MiB, 7 * MiB, 1),
        (12 * MiB, 5 * MiB + 1, 2 * MiB),
        (7 * MiB, 7 * MiB + 3, 5 * MiB, 11 * MiB),
    ):
        add(sum(parts), parts)
    # A one-part multipart upload (ETag "...-1") and single PUTs that fill the count to 37.
    add(7 * MiB + 5, (7 * MiB + 5,))
    for _ in range(37 - len(rows)):
        add(rng.randint(MiB, 9 * MiB))
    if quick:
        # The single PUTs and the first uniform multipart uploads: every code path, less data.
        return Profile(
            name="mixed",
            dataset="clips",
            kind="video",
            description="quick: the first 18 of the 37 mixed objects",
            rows=tuple(rows[:18]),
        )
    return Profile(
        name="mixed",
        dataset="clips",
        kind="video",
        description="37 objects: single PUTs of 1 B-15 MiB, uniform multipart (5-16 MiB parts) "
        "and non-uniform layouts",
        rows=tuple(rows),
    )


PROFILES: dict[str, Callable[[bool], Profile]] = {
    "large": _large,
    "small": _small,
    "mixed": _mixed,
}


def make_profile(name: str, *, quick: bool = False) -> Profile:
    """The profile called ``name``; ``quick``: its smaller version, for a smoke test."""
    return PROFILES[name](quick)


@dataclass(frozen=True, slots=True, kw_only=True)
class Seeded:
    """A seeded profile and the truth about it: file name -> (size, MD5)."""

    profile: Profile
    truth: Mapping[str, tuple[int, str]]


def _manifest(profile: Profile) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if profile.kind == "video":
        writer.writerow(["video_uid", "canonical_s3_location", "type"])
        kind = "mp4"
    else:
        writer.writerow(["file_uid", "s3_path", "type"])
        kind = "file"
    for row in profile.rows:
        uid = row.name.removesuffix(".mp4")
        writer.writerow([uid, f"s3://{CONSORTIUM_BUCKET}/{profile.prefix}{row.name}", kind])
    return out.getvalue().encode()


def _content(key: str, size_bytes: int) -> bytes:
    """Pseudo-random bytes, unique at every offset (made in blocks: one call stops at 256 MiB)."""
    block = 16 * MiB
    return b"".join(
        fake_bytes(f"{key}#{offset}", min(block, size_bytes - offset))
        for offset in range(0, size_bytes, block)
    )


def seed(sandbox: Sandbox, profile: Profile) -> Seeded:
    """Put the profile's objects and its manifest; return the MD5 of every file."""
    sandbox.create_bucket(CONSORTIUM_BUCKET)

    def put(row: Row) -> tuple[str, tuple[int, str]]:
        key = profile.prefix + row.name
        data = _content(key, row.size_bytes)
        obj = sandbox.put_object(
            CONSORTIUM_BUCKET, key, data, part_sizes_bytes=row.part_sizes_bytes
        )
        return row.name, (obj.size_bytes, obj.md5_hex)

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        truth = dict(pool.map(put, profile.rows))
    sandbox.put_object(
        CONSORTIUM_BUCKET, f"public/{VERSION}/{profile.dataset}/manifest.csv", _manifest(profile)
    )
    return Seeded(profile=profile, truth=truth)
