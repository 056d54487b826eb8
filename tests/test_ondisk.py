"""The one classifier of on-disk state, and the pieces it stands on (pure; no server).

Each case is written from first principles: what a file at the final path and at its ``.part``
is, what the journal says, and the verdict a careful human would give.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ego4d_dl.errors import PlanError
from ego4d_dl.families.ego4d import select_rows
from ego4d_dl.manifest import Selection, parse_manifest
from ego4d_dl.ondisk import (
    DiskState,
    FileStat,
    JournalEntry,
    Kind,
    ObjectVersion,
    OnDisk,
    Origin,
    classify,
    snapshot,
)
from ego4d_dl.planned import Action, action_for

WANT = ObjectVersion(bucket="b", key="k", etag="e1", size_bytes=100)
OLD = ObjectVersion(bucket="b", key="k", etag="e0", size_bytes=100)


def regular(size: int = 100, *, ino: int = 7, mtime: int = 1000, nlinks: int = 1) -> FileStat:
    return FileStat(
        kind=Kind.REGULAR, size_bytes=size, mtime_ns=mtime, ino=ino, dev=1, nlinks=nlinks
    )


def link(kind: Kind = Kind.SYMLINK) -> FileStat:
    return FileStat(kind=kind, size_bytes=10, mtime_ns=1, ino=99, dev=1, nlinks=1)


def complete(version: ObjectVersion = WANT, **kw: object) -> JournalEntry:
    fields: dict[str, object] = {
        "file_size": 100,
        "file_mtime_ns": 1000,
        "file_ino": 7,
        "verify_level": "md5",
    }
    fields.update(kw)
    return JournalEntry(id=1, dest="v2/d/x", version=version, complete=True, **fields)  # type: ignore[arg-type]


def partial(
    version: ObjectVersion = WANT, done: int = 40, part_ino: int | None = 8
) -> JournalEntry:
    return JournalEntry(
        id=1, dest="v2/d/x", version=version, complete=False, done_bytes=done, part_ino=part_ino
    )


def disk(final: FileStat | None = None, part: FileStat | None = None) -> DiskState:
    return DiskState(final=final, part=part)


@pytest.mark.parametrize(
    ("entry", "state", "verdict"),
    [
        (None, disk(), OnDisk.ABSENT),
        (complete(), disk(regular()), OnDisk.COMPLETE),
        # More names for our own verified inode (cp -al) change nothing.
        (complete(), disk(regular(nlinks=3)), OnDisk.COMPLETE),
        (complete(OLD), disk(regular()), OnDisk.STALE),
        (complete(), disk(), OnDisk.ABSENT),
        # Another inode of the right size (a restore, a copy): checked again, not trusted.
        (complete(), disk(regular(ino=8)), OnDisk.ADOPTABLE),
        (complete(), disk(regular(mtime=2000)), OnDisk.ADOPTABLE),
        (complete(), disk(regular(size=99)), OnDisk.DAMAGED),
        # A schema-1 entry has no inode: size and mtime decide.
        (complete(file_ino=None), disk(regular(ino=123)), OnDisk.COMPLETE),
        (partial(), disk(part=regular(ino=8)), OnDisk.RESUMABLE),
        (partial(part_ino=None), disk(part=regular(ino=8)), OnDisk.RESUMABLE),
        # A .part that is not the one the ranges were written to.
        (partial(), disk(part=regular(ino=9)), OnDisk.ABSENT),
        (partial(OLD), disk(part=regular(ino=8)), OnDisk.ABSENT),
        (partial(done=0), disk(part=regular(ino=8)), OnDisk.ABSENT),
        # Renamed complete, journal commit cut short.
        (partial(), disk(regular()), OnDisk.ADOPTABLE),
        (None, disk(regular()), OnDisk.ADOPTABLE),
        (None, disk(regular(size=5)), OnDisk.STALE),
        (None, disk(link()), OnDisk.FOREIGN),
        (None, disk(regular(nlinks=2)), OnDisk.FOREIGN),
        (complete(), disk(link()), OnDisk.FOREIGN),
        (None, disk(link(Kind.DIRECTORY)), OnDisk.FOREIGN),
        (None, disk(link(Kind.OTHER)), OnDisk.FOREIGN),
        (None, disk(part=link(Kind.DIRECTORY)), OnDisk.FOREIGN),
    ],
)
def test_verdicts(entry: JournalEntry | None, state: DiskState, verdict: OnDisk) -> None:
    assert classify(WANT, entry, state).verdict is verdict


def test_what_each_verdict_makes_a_download_do() -> None:
    assert action_for(classify(WANT, None, disk())) is Action.FETCH
    assert action_for(classify(WANT, complete(), disk(regular()))) is Action.SKIP
    resumed = classify(WANT, partial(), disk(part=regular(ino=8)))
    assert (action_for(resumed), resumed.present_bytes) == (Action.RESUME, 40)
    assert action_for(classify(WANT, None, disk(regular()))) is Action.ADOPT
    assert action_for(classify(WANT, complete(OLD), disk(regular()))) is Action.REFETCH
    # A link is replaced; a directory or device in the way is never removed for us.
    assert action_for(classify(WANT, None, disk(link()))) is Action.REFETCH
    blocked = classify(WANT, None, disk(link(Kind.DIRECTORY)))
    assert blocked.blocked and action_for(blocked) is Action.FAILED
    assert "move it away" in blocked.note


def test_a_link_at_the_part_is_replaced_not_followed() -> None:
    found = classify(WANT, None, disk(part=link()))
    assert found.verdict is OnDisk.ABSENT and found.part_in_the_way
    assert "never written through" in found.note
    # ... and never resumed into, whatever the journal says.
    assert classify(WANT, partial(), disk(part=regular(nlinks=2))).verdict is not OnDisk.RESUMABLE


def test_another_journal_vouches_only_for_the_very_file_it_recorded() -> None:
    theirs = complete(journal="journal-shard-1-of-2.sqlite")
    found = classify(WANT, None, disk(regular()), others=[theirs])
    assert (found.verdict, found.origin, found.voucher) == (
        OnDisk.ADOPTABLE,
        Origin.OTHER_JOURNAL,
        theirs,
    )
    assert "another journal" in found.note
    # Touched since (another inode), or another version: read back instead.
    for other in (complete(file_ino=3), complete(OLD)):
        found = classify(WANT, None, disk(regular()), others=[other])
        assert found.origin is Origin.UNJOURNALED


def test_offline_status_knows_the_object_but_not_its_version() -> None:
    unknown = ObjectVersion(bucket="b", key="k", etag="", size_bytes=None)
    assert classify(unknown, None, disk(regular(size=3))).verdict is OnDisk.ADOPTABLE
    assert classify(unknown, None, disk()).verdict is OnDisk.ABSENT


def test_snapshot_never_follows_the_last_link(tmp_path: Path) -> None:
    target = tmp_path / "outside"
    target.write_bytes(b"x" * 100)
    dest = tmp_path / "d" / "f.bin"
    dest.parent.mkdir()
    dest.symlink_to(target)
    os.link(target, dest.with_name("f.bin.part"))
    state = snapshot(dest)
    assert state.final is not None and state.final.kind is Kind.SYMLINK
    assert state.part is not None and state.part.nlinks == 2
    assert snapshot(tmp_path / "nowhere" / "f") == DiskState(final=None, part=None)
    # A folder on the way may be a link (a dataset folder on another disk, on purpose).
    (tmp_path / "linked").symlink_to(dest.parent)
    assert snapshot(tmp_path / "linked" / "f.bin").final == state.final


def _select(text: str) -> list[str]:
    header, rows = parse_manifest(text.splitlines(keepends=True), source="m")
    return [r.filename for r in select_rows("annotations", header, rows, Selection()).rows]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("A.json", "a.json"),
        ("Readme.JSON", "readme.json"),
        ("caf\u00e9.json", "cafe\u0301.json"),  # NFC and NFD spellings of one name
        ("STRASSE.json", "stra\u00dfe.json"),  # case folding, not just lower()
    ],
)
def test_names_one_file_apart_on_a_folding_filesystem_are_refused_together(
    first: str, second: str
) -> None:
    text = f"file_uid,s3_path\nu1,s3://ego4d-cmu/x/{first}\nu2,s3://ego4d-cmu/y/{second}\n"
    with pytest.raises(PlanError) as caught:
        _select(text)
    message = str(caught.value)
    assert "lines 2 and 3" in message and "case-insensitive" in message
    assert repr(first) in message and repr(second) in message


def test_folding_rules_also_guard_the_tools_own_names() -> None:
    with pytest.raises(PlanError, match="the tool's own"):
        _select("file_uid,s3_path\nu1,s3://ego4d-cmu/x/MANIFEST.CSV\n")
    with pytest.raises(PlanError, match="temporary file"):
        _select("file_uid,s3_path\nu1,s3://ego4d-cmu/x/a.json\nu2,s3://ego4d-cmu/y/A.JSON.part\n")
    # Distinct names stay distinct.
    assert _select("file_uid,s3_path\nu1,s3://ego4d-cmu/x/a.json\nu2,s3://ego4d-cmu/y/b.json\n")
