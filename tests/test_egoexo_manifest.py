"""Reading Ego-Exo4D manifests: the same fields as the original reads, in any chunking, as a
stream in bounded memory; unusable entries and paths are named rows, never a crash."""

from __future__ import annotations

import io
import json
import os
import tracemalloc
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ego4d_dl.egoexo_manifest import (
    RESERVED_TOP,
    EgoExoRow,
    Entry,
    MalformedPath,
    destination,
    parse_entries,
    parse_manifest,
    read_json_list,
    relative_path_problem,
)
from ego4d_dl.egoexo_select import EgoExoSelection, select_part
from ego4d_dl.errors import ManifestError
from ego4d_dl.journal import JOURNAL_DIR
from ego4d_dl.sandbox import egoexo_manifest_json, egoexo_release_spec, egoexo_scale_manifest
from tests.support.egoexo_oracle import original_manifest_loads
from tests.support.examples import examples, fast_loop

SPEC = egoexo_release_spec()
MANIFESTS = {part: egoexo_manifest_json(entries) for part, entries in SPEC.parts}


class Chunked:
    """A text stream that hands out its text in the given piece sizes, whatever is asked."""

    def __init__(self, text: str, sizes: list[int]) -> None:
        self._text, self._sizes, self._at = text, sizes or [1], 0

    def read(self, size: int, /) -> str:
        n = self._sizes[0]
        self._sizes = self._sizes[1:] or self._sizes
        piece = self._text[self._at : self._at + n]
        self._at += len(piece)
        return piece


def _stream(data: bytes) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig")


def _entries(text: str) -> list[Entry | MalformedPath]:
    return list(parse_entries(io.StringIO(text), source="test.json"))


def _original_entries(text: str) -> Any:
    return original_manifest_loads(text)


def _labels(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@pytest.mark.parametrize("part", list(MANIFESTS))
def test_every_field_is_read_as_the_original_reads_it(part: str) -> None:
    text = MANIFESTS[part].decode()
    ours = _entries(text)
    theirs = _original_entries(text)
    assert len(ours) == len(theirs) > 0
    for mine, their in zip(ours, theirs, strict=True):
        assert isinstance(mine, Entry)
        assert not mine.malformed
        assert (mine.uid, mine.benchmarks, mine.splits) == (
            their.uid,
            _labels(their.benchmarks),
            _labels(their.splits),
        )
        assert [
            (
                f"s3://{r.bucket}/{r.key}",
                r.relative_path,
                r.views,
                r.universities,
                r.size_bytes,
                r.checksum,
                r.uid,
                r.benchmarks,
                r.splits,
            )
            for r in mine.rows
        ] == [
            (
                p.source_path,
                p.relative_path,
                _labels(p.views),
                _labels(p.universities),
                p.size,
                p.checksum,
                their.uid,
                _labels(their.benchmarks),
                _labels(their.splits),
            )
            for p in their.paths
        ]


def test_rows_count_from_one_in_manifest_order() -> None:
    rows = list(parse_manifest(_stream(MANIFESTS["takes"]), source="takes"))
    assert all(isinstance(r, EgoExoRow) for r in rows)
    positions = [(r.entry_no, r.path_no) for r in rows if isinstance(r, EgoExoRow)]
    assert positions[:4] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    assert positions == sorted(positions)


def test_absent_null_and_empty_labels_stay_apart() -> None:
    text = json.dumps(
        [
            {"uid": "absent", "paths": []},
            {"uid": "null", "paths": [], "splits": None, "benchmarks": None},
            {"uid": "empty", "paths": [], "splits": [], "benchmarks": []},
        ]
    )
    got = [(e.uid, e.splits, e.benchmarks) for e in _entries(text) if isinstance(e, Entry)]
    assert got == [("absent", None, None), ("null", None, None), ("empty", (), ())]


def test_fields_the_format_does_not_name_are_ignored() -> None:
    # The original refuses the whole manifest ("Unknown field."); a later release adding a
    # field must not stop a download.
    text = json.dumps(
        [
            {
                "uid": "a",
                "paths": [{"source_path": "s3://b-1/k", "relative_path": "r", "md5": "x"}],
                "new_field": 1,
            }
        ]
    )
    with pytest.raises(Exception, match="Unknown field"):
        _original_entries(text)
    (entry,) = _entries(text)
    assert isinstance(entry, Entry) and len(entry.rows) == 1


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False)
            | st.text(max_size=40),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=20,
        ),
        max_size=12,
    ),
    st.lists(st.integers(1, 70), max_size=20),
    st.sampled_from([None, 0, 2]),
)
def test_the_list_is_read_whatever_the_chunking(
    values: list[Any], sizes: list[int], indent: int | None
) -> None:
    text = json.dumps(values, indent=indent)
    assert list(read_json_list(Chunked(text, sizes), source="s")) == values


