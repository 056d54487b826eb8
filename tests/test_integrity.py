"""Pure verification and range arithmetic, including Hypothesis properties."""

from __future__ import annotations

import hashlib
import itertools

from hypothesis import given
from hypothesis import strategies as st

from ego4d_dl.etags import VerifyLevel, composite_etag, etag_kind, guess_layout, multipart_count
from ego4d_dl.ranges import merge_ranges, missing_ranges, part_bounds, plan_pieces

ranges_st = st.lists(
    st.tuples(st.integers(0, 1000), st.integers(0, 1000)).map(lambda t: (min(t), max(t))),
    max_size=20,
)
layout_st = st.lists(st.integers(1, 50), min_size=1, max_size=12).map(tuple)


def test_etag_kinds() -> None:
    assert etag_kind("5eb63bbbe01eeed093cb22bb8f5acdc3") is VerifyLevel.MD5
    assert etag_kind("0bea5bb1e8dd91637e91900805092038-58") is VerifyLevel.COMPOSITE
    assert etag_kind("not-an-md5") is VerifyLevel.SIZE
    assert multipart_count("0bea5bb1e8dd91637e91900805092038-58") == 58
    assert multipart_count("5eb63bbbe01eeed093cb22bb8f5acdc3") is None


def test_composite_etag_known_value() -> None:
    # Computed independently of the code under test: md5 of the concatenated part digests.
    parts = [b"a" * 10, b"b" * 7]
    expected = hashlib.md5(hashlib.md5(parts[0]).digest() + hashlib.md5(parts[1]).digest())
    assert composite_etag([hashlib.md5(p).digest() for p in parts]) == f"{expected.hexdigest()}-2"


@given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=8))
def test_composite_matches_s3_definition(parts: list[bytes]) -> None:
    digests = b"".join(hashlib.md5(p).digest() for p in parts)
    want = hashlib.md5(digests).hexdigest() + f"-{len(parts)}"
    assert composite_etag([hashlib.md5(p).digest() for p in parts]) == want


def test_guess_layout() -> None:
    assert guess_layout(20, 8, 3) == (8, 8, 4)
    assert guess_layout(24, 8, 3) == (8, 8, 8)
    assert guess_layout(24, 5, 4) is None  # 5,7,9,3 MiB cannot be uniform
    assert guess_layout(10, 10, 1) == (10,)
    assert guess_layout(10, 4, 1) is None


@given(ranges_st)
def test_merge_is_idempotent_and_disjoint(ranges: list[tuple[int, int]]) -> None:
    merged = merge_ranges(ranges)
    assert merge_ranges(merged) == merged
    assert merge_ranges(ranges + merged) == merged
    for (a, b), (c, d) in itertools.pairwise(merged):
        assert a < b < c < d
    covered = {i for a, b in ranges for i in range(a, b)}
    assert covered == {i for a, b in merged for i in range(a, b)}


@given(st.integers(0, 1000), ranges_st)
def test_missing_is_the_complement(size: int, done: list[tuple[int, int]]) -> None:
    missing = missing_ranges(size, done)
    have = {i for a, b in done for i in range(a, b)}
    assert {i for a, b in missing for i in range(a, b)} == set(range(size)) - have


@given(layout_st, ranges_st, st.integers(1, 30))
def test_pieces_tile_exactly_without_crossing_parts(
    layout: tuple[int, ...], done: list[tuple[int, int]], max_piece: int
) -> None:
    size = sum(layout)
    todo = missing_ranges(size, done)
    pieces = plan_pieces(layout, todo, max_piece)
    bytes_ = [i for p in pieces for i in range(p.start, p.stop)]
    assert len(bytes_) == len(set(bytes_)), "pieces overlap"
    assert set(bytes_) == {i for a, b in todo for i in range(a, b)}, "pieces do not tile"
    have = {i for a, b in done for i in range(a, b)}
    assert not (set(bytes_) & have), "a journaled range would be refetched"
    bounds = part_bounds(layout)
    for p in pieces:
        lo, hi = bounds[p.part]
        assert lo <= p.start < p.stop <= hi
        assert p.size_bytes <= max_piece
        assert p.whole_part == ((p.start, p.stop) == (lo, hi))


def test_whole_parts_of_a_fresh_multipart_object() -> None:
    pieces = plan_pieces((8, 8, 4), [(0, 20)], 16)
    assert [(p.start, p.stop, p.part, p.whole_part) for p in pieces] == [
        (0, 8, 0, True),
        (8, 16, 1, True),
        (16, 20, 2, True),
    ]
