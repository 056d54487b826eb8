"""Manifest parsing and selection filters; pure, streaming, never crashes on a bad row."""

from __future__ import annotations

import csv
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .catalog import BUCKET_TO_UNIVERSITY
from .errors import ManifestError
from .text import has_control

__all__ = [
    "FileKind",
    "MalformedRow",
    "ManifestHeader",
    "ManifestRow",
    "Selection",
    "parse_benchmarks",
    "parse_manifest",
    "parse_s3_url",
]

_UID_COLUMNS = ("file_uid", "video_uid")
_LOCATION_COLUMNS = ("canonical_s3_location", "s3_path")
_VIDEO_TYPES = frozenset({"mp4", "video"})
_FILE_TYPES = frozenset({"file", "json"})
# Bucket names per S3's rules (lower case, digits, dots, dashes; 3-63 chars).
_S3_URL_RE = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])/(?P<key>.+)$")


class FileKind(Enum):
    """How a row lands on disk: videos as ``<uid>.mp4``, files under the key's basename."""

    VIDEO = "video"
    FILE = "file"


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestRow:
    """One usable manifest row. ``filename`` is a single safe path segment."""

    line: int
    uid: str
    bucket: str
    key: str
    kind: FileKind
    benchmarks: frozenset[str]
    filename: str

    @property
    def university(self) -> str:
        """The university owning the bucket, or ``""`` for a bucket the catalog does not know."""
        return BUCKET_TO_UNIVERSITY.get(self.bucket, "")


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestHeader:
    """The manifest's column names (lower case) and whether it carries benchmarks."""

    columns: tuple[str, ...]
    has_benchmarks: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class MalformedRow:
    """A row that cannot be downloaded, kept so it is counted and reported by line."""

    line: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which rows the user asked for. Empty sets mean "no filter"."""

    benchmarks: frozenset[str] = frozenset()
    universities: frozenset[str] = frozenset()
    uids: frozenset[str] = frozenset()

    def admits(self, row: ManifestRow) -> bool:
        """Whether the row passes the benchmark and university filters (uids are separate)."""
        if self.benchmarks and not (row.benchmarks & self.benchmarks):
            return False
        return not (self.universities and row.university not in self.universities)


def parse_s3_url(url: str) -> tuple[str, str] | None:
    """Split ``s3://bucket/key`` into its parts, or ``None`` when it is not such a URL."""
    match = _S3_URL_RE.match(url.strip())
    if match is None:
        return None
    return match["bucket"], match["key"]


def parse_benchmarks(text: str) -> frozenset[str]:
    """``"[FHO | em]"`` -> ``{"fho", "em"}``: case and spaces ignored, brackets optional."""
    inner = re.sub(r"\s+", "", text).lower().strip("[]")
    return frozenset(part for part in inner.split("|") if part)


def _unsafe_segment(name: str) -> bool:
    return name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name


def _key_problem(key: str) -> str | None:
    if key.startswith("/"):
        return "absolute key"
    if any(seg == ".." for seg in key.split("/")):
        return "key contains '..'"
    if "\x00" in key:
        return "key contains a NUL byte"
    return None


def parse_manifest(
    lines: Iterable[str], *, source: str
) -> tuple[ManifestHeader, Iterator[ManifestRow | MalformedRow]]:
    """Read the header now; return it with a lazy iterator over the data rows.

    Each row comes out as a ``ManifestRow`` or, if unusable, a ``MalformedRow`` with its line
    number. ``lines`` is any iterable of text lines (an open file streams). Raises
    ``ManifestError`` only for problems of the whole manifest: no header, no uid column or no
    location column. ``source`` names the manifest in those messages.
    """
    reader = csv.reader(iter(lines))
    try:
        header = next(reader)
    except StopIteration:
        raise ManifestError(f"{source}: the manifest is empty") from None
    except csv.Error as exc:
        raise ManifestError(f"{source}: not a CSV file ({exc})") from None
    columns = [name.strip().lower() for name in header]
    uid_col = next((columns.index(c) for c in _UID_COLUMNS if c in columns), None)
    loc_col = next((columns.index(c) for c in _LOCATION_COLUMNS if c in columns), None)
    if uid_col is None:
        raise ManifestError(f"{source}: no uid column (expected one of {', '.join(_UID_COLUMNS)})")
    if loc_col is None:
        raise ManifestError(
            f"{source}: no location column (expected one of {', '.join(_LOCATION_COLUMNS)})"
        )
    default_kind = FileKind.FILE if columns[uid_col] == "file_uid" else FileKind.VIDEO
    type_col = columns.index("type") if "type" in columns else None
    bench_col = columns.index("benchmarks") if "benchmarks" in columns else None
    header_info = ManifestHeader(columns=tuple(columns), has_benchmarks=bench_col is not None)
    return header_info, _rows(
        reader,
        uid_col=uid_col,
        loc_col=loc_col,
        type_col=type_col,
        bench_col=bench_col,
        default_kind=default_kind,
    )


def _rows(
    reader: Any,
    *,
    uid_col: int,
    loc_col: int,
    type_col: int | None,
    bench_col: int | None,
    default_kind: FileKind,
) -> Iterator[ManifestRow | MalformedRow]:
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield MalformedRow(line=reader.line_num, reason=f"not valid CSV ({exc})")
            continue
        if not any(cell.strip() for cell in record):
            continue
        yield _parse_record(
            record,
            line=reader.line_num,
            uid_col=uid_col,
            loc_col=loc_col,
            type_col=type_col,
            bench_col=bench_col,
            default_kind=default_kind,
        )


def _cell(record: list[str], col: int | None) -> str:
    if col is None or col >= len(record):
        return ""
    return record[col].strip()


def _parse_record(
    record: list[str],
    *,
    line: int,
    uid_col: int,
    loc_col: int,
    type_col: int | None,
    bench_col: int | None,
    default_kind: FileKind,
) -> ManifestRow | MalformedRow:
    uid = _cell(record, uid_col)
    if not uid:
        return MalformedRow(line=line, reason="no uid")
    if has_control(uid):
        return MalformedRow(line=line, reason=f"uid {uid!r} holds control characters")
    location = _cell(record, loc_col)
    if has_control(location):
        return MalformedRow(line=line, reason=f"location {location!r} holds control characters")
    parsed = parse_s3_url(location)
    if parsed is None:
        shown = location if len(location) <= 80 else location[:77] + "..."
        return MalformedRow(line=line, reason=f"not an s3://bucket/key location: {shown!r}")
    bucket, key = parsed
    problem = _key_problem(key)
    if problem:
        return MalformedRow(line=line, reason=f"unsafe location {location!r}: {problem}")
    kind_text = _cell(record, type_col).lower()
    kind = (
        FileKind.VIDEO
        if kind_text in _VIDEO_TYPES
        else FileKind.FILE
        if kind_text in _FILE_TYPES
        else default_kind
    )
    filename = f"{uid}.mp4" if kind is FileKind.VIDEO else posixpath.basename(key)
    if _unsafe_segment(filename):
        what = "uid" if kind is FileKind.VIDEO else "key basename"
        return MalformedRow(line=line, reason=f"{what} {filename!r} is not a safe file name")
    return ManifestRow(
        line=line,
        uid=uid,
        bucket=bucket,
        key=key,
        kind=kind,
        benchmarks=parse_benchmarks(_cell(record, bench_col)),
        filename=filename,
    )