@settings(max_examples=examples(60), deadline=None)
@given(st.data())
def test_a_cut_document_is_an_error_not_a_shorter_list(data: st.DataObject) -> None:
    text = MANIFESTS["captures"].decode()
    cut = data.draw(st.integers(0, len(text) - 1))
    sizes = data.draw(st.lists(st.integers(1, 300), max_size=10))
    with pytest.raises(ManifestError):
        list(read_json_list(Chunked(text[:cut], sizes), source="s"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the manifest is empty"),
        ("  \n", "the manifest is empty"),
        ('{"uid": "a"}', "expected '[' at character 0"),
        ("[1,]", "expecting value at character 3"),
        ("[1 2]", "expected ',' or ']' at character 3"),
        ("[1", "the list is cut short at character 2"),
        ("[1,", "the list is cut short at character 3"),
        ("[1] x", "text after the list at character 4"),
        ('["abc', "unterminated string starting at character 1"),
        ('[{"a": tru}]', "expecting value at character 7"),
    ],
)
def test_a_broken_document_is_one_manifest_error(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        list(read_json_list(io.StringIO(text), source="s3://x/takes/manifest.json"))
    assert str(info.value).startswith("s3://x/takes/manifest.json: ")
    assert str(info.value).endswith(f"{message})") or message in str(info.value)


def test_not_utf8_is_a_manifest_error() -> None:
    data = b'[{"uid": "\xff"}]'
    with pytest.raises(ManifestError, match="not UTF-8"):
        list(parse_entries(_stream(data), source="m"))


def test_a_byte_order_mark_and_whitespace_are_fine() -> None:
    assert list(read_json_list(io.StringIO("\ufeff \n[ ]\n"), source="s")) == []
    assert list(read_json_list(_stream(b"\xef\xbb\xbf[1]"), source="s")) == [1]


GOOD_PATH = {"source_path": "s3://ego4d-cmu/egoexo/a.mp4", "relative_path": "takes/t/a.mp4"}


def _path(**changes: Any) -> dict[str, Any]:
    return {k: v for k, v in {**GOOD_PATH, **changes}.items() if v is not ...}


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("not an object", "a path is not a JSON object"),
        (_path(source_path=...), "source_path is missing"),
        (_path(source_path=7), "source_path is not a string"),
        (_path(source_path="https://ego4d-cmu/a.mp4"), "is not an s3://bucket/key URL"),
        (_path(source_path="s3://ego4d-cmu/"), "is not an s3://bucket/key URL"),
        (_path(source_path="s3://Bad_Bucket/a"), "is not an s3://bucket/key URL"),
        (_path(source_path="s3://ego4d-cmu/a/../b"), "source_path key has a '.' or '..'"),
        (_path(source_path="s3://ego4d-cmu//a"), "starts with '/'"),
        (_path(source_path="s3://ego4d-cmu/a\x1b[2J"), "holds control characters"),
        (_path(relative_path=...), "relative_path is missing"),
        (_path(relative_path=["a"]), "relative_path is not a string"),
        (_path(relative_path="/etc/passwd"), "absolute relative_path"),
        (_path(relative_path="../escape.json"), "leaves the output directory"),
        (_path(relative_path="takes/../../escape"), "leaves the output directory"),
        (_path(relative_path="takes//a"), "empty or '.' segment"),
        (_path(relative_path="takes/a/"), "empty or '.' segment"),
        (_path(relative_path="./takes/a"), "empty or '.' segment"),
        (_path(relative_path=""), "empty relative_path"),
        (_path(relative_path="takes\\..\\..\\x"), "backslash"),
        (_path(relative_path="takes/a\nb"), "control characters"),
        (_path(relative_path="takes/\u202egpj.exe"), "control characters"),
        (_path(relative_path=".ego4d-dl/journal.sqlite"), "ego4d-dl's own folder"),
        (_path(relative_path=".EGO4D-DL/x"), "ego4d-dl's own folder"),
        (_path(relative_path="a/" + "é" * 128), "longer than 255 bytes"),
        (_path(relative_path="/" + "x" * 10_000), "absolute relative_path: '/xxxxx"),
        (_path(size=-1), "size -1 is not a byte count"),
        (_path(size="12"), "size '12' is not a byte count"),
        (_path(size=1.5), "size 1.5 is not a byte count"),
        (_path(size=True), "size True is not a byte count"),
        (_path(checksum=5), "checksum is not a string"),
        (_path(views="ego"), "views is not a list of strings"),
        (_path(views=["ego", 1]), "views is not a list of strings"),
        (_path(views=[["ego"]]), "views is not a list of strings"),
        (_path(universities=["cmu\x07"]), "universities holds control characters"),
    ],
)
def test_an_unusable_path_is_a_malformed_row_and_its_neighbours_stay(
    path: Any, reason: str
) -> None:
    text = json.dumps(
        [
            {"uid": "t1", "paths": [GOOD_PATH, path, {**GOOD_PATH, "relative_path": "b"}]},
            {"uid": "t2", "paths": [GOOD_PATH]},
        ]
    )
    items = list(parse_manifest(io.StringIO(text), source="m"))
    bad = [i for i in items if isinstance(i, MalformedPath)]
    good = [i for i in items if isinstance(i, EgoExoRow)]
    assert [(r.entry_no, r.path_no) for r in good] == [(1, 1), (1, 3), (2, 1)]
    assert len(bad) == 1
    assert (bad[0].entry_no, bad[0].path_no, bad[0].uid) == (1, 2, "t1")
    assert reason in bad[0].reason
    assert bad[0].where == "entry 1 (uid 't1'), path 2"
    assert "\x1b" not in bad[0].reason and "\n" not in bad[0].reason
    assert len(bad[0].reason) < 200


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (["not", "an", "object"], "an entry is not a JSON object"),
        (None, "an entry is not a JSON object"),
        ({"paths": []}, "uid is missing"),
        ({"uid": None, "paths": []}, "uid is missing"),
        ({"uid": 5, "paths": []}, "uid is not a string"),
        ({"uid": "a\x1b]8;;http://x\x07", "paths": []}, "holds control characters"),
        ({"uid": "a"}, "paths is missing"),
        ({"uid": "a", "paths": {"source_path": "s3://b-1/k"}}, "paths is not a list"),
        ({"uid": "a", "paths": [], "splits": "train"}, "splits is not a list of strings"),
        ({"uid": "a", "paths": [], "benchmarks": [None]}, "benchmarks is not a list"),
    ],
)
def test_an_unusable_entry_is_one_malformed_row(entry: Any, reason: str) -> None:
    text = json.dumps([{"uid": "ok", "paths": [GOOD_PATH]}, entry, {"uid": "", "paths": []}])
    first, bad, last = _entries(text)
    assert isinstance(first, Entry) and len(first.rows) == 1
    assert isinstance(bad, MalformedPath) and (bad.entry_no, bad.path_no) == (2, 0)
    assert reason in bad.reason
    assert bad.where.startswith("entry 2") and ", path" not in bad.where
    # An empty uid is what the original's generator gives splits.json: a valid entry.
    assert isinstance(last, Entry) and last.uid == ""


