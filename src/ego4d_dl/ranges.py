"""Byte ranges of an object: the upload parts they tile, what is done and missing, the pieces to
fetch; pure. Ranges are half-open ``(start, stop)`` byte intervals."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Piece", "Range", "merge_ranges", "missing_ranges", "part_bounds", "plan_pieces"]

Range = tuple[int, int]


def part_bounds(layout: Sequence[int]) -> list[Range]:
    """``(5, 7, 3)`` -> ``[(0, 5), (5, 12), (12, 15)]``."""
    bounds = []
    offset = 0
    for size in layout:
        bounds.append((offset, offset + size))
        offset += size
    return bounds


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sorted, non-overlapping, non-adjacent union of ``ranges`` (empty ones dropped)."""
    out: list[Range] = []
    for start, stop in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            if stop > out[-1][1]:
                out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))
    return out


def missing_ranges(size_bytes: int, done: Iterable[Range]) -> list[Range]:
    """The parts of ``[0, size_bytes)`` that ``done`` does not cover."""
    out = []
    cursor = 0
    for start, stop in merge_ranges(done):
        if start > cursor:
            out.append((cursor, min(start, size_bytes)))
        cursor = max(cursor, stop)
    if cursor < size_bytes:
        out.append((cursor, size_bytes))
    return [r for r in out if r[1] > r[0]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Piece:
    """One ranged GET: bytes ``[start, stop)`` that lie inside upload part ``part`` (0-based).

    ``whole_part`` says the piece is exactly its part, so the MD5 streamed while receiving it
    is that part's MD5 and the part need not be read back from disk.
    """

    start: int
    stop: int
    part: int
    whole_part: bool

    @property
    def size_bytes(self) -> int:
        """Length of the range."""
        return self.stop - self.start


def plan_pieces(layout: Sequence[int], todo: Iterable[Range], max_piece_bytes: int) -> list[Piece]:
    """Cut the ``todo`` ranges into GETs no larger than ``max_piece_bytes`` that never cross a
    part boundary (so every byte's part, and so its MD5, is known)."""
    if max_piece_bytes <= 0:
        raise ValueError("max_piece_bytes must be positive")
    bounds = part_bounds(layout)
    pieces: list[Piece] = []
    for start, stop in merge_ranges(todo):
        for index, (p_start, p_stop) in enumerate(bounds):
            lo, hi = max(start, p_start), min(stop, p_stop)
            if lo >= hi:
                continue
            whole = lo == p_start and hi == p_stop and hi - lo <= max_piece_bytes
            cursor = lo
            while cursor < hi:
                end = min(hi, cursor + max_piece_bytes)
                pieces.append(Piece(start=cursor, stop=end, part=index, whole_part=whole))
                cursor = end
    return pieces
