"""Ego-Exo4D manifests: a part's manifest.json streamed into rows, each with its destination."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from .errors import ManifestError
from .manifest import parse_s3_url
from .text import has_control

__all__ = [
    "RESERVED_TOP",
    "EgoExoRow",
    "Entry",
    "MalformedPath",
    "TextSource",
    "destination",
    "parse_entries",
    "parse_manifest",
    "read_json_list",
    "relative_path_problem",
]

# ego4d-dl's own folder in the output directory (journal.JOURNAL_DIR, a layer above this one;
# a test keeps the two equal): no manifest path may write into it.
RESERVED_TOP = ".ego4d-dl"
# Linux's NAME_MAX, in bytes of the UTF-8 name: a longer segment cannot be created anywhere.
_MAX_SEGMENT_BYTES = 255
_CHUNK_CHARS = 1 << 16
_WHITESPACE = re.compile(r"[ \t\n\r]*")
# A JSON error this close to the end of what has been read may only mean "read more": the
# longest token a cut can split without an "Unterminated string" error is "-Infinity" or a
# \uXXXX\uXXXX surrogate pair.
_CUT_MARGIN_CHARS = 32


class TextSource(Protocol):
    """Anything with ``read(n)`` returning text: an open text file, ``io.StringIO``,
    ``io.TextIOWrapper`` over bytes or a streaming body. ``""`` means the end."""

    def read(self, size: int, /) -> str: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class EgoExoRow:
    """One path of a manifest entry: a file to fetch and where it lands.

    ``relative_path`` is checked (``relative_path_problem``); ``destination`` joins it to an
    output directory. Label tuples are ``None`` where the manifest leaves the field out or
    null (such a field passes every filter) and may be empty (then it passes none).
    ``entry_no`` and ``path_no`` count from 1, in manifest order.
    """

    entry_no: int
    path_no: int
    uid: str
    bucket: str
    key: str
    relative_path: str
    size_bytes: int | None
    checksum: str | None
    views: tuple[str, ...] | None
    universities: tuple[str, ...] | None
    benchmarks: tuple[str, ...] | None
    splits: tuple[str, ...] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MalformedPath:
    """A path (``path_no`` >= 1) or a whole entry (``path_no`` == 0) that cannot be used."""

    entry_no: int
    path_no: int
    uid: str
    reason: str

    @property
    def where(self) -> str:
        """``entry 12 (uid ...), path 3`` for messages; the uid is shown as a Python literal."""
        uid = f" (uid {_shown(self.uid)})" if self.uid else ""
        path = f", path {self.path_no}" if self.path_no else ""
        return f"entry {self.entry_no}{uid}{path}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One manifest entry: its entry-level labels, its usable paths and its malformed ones."""

    entry_no: int
    uid: str
    benchmarks: tuple[str, ...] | None
    splits: tuple[str, ...] | None
    rows: tuple[EgoExoRow, ...]
    malformed: tuple[MalformedPath, ...]

    @property
    def path_count(self) -> int:
        """Every path the entry names, usable or not (the original's count)."""
        return len(self.rows) + len(self.malformed)


def _shown(value: Any) -> str:
    """A manifest value for a message: a Python literal (control characters escaped), cut
    to a readable length."""
    text = repr(value)
    return text if len(text) <= 100 else f"{text[:97]}..."


class _Bad(Exception):
    """A field that makes its path or entry unusable; the message is the reason."""


# ---------------------------------------------------------------------------------------------
# Streaming the JSON list