@pytest.mark.parametrize(
    "path",
    [
        "metadata.json",
        "takes/cmu_bike01_2/frame_aligned_videos/aria01_214-1.mp4",
        "annotations/expert_commentary/t/José_Ramírez/recording_0.json",
        "a/..b/c..",
        "a/.hidden",
        "ego4d-dl/x",
        "a/" + "é" * 127,
        "manifest.ver",
    ],
)
def test_good_relative_paths_land_where_they_say(path: str, tmp_path: Path) -> None:
    assert relative_path_problem(path) is None
    row = EgoExoRow(
        entry_no=1, path_no=1, uid="u", bucket="b", key="k", relative_path=path,
        size_bytes=None, checksum=None, views=None, universities=None, benchmarks=None,
        splits=None,
    )  # fmt: skip
    assert destination(tmp_path, row) == tmp_path / path


@settings(max_examples=examples(500), deadline=None)
@given(st.text(alphabet=st.sampled_from("ab./\\\x00\n é~:"), max_size=24))
def test_whatever_passes_stays_inside_the_output_directory(path: str) -> None:
    if relative_path_problem(path) is not None:
        return
    out = Path("/out")
    row = EgoExoRow(
        entry_no=1, path_no=1, uid="u", bucket="b", key="k", relative_path=path,
        size_bytes=None, checksum=None, views=None, universities=None, benchmarks=None,
        splits=None,
    )  # fmt: skip
    dest = destination(out, row)
    assert os.path.normpath(dest) == str(dest)
    assert dest.is_relative_to(out) and dest != out
    assert PurePosixPath(path).parts == dest.relative_to(out).parts
    assert dest.relative_to(out).parts[0].casefold() != JOURNAL_DIR


