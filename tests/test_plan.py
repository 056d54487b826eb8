"""Row selection and destination safety (pure), and the journal's resume bookkeeping."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ego4d_dl.errors import ConfigError, PlanError
from ego4d_dl.families.ego4d import DatasetSelection, select_rows
from ego4d_dl.journal import Journal, JournalView, journal_path
from ego4d_dl.manifest import Selection, parse_manifest
from ego4d_dl.ondisk import ObjectVersion
from ego4d_dl.planned import Action, PlannedFile, action_for
from ego4d_dl.planning import look_on_disk


def select(text: str, dataset: str = "full_scale", **kw: frozenset[str]) -> DatasetSelection:
    header, rows = parse_manifest(io.StringIO(text), source="t")
    return select_rows(dataset, header, rows, Selection(**kw))


VIDEOS = (
    "video_uid,canonical_s3_location,benchmarks\n"
    "a,s3://ego4d-cmu/v/a.mp4,[FHO|EM]\n"
    "b,s3://ego4d-unict-milan/v/b.mp4,[AV]\n"
    "c,s3://ego4d-cmu/v/c.mp4,\n"
)


def test_filters() -> None:
    assert [r.uid for r in select(VIDEOS).rows] == ["a", "b", "c"]
    assert [r.uid for r in select(VIDEOS, benchmarks=frozenset({"em"})).rows] == ["a"]
    assert [r.uid for r in select(VIDEOS, universities=frozenset({"unict"})).rows] == ["b"]
    chosen = select(VIDEOS, uids=frozenset({"a", "zzz"}))
    assert [r.uid for r in chosen.rows] == ["a"]
    assert chosen.unknown_uids == ("zzz",)


def test_uid_filter_applies_to_video_datasets_only() -> None:
    text = "file_uid,s3_path\nf,s3://ego4d-cmu/a/f.json\n"
    chosen = select(text, dataset="annotations", uids=frozenset({"x"}))
    assert [r.uid for r in chosen.rows] == ["f"]
    assert any("video datasets only" in w for w in chosen.warnings)


def test_benchmark_filter_ignored_without_column() -> None:
    text = "file_uid,s3_path\nf,s3://ego4d-cmu/a/f.json\n"
    chosen = select(text, dataset="annotations", benchmarks=frozenset({"fho"}))
    assert [r.uid for r in chosen.rows] == ["f"]
    assert any("no benchmarks column" in w for w in chosen.warnings)


def test_identical_duplicate_rows_collapse() -> None:
    chosen = select(VIDEOS + "a,s3://ego4d-cmu/v/a.mp4,[FHO]\n")
    assert [r.uid for r in chosen.rows] == ["a", "b", "c"]
    assert any("repeats line 2" in w for w in chosen.warnings)


def test_two_sources_for_one_destination_is_an_error() -> None:
    with pytest.raises(PlanError, match=r"lines 2 and 5 would both write 'a\.mp4'"):
        select(VIDEOS + "a,s3://ego4d-cmu/other/a.mp4,\n")


def test_reserved_and_part_names_are_refused() -> None:
    with pytest.raises(PlanError, match=r"manifest\.csv"):
        select("file_uid,s3_path\nm,s3://ego4d-cmu/x/manifest.csv\n", dataset="annotations")
    with pytest.raises(PlanError, match="temporary file"):
        select(
            "file_uid,s3_path\na,s3://ego4d-cmu/x/a.json\nb,s3://ego4d-cmu/y/a.json.part\n",
            dataset="annotations",
        )


def test_journal_index_decisions(tmp_path: Path) -> None:
    out = tmp_path
    dest = out / "v2" / "clips" / "u.mp4"
    with Journal(journal_path(out)) as j:
        view = JournalView(out, j, j.path)

        def classify(etag: str = "e1") -> PlannedFile:
            version = ObjectVersion(bucket="b", key="k", etag=etag, size_bytes=10)
            found = look_on_disk(version, dest, view)
            return PlannedFile(
                dataset="clips",
                uid="u",
                version=version,
                dest=dest,
                action=action_for(found),
                present_bytes=found.present_bytes,
                note=found.note,
            )

        assert classify().action is Action.FETCH
        oid = j.begin(
            dest="v2/clips/u.mp4",
            version=ObjectVersion(bucket="b", key="k", etag="e1", size_bytes=10),
            layout=(10,),
            layout_exact=True,
            keep_ranges=False,
        )
        j.add_range(oid, 0, 4, None)
        j.commit()
        dest.parent.mkdir(parents=True)
        (dest.parent / "u.mp4.part").write_bytes(b"x" * 10)
        state = classify()
        assert (state.action, state.present_bytes) == (Action.RESUME, 4)
        assert classify("e2").action is Action.FETCH
        dest.write_bytes(b"y" * 10)
        j.mark_complete(oid, verify_level="md5", st=dest.stat())
        j.commit()
        assert classify().action is Action.SKIP
        assert classify("e2").action is Action.REFETCH
        dest.write_bytes(b"y" * 3)
        assert classify().note == "modified since it was downloaded"
        dest.unlink()
        assert classify().note == "deleted since it was downloaded"


def test_journal_is_exclusive(tmp_path: Path) -> None:
    with Journal(journal_path(tmp_path)), pytest.raises(ConfigError, match="is writing into"):
        Journal(journal_path(tmp_path)).open()
    with Journal(journal_path(tmp_path)):
        pass  # released when the first closed