class _ListReader:
    """The elements of a JSON list, decoded one at a time from a text stream.

    Holds one element and at most a chunk or two beyond it; an element longer than a chunk
    grows the read size geometrically, so the text is decoded O(1) times per character.
    """

    def __init__(self, stream: TextSource, source: str) -> None:
        self._stream = stream
        self._source = source
        self._decoder = json.JSONDecoder()
        self._buf = ""
        self._pos = 0
        self._dropped = 0  # characters read and discarded before _buf
        self._eof = False

    def _fill(self, at_least: int) -> None:
        if self._eof:
            return
        pieces = [self._buf[self._pos :]]
        self._dropped += self._pos
        self._pos = 0
        got = 0
        while got < at_least:
            try:
                chunk = self._stream.read(max(_CHUNK_CHARS, at_least - got))
            except UnicodeDecodeError as exc:
                raise ManifestError(f"{self._source}: not UTF-8 text ({exc.reason})") from None
            if not chunk:
                self._eof = True
                break
            pieces.append(chunk)
            got += len(chunk)
        self._buf = "".join(pieces)

    def _next_char(self) -> str:
        """The next character that is not JSON whitespace, or ``""`` at the end."""
        while True:
            match = _WHITESPACE.match(self._buf, self._pos)
            self._pos = match.end() if match else self._pos
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if self._eof:
                return ""
            self._fill(_CHUNK_CHARS)

    def _fail(self, what: str, pos: int | None = None) -> ManifestError:
        at = self._dropped + (self._pos if pos is None else pos)
        return ManifestError(
            f"{self._source}: not a JSON list of entries ({what} at character {at})"
        )

    def _value(self) -> Any:
        if self._next_char() == "":
            raise self._fail("the list is cut short")
        need = _CHUNK_CHARS
        while True:
            try:
                value, end = self._decoder.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                cut = exc.msg.startswith("Unterminated string") or (
                    exc.pos >= len(self._buf) - _CUT_MARGIN_CHARS
                )
                if self._eof or not cut:
                    raise self._fail(exc.msg.removesuffix(" at").lower(), exc.pos) from None
            else:
                # A number or literal at the very end may go on in the next chunk.
                if end < len(self._buf) or self._eof:
                    self._pos = end
                    return value
            self._fill(need)
            need *= 2

    def __iter__(self) -> Iterator[Any]:
        if self._next_char() == "\ufeff":
            self._pos += 1
        first = self._next_char()
        if first == "":
            raise ManifestError(f"{self._source}: the manifest is empty")
        if first != "[":
            raise self._fail("expected '['")
        self._pos += 1
        if self._next_char() == "]":
            self._pos += 1
        else:
            while True:
                yield self._value()
                sep = self._next_char()
                if sep == "":
                    raise self._fail("the list is cut short")
                self._pos += 1
                if sep == "]":
                    break
                if sep != ",":
                    raise self._fail("expected ',' or ']'", self._pos - 1)
        if self._next_char() != "":
            raise self._fail("text after the list")


def read_json_list(stream: TextSource, *, source: str) -> Iterator[Any]:
    """The elements of the JSON list ``stream`` holds, decoded one at a time, in order.

    Raises ``ManifestError`` (when the iteration reaches it) if the text is not UTF-8, not
    JSON, or not a list; ``source`` names the document in the message.
    """
    return iter(_ListReader(stream, source))


# ---------------------------------------------------------------------------------------------
# Entries and paths


def relative_path_problem(path: str) -> str | None:
    """Why ``path`` may not be a destination under an output directory, or ``None``.

    Refused: empty, absolute, a backslash (a separator on Windows), empty, ``.`` or ``..``
    segments, control or format characters, a segment longer than a file name can be, and
    anything inside ego4d-dl's own folder. What passes is a canonical relative POSIX path
    that stays inside the output directory whatever the filesystem.
    """
    if not path:
        return "empty relative_path"
    if has_control(path):
        return "relative_path holds control characters"
    if path[0] == "/":
        return "absolute relative_path"
    if "\\" in path:
        return "relative_path holds a backslash (a folder separator on Windows)"
    segments = path.split("/")
    for seg in segments:
        if seg == "..":
            return "relative_path leaves the output directory ('..')"
        if seg in ("", "."):
            return "relative_path has an empty or '.' segment"
        # Only a segment of more than 63 characters can exceed 255 bytes of UTF-8.
        if len(seg) > _MAX_SEGMENT_BYTES // 4 and _utf8_len(seg) > _MAX_SEGMENT_BYTES:
            return f"relative_path has a name longer than {_MAX_SEGMENT_BYTES} bytes"
    if segments[0].casefold() == RESERVED_TOP:
        return f"relative_path is inside ego4d-dl's own folder {RESERVED_TOP}"
    return None


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def destination(output_directory: Path, row: EgoExoRow) -> Path:
    """Where ``row`` lands: ``<output_directory>/<relative_path>``, the original's layout (no
    release or part folder in between). Inside ``output_directory`` by construction."""
    return output_directory.joinpath(*row.relative_path.split("/"))