def test_the_reserved_folder_is_the_journals() -> None:
    assert RESERVED_TOP == JOURNAL_DIR


def test_repeated_labels_are_shared_not_copied() -> None:
    rows = list(parse_manifest(_stream(MANIFESTS["takes"]), source="t"))
    views = {id(r.views) for r in rows if isinstance(r, EgoExoRow) and r.views == ("exo",)}
    assert len(views) == 1


def _scale_manifest(path: Path, entries: int) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.writelines(egoexo_scale_manifest(entries, 1))


def _peak_bytes(work: Any) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
@pytest.mark.skipif(fast_loop(), reason="a scale test (5 s): the full suite runs it")
def test_a_60000_entry_manifest_streams_in_bounded_memory(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    _scale_manifest(manifest, 60_000)
    counted: list[int] = []

    def stream() -> None:
        with manifest.open(encoding="utf-8") as f:
            counted.append(sum(1 for _ in parse_manifest(f, source="m")))

    peak = _peak_bytes(stream)
    assert counted == [60_000]
    # Measured: about 2 MiB for this 23 MB manifest, whose json.load peaks at 110 MiB
    # (benchmarks/egoexo_plan_scale.py --memory prints both).
    mib = 1 << 20
    assert manifest.stat().st_size > 20 * mib
    assert peak < 4 * mib, f"{peak / mib:.1f} MiB"


def test_memory_does_not_grow_with_the_manifest(tmp_path: Path) -> None:
    def peak(entries: int) -> int:
        manifest = tmp_path / f"m{entries}.json"
        _scale_manifest(manifest, entries)

        def stream() -> None:
            with manifest.open(encoding="utf-8") as f:
                for _ in parse_manifest(f, source="m"):
                    pass

        return _peak_bytes(stream)

    small, large = peak(1_000), peak(8_000)
    assert large < small * 1.5, (small, large)


def test_a_selection_keeps_what_it_selects_only(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    _scale_manifest(manifest, 6_000)

    def select(selection: EgoExoSelection) -> int:
        kept: list[int] = []

        def work() -> None:
            with manifest.open(encoding="utf-8") as f:
                chosen = select_part("takes", parse_entries(f, source="m"), selection)
                kept.append(len(chosen.rows))

        peak = _peak_bytes(work)
        assert kept[0] > 0
        return peak // kept[0]

    per_row_few = select(EgoExoSelection(uids=frozenset({_first_uid(manifest)})))
    per_row_all = select(EgoExoSelection())
    # Each kept row costs its own strings and a small object (under 1 KiB), whatever the
    # manifest; selecting one row costs no more than the stream itself.
    assert per_row_all < 1024, per_row_all
    assert per_row_few < 4 << 20, per_row_few


def _first_uid(manifest: Path) -> str:
    with manifest.open(encoding="utf-8") as f:
        first = next(parse_entries(f, source="m"))
    assert isinstance(first, Entry)
    return first.uid


def test_a_huge_entry_is_read_whole(tmp_path: Path) -> None:
    # One entry of 20,000 paths (about 4 MB): longer than any read, still one entry.
    paths = [{**GOOD_PATH, "relative_path": f"takes/t/{i}.mp4", "size": i} for i in range(20_000)]
    text = json.dumps([{"uid": "big", "paths": paths}, {"uid": "next", "paths": []}])
    big, nxt = list(parse_entries(Chunked(text, [4096]), source="m"))
    assert isinstance(big, Entry) and len(big.rows) == 20_000
    assert big.rows[-1].size_bytes == 19_999
    assert isinstance(nxt, Entry) and nxt.uid == "next"
