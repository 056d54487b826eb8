"""Ego-Exo4D filters select exactly what the original selects.

Two oracles from the installed original (``egoexo_oracle``): its whole ``main`` over the fake
release's manifests (parts read, files it goes on to fetch, files it drops for a zero size,
its warnings and counts), for every filter flag alone and combined; and its
``_manifest_ok``/``_path_ok`` over random manifests in which every label is absent, null,
empty or a list, for random flags.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ego4d_dl.egoexo_manifest import EgoExoRow, parse_entries
from ego4d_dl.egoexo_select import (
    EgoExoSelection,
    select_part,
    unknown_benchmarks,
    unknown_benchmarks_warning,
)
from ego4d_dl.sandbox import egoexo_manifest_json, egoexo_release_spec
from tests.support.egoexo_oracle import Flags, original_filter, original_plan, ours
from tests.support.examples import examples

SPEC = egoexo_release_spec()
MANIFESTS = {part: egoexo_manifest_json(entries) for part, entries in SPEC.parts}
SIZES = {
    f"s3://{p.bucket}/{p.key}": p.size_bytes
    for _, entries in SPEC.parts
    for e in entries
    for p in e.paths
}
TAKE = next(e.uid for part, entries in SPEC.parts if part == "takes" for e in entries)
CAPTURE = next(e.uid for part, entries in SPEC.parts if part == "captures" for e in entries)
ALL = ("all",)

CASES = {
    "default": Flags(),
    "all": Flags(parts=ALL),
    # each flag alone
    "uid_take": Flags(parts=ALL, uids=(TAKE,)),
    "uid_capture_and_annotation": Flags(parts=ALL, uids=(CAPTURE, "keystep")),
    "uid_empty": Flags(parts=ALL, uids=("",)),
    "uid_unknown": Flags(parts=ALL, uids=("no-such-uid",)),
    "uid_commentary": Flags(parts=ALL, uids=(f"{TAKE}_expert_a",)),
    "benchmark": Flags(parts=ALL, benchmarks=("keystep",)),
    "benchmarks_two": Flags(parts=ALL, benchmarks=("proficiency", "relations")),
    "benchmark_egopose": Flags(parts=ALL, benchmarks=("egopose",)),
    "benchmark_unknown": Flags(parts=ALL, benchmarks=("bogus",)),
    "benchmark_case": Flags(parts=ALL, benchmarks=("Keystep",)),
    "benchmark_known_and_unknown": Flags(parts=ALL, benchmarks=("keystep", "bogus")),
    "benchmark_of_entries_without_paths": Flags(parts=("take_audio",), benchmarks=("translation",)),
    "split": Flags(parts=ALL, splits=("train",)),
    "splits_two": Flags(parts=ALL, splits=("val", "test")),
    "split_case": Flags(parts=ALL, splits=("Train",)),
    "split_unknown": Flags(parts=ALL, splits=("bogus",)),
    "view_ego": Flags(parts=ALL, views=("ego",)),
    "view_exo": Flags(parts=ALL, views=("exo",)),
    "views_both": Flags(parts=ALL, views=("ego", "exo")),
    "view_case": Flags(parts=ALL, views=("EGO",)),
    "university": Flags(parts=ALL, universities=("cmu",)),
    "universities_two": Flags(parts=ALL, universities=("iiith", "upenn")),
    "university_case": Flags(parts=ALL, universities=("CMU",)),
    "university_unknown": Flags(parts=ALL, universities=("mit",)),
    # combined
    "benchmark_split": Flags(parts=ALL, benchmarks=("keystep",), splits=("train",)),
    "view_university": Flags(parts=ALL, views=("exo",), universities=("cmu", "upenn")),
    "uid_view": Flags(parts=ALL, uids=(TAKE, CAPTURE), views=("ego",)),
    "split_university": Flags(parts=ALL, splits=("train",), universities=("iiith",)),
    "benchmark_view": Flags(parts=ALL, benchmarks=("egopose", "keystep"), views=("exo",)),
    "uid_benchmark_unknown": Flags(parts=ALL, uids=(TAKE,), benchmarks=("bogus",)),
    "every_flag": Flags(
        parts=ALL,
        uids=(TAKE, CAPTURE, "keystep", ""),
        benchmarks=("keystep", "egopose"),
        splits=("train", "val"),
        views=("ego",),
        universities=("cmu",),
    ),
    # with other parts
    "default_ego": Flags(parts=("default",), views=("ego",)),
    "default_and_vrs_cmu": Flags(parts=("default", "take_vrs"), universities=("cmu",)),
    "takes_captures_train": Flags(parts=("takes", "captures"), splits=("train",)),
    "annotations_egopose": Flags(parts=("annotations",), benchmarks=("egopose",)),
    "captures_keystep": Flags(parts=("captures",), benchmarks=("keystep",)),
    "metadata_every_flag": Flags(
        parts=("metadata",),
        uids=("takes",),
        benchmarks=("keystep",),
        splits=("val",),
        views=("exo",),
        universities=("upenn",),
    ),
    "features": Flags(parts=("features/omnivore_video", "features/maws_clip_2b"), views=("ego",)),
    "downscaled_cmu": Flags(parts=("downscaled_takes/448",), universities=("cmu",)),
}


def _urls(rows: list[EgoExoRow]) -> list[tuple[str, str]]:
    return sorted((f"s3://{r.bucket}/{r.key}", r.relative_path) for r in rows)


def _valid_benchmarks_printed(printed: str) -> set[str]:
    if "\nParts are not associated to benchmarks\n" in printed:
        return set()
    block = printed.split("Valid benchmark names include: \n\n", 1)[1]
    return set(block.split("\n\n", 1)[0].splitlines())


@pytest.mark.parametrize("name", list(CASES))
def test_the_same_files_as_the_originals_main(name: str, tmp_path: Path) -> None:
    flags = CASES[name]
    theirs = original_plan(MANIFESTS, flags, sizes=SIZES, out_dir=tmp_path / "out")
    assert theirs.exit_code is None, theirs.printed
    parts = ours(MANIFESTS, flags)
    assert {p.part for p in parts} == theirs.parts_read
    rows = [r for p in parts for r in p.rows]
    assert all(not p.malformed for p in parts)
    # The original drops files whose HEAD says 0 bytes (with a warning); we keep them.
    assert _urls(rows) == sorted(
        [(src, rel) for src, rel, _ in theirs.fetch] + list(theirs.zero_size)
    )
    sizes = {(src, rel): size for src, rel, size in theirs.fetch}
    for row in rows:
        if row.size_bytes is not None:
            assert sizes[(f"s3://{row.bucket}/{row.key}", row.relative_path)] == row.size_bytes
    # "Filtered N -> M files" counts every path of the parts read against those selected.
    total = sum(p.paths for p in parts)
    if total != len(rows):
        assert f"Filtered {total} -> {len(rows)} files" in theirs.printed
    else:
        assert "Filtered" not in theirs.printed
    unknown, valid = unknown_benchmarks(flags.selection().benchmarks, parts)
    if unknown:
        assert f"WARN: Provided invalid benchmarks: {set(unknown)}" in theirs.printed
        assert _valid_benchmarks_printed(theirs.printed) == valid
    else:
        assert "invalid benchmarks" not in theirs.printed


def test_the_cases_select_something_and_leave_something_out() -> None:
    # A matrix of cases that all select everything (or nothing) would prove little.
    counts = Counter(
        (lambda n: "none" if n == 0 else "all" if n == 204 else "some")(
            sum(len(p.rows) for p in ours(MANIFESTS, flags))
        )
        for flags in CASES.values()
    )
    assert counts["some"] >= 30 and counts["none"] >= 2 and counts["all"] >= 2


def test_an_unknown_benchmark_warns_with_the_valid_names() -> None:
    parts = ours(MANIFESTS, Flags(parts=("take_audio", "captures"), benchmarks=("bogus",)))
    unknown, valid = unknown_benchmarks(frozenset({"bogus", "keystep"}), parts)
    assert unknown == {"bogus"}
    # "translation" is named only by an entry without paths; the original counts it too.
    assert "translation" in valid and "keystep" in valid
    assert unknown_benchmarks_warning(unknown, valid) == (
        "--benchmarks 'bogus': no entry of the selected parts names it; valid benchmarks for "
        f"these parts: {', '.join(sorted(valid))}"
    )
    metadata = ours(MANIFESTS, Flags(parts=("metadata",)))
    unknown, valid = unknown_benchmarks(frozenset({"keystep"}), metadata)
    assert unknown == {"keystep"} and valid == frozenset()
    assert unknown_benchmarks_warning(unknown, valid) == (
        "--benchmarks 'keystep': no entry of the selected parts names it; the parts selected "
        "are not associated with benchmarks"
    )
    assert unknown_benchmarks_warning(frozenset(), valid) is None
    assert unknown_benchmarks(None, metadata)[0] == frozenset()


def test_requested_uids_found_in_a_part_are_reported_whatever_the_other_filters() -> None:
    flags = Flags(parts=("takes", "captures"), uids=(TAKE, CAPTURE, "nope"), views=("none",))
    found = {p.part: p.uids_found for p in ours(MANIFESTS, flags)}
    assert found == {"takes": {TAKE}, "captures": {CAPTURE}}
    assert all(p.uids_found == frozenset() for p in ours(MANIFESTS, Flags(parts=ALL)))


def test_malformed_paths_are_kept_whatever_the_filters() -> None:
    good = {"source_path": "s3://ego4d-cmu/a", "relative_path": "a", "views": ["ego"]}
    text = json.dumps(
        [
            {"uid": "x", "paths": [good, {**good, "relative_path": "../a"}]},
            {"uid": "y", "paths": "nope"},
            {"uid": "z", "paths": [], "benchmarks": ["b"]},
        ]
    )
    chosen = select_part(
        "takes",
        parse_entries(io.StringIO(text), source="m"),
        EgoExoSelection(uids=frozenset({"z"})),
    )
    assert chosen.rows == ()
    assert [(m.entry_no, m.path_no) for m in chosen.malformed] == [(1, 2), (2, 0)]
    assert (chosen.entries, chosen.paths) == (3, 2)
    assert chosen.benchmarks_seen == {"b"}


# ---------------------------------------------------------------------------------------------
# Random manifests against _manifest_ok and _path_ok

VOCAB = ("a", "b", "c", "")
ABSENT = object()


def _labels() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.just(ABSENT), st.none(), st.lists(st.sampled_from(VOCAB), max_size=3, unique=True)
    )


def _fields(draw: Any, names: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for name in names:
        value = draw(_labels())
        if value is not ABSENT:
            out[name] = value
    return out


@st.composite
def manifests(draw: Any) -> str:
    entries = []
    for n in range(draw(st.integers(0, 6))):
        paths = [
            {
                "source_path": f"s3://ego4d-cmu/k/{n}/{i}",
                "relative_path": f"takes/{n}/{i}",
                **_fields(draw, ("views", "universities")),
            }
            for i in range(draw(st.integers(0, 3)))
        ]
        uid = draw(st.sampled_from(VOCAB))
        entries.append({"uid": uid, "paths": paths, **_fields(draw, ("splits", "benchmarks"))})
    return json.dumps(entries)


def _flag() -> st.SearchStrategy[tuple[str, ...] | None]:
    # nargs="+": a flag, when given, has at least one value; "" can be one.
    return st.none() | st.lists(st.sampled_from((*VOCAB, "zz")), min_size=1, max_size=3).map(tuple)


@settings(max_examples=examples(300), deadline=None)
@given(manifests(), _flag(), _flag(), _flag(), _flag(), _flag())
def test_random_manifests_and_flags_select_as_manifest_ok_and_path_ok(
    text: str,
    uids: tuple[str, ...] | None,
    benchmarks: tuple[str, ...] | None,
    splits: tuple[str, ...] | None,
    views: tuple[str, ...] | None,
    universities: tuple[str, ...] | None,
) -> None:
    flags = Flags(
        uids=uids, benchmarks=benchmarks, splits=splits, views=views, universities=universities
    )
    chosen = select_part("p", parse_entries(io.StringIO(text), source="m"), flags.selection())
    assert chosen.malformed == ()
    mine = [(f"s3://{r.bucket}/{r.key}", r.relative_path) for r in chosen.rows]
    assert mine == original_filter(text, flags)


def test_the_original_selection_order_is_manifest_order() -> None:
    flags = Flags(views=("exo",))
    text = MANIFESTS["takes"].decode()
    chosen = select_part("takes", parse_entries(io.StringIO(text), source="m"), flags.selection())
    assert [(f"s3://{r.bucket}/{r.key}", r.relative_path) for r in chosen.rows] == (
        original_filter(text, flags)
    )
    assert len(chosen.rows) > 0