def _optional_text(value: Any, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Bad(f"{what} is missing" if value is None else f"{what} is not a string")
    if has_control(value):
        raise _Bad(f"{what} {_shown(value)} holds control characters")
    return value


class _Labels:
    """Label lists of one manifest, each distinct tuple kept once (60,000 paths name a few
    dozen distinct view, university, split and benchmark lists)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, ...], tuple[str, ...]] = {}

    def read(self, value: Any, what: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            raise _Bad(f"{what} is not a list of strings")
        labels = tuple(value)
        try:
            # A hit is valid: no JSON value but a string equals a string.
            kept = self._seen.get(labels)
        except TypeError:  # a list or object among the labels
            raise _Bad(f"{what} is not a list of strings") from None
        if kept is None:
            if not all(isinstance(v, str) for v in labels):
                raise _Bad(f"{what} is not a list of strings")
            if any(has_control(v) for v in labels):
                raise _Bad(f"{what} holds control characters")
            kept = self._seen[labels] = tuple(sys.intern(v) for v in labels)
        return kept


def _key_problem(key: str) -> str | None:
    # As for Ego4D's locations: such keys are not what S3 stores, and HTTP layers normalise
    # "/../" away, fetching another object than the one named.
    if key[0] == "/" or ("/." in f"/{key}" and any(s in (".", "..") for s in key.split("/"))):
        return "source_path key has a '.' or '..' segment or starts with '/'"
    return None


def _size(value: Any) -> int | None:
    if value is None:
        return None
    # bool is an int to Python, not to JSON.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Bad(f"size {_shown(value)} is not a byte count")
    return value


def _row(raw: Any, entry: _Head, path_no: int, labels: _Labels) -> EgoExoRow:
    if not isinstance(raw, dict):
        raise _Bad("a path is not a JSON object")
    source = _text(raw.get("source_path"), "source_path")
    parsed = parse_s3_url(source)
    if parsed is None:
        raise _Bad(f"source_path {_shown(source)} is not an s3://bucket/key URL")
    bucket, key = parsed
    problem = _key_problem(key)
    if problem:
        raise _Bad(f"{problem}: {_shown(source)}")
    relative = _text(raw.get("relative_path"), "relative_path")
    problem = relative_path_problem(relative)
    if problem:
        raise _Bad(f"{problem}: {_shown(relative)}")
    return EgoExoRow(
        entry_no=entry.entry_no,
        path_no=path_no,
        uid=entry.uid,
        bucket=sys.intern(bucket),
        key=key,
        relative_path=relative,
        size_bytes=_size(raw.get("size")),
        checksum=_optional_text(raw.get("checksum"), "checksum"),
        views=labels.read(raw.get("views"), "views"),
        universities=labels.read(raw.get("universities"), "universities"),
        benchmarks=entry.benchmarks,
        splits=entry.splits,
    )


class _Head(NamedTuple):
    """An entry's own fields, handed to each of its paths."""

    entry_no: int
    uid: str
    benchmarks: tuple[str, ...] | None
    splits: tuple[str, ...] | None


def _entry(entry_no: int, raw: Any, labels: _Labels) -> Entry | MalformedPath:
    uid = ""
    try:
        if not isinstance(raw, dict):
            raise _Bad("an entry is not a JSON object")
        uid = _text(raw.get("uid"), "uid")
        paths = raw.get("paths")
        if not isinstance(paths, list):
            raise _Bad("paths is missing" if paths is None else "paths is not a list")
        head = _Head(
            entry_no,
            uid,
            labels.read(raw.get("benchmarks"), "benchmarks"),
            labels.read(raw.get("splits"), "splits"),
        )
    except _Bad as exc:
        return MalformedPath(entry_no=entry_no, path_no=0, uid=uid, reason=str(exc))
    rows: list[EgoExoRow] = []
    malformed: list[MalformedPath] = []
    for path_no, raw_path in enumerate(paths, start=1):
        try:
            rows.append(_row(raw_path, head, path_no, labels))
        except _Bad as exc:
            malformed.append(
                MalformedPath(entry_no=entry_no, path_no=path_no, uid=uid, reason=str(exc))
            )
    return Entry(
        entry_no=entry_no,
        uid=uid,
        benchmarks=head.benchmarks,
        splits=head.splits,
        rows=tuple(rows),
        malformed=tuple(malformed),
    )


def parse_entries(stream: TextSource, *, source: str) -> Iterator[Entry | MalformedPath]:
    """The manifest's entries, one at a time, in order; a whole entry that cannot be used
    (not an object, no string uid, no list of paths, labels that are not lists of strings)
    comes out as a ``MalformedPath`` with ``path_no`` 0.

    Raises ``ManifestError`` (lazily, when the iteration reaches it) only for what spoils the
    document itself: not UTF-8, not JSON, not a list. Fields the manifest format does not
    name are ignored. ``source`` names the manifest in messages.
    """
    labels = _Labels()
    for entry_no, raw in enumerate(read_json_list(stream, source=source), start=1):
        yield _entry(entry_no, raw, labels)


def parse_manifest(stream: TextSource, *, source: str) -> Iterator[EgoExoRow | MalformedPath]:
    """Every path of the manifest as a row, or as a ``MalformedPath`` (see ``parse_entries``).

    Entries without paths yield nothing here; ``egoexo_select.select_part`` sees them
    through ``parse_entries``, as their benchmarks still count as valid names.
    """
    for item in parse_entries(stream, source=source):
        if isinstance(item, MalformedPath):
            yield item
        else:
            yield from item.rows
            yield from item.malformed
