"""The committer on its own, no server: a range is journaled only once its bytes are synced,
and a finished file appears at its final path only when its part is still the inode that was
written, renamed before the journal calls it complete.

The seams are subclasses (a part file and a journal that log what happens to them), never
patches of the committer.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ego4d_dl.engine.committer import Committer
from ego4d_dl.engine.state import Transfer
from ego4d_dl.errors import DiskFullError
from ego4d_dl.files import PartChangedError, PartFile
from ego4d_dl.journal import Journal
from ego4d_dl.journal_setup import journal_path
from ego4d_dl.ondisk import ObjectVersion
from ego4d_dl.planned import Action, PlannedFile

__all__: list[str] = []

DATA = bytes(range(256)) * 64  # 16 KiB


class LoggedPart(PartFile):
    """A part file that logs its syncs, and can be told its data cannot be made durable."""

    def __init__(self, dest: Path, size_bytes: int, log: list[str], *, sync_error: bool = False):
        super().__init__(dest, size_bytes, fresh=True)
        self.log = log
        self.sync_error = sync_error

    def sync(self) -> bool:
        if self.sync_error:
            raise OSError(errno.EIO, "the disk lost it")
        synced = super().sync()
        self.log.append(f"sync {self.dest.name} {synced}")
        return synced


class LoggedJournal(Journal):
    """A journal that logs range rows and commits, and can fail its commit."""

    def __init__(self, path: Path, log: list[str]) -> None:
        super().__init__(path)
        self.log = log
        self.fail_commit = False

    def add_range(self, object_id: int, start: int, stop: int, md5: bytes | None) -> None:
        self.log.append(f"range {start}-{stop}")
        super().add_range(object_id, start, stop, md5)

    def commit(self) -> None:
        if self.fail_commit:
            full = sqlite3.OperationalError("database or disk is full")
            full.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise full
        self.log.append("commit")
        super().commit()


@pytest.fixture
def log() -> list[str]:
    return []


@pytest.fixture
def journal(tmp_path: Path, log: list[str]) -> Iterator[LoggedJournal]:
    with LoggedJournal(journal_path(tmp_path), log) as opened:
        yield opened


def committed_ranges(journal: Journal) -> list[tuple[int, int]]:
    """The ranges another connection sees: only what was committed."""
    db = sqlite3.connect(f"file:{journal.path}?mode=ro", uri=True)
    try:
        return [(a, b) for a, b in db.execute("SELECT start, stop FROM ranges ORDER BY start")]
    finally:
        db.close()


def committed_complete(journal: Journal) -> list[str]:
    db = sqlite3.connect(f"file:{journal.path}?mode=ro", uri=True)
    try:
        return [d for (d,) in db.execute("SELECT dest FROM objects WHERE state = 'complete'")]
    finally:
        db.close()


def transfer(
    journal: Journal, root: Path, name: str, log: list[str], *, sync_error: bool = False
) -> Transfer:
    """A file of ``len(DATA)`` bytes begun in the journal, its part open and written."""
    dest = root / "v2" / "ds" / name
    version = ObjectVersion(
        bucket="b", key=f"k/{name}", etag=hashlib.md5(DATA).hexdigest(), size_bytes=len(DATA)
    )
    planned = PlannedFile(dataset="ds", uid=name, version=version, dest=dest, action=Action.FETCH)
    object_id = journal.begin(
        dest=str(dest.relative_to(root)),
        version=version,
        layout=None,
        layout_exact=False,
        keep_ranges=False,
    )
    journal.commit()
    part = LoggedPart(dest, len(DATA), log, sync_error=sync_error)
    part.write(0, DATA)
    return Transfer(
        planned=planned,
        etag=version.etag,
        size_bytes=len(DATA),
        object_id=object_id,
        part=part,
    )


def committer(journal: Journal, root: Path, completed: list[str] | None = None) -> Committer:
    def on_complete(obj: Transfer, level: str) -> None:
        if completed is not None:
            completed.append(obj.planned.dest.name)

    return Committer(journal, root, interval_s=60, on_complete=on_complete)


def test_ranges_are_journaled_after_their_bytes_are_synced(
    journal: LoggedJournal, tmp_path: Path, log: list[str]
) -> None:
    obj = transfer(journal, tmp_path, "a.bin", log)
    log.clear()

    async def main() -> None:
        commits = committer(journal, tmp_path)
        commits.add_range(obj, 0, 4096, None)
        commits.add_range(obj, 4096, 8192, None)
        assert committed_ranges(journal) == []  # buffered, not written
        await commits.flush()

    asyncio.run(main())
    assert log == ["sync a.bin True", "range 0-4096", "range 4096-8192", "commit"]
    assert committed_ranges(journal) == [(0, 4096), (4096, 8192)]
    assert obj.part is not None
    obj.part.close()


def test_a_finished_file_with_ranges_in_the_batch_is_synced_once(
    journal: LoggedJournal, tmp_path: Path, log: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its ranges and its rename need the same sync: one, before the rename and the commit
    (it was synced once for its ranges and again before its rename)."""
    obj = transfer(journal, tmp_path, "a.bin", log)
    assert obj.part is not None
    ours = (obj.part.ino, obj.part.dev)
    log.clear()
    syncs: list[str] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def counted(fd: int, real: Callable[[int], None] = real, name: str = name) -> None:
            st = os.fstat(fd)
            if (st.st_ino, st.st_dev) == ours:
                syncs.append(name)
            real(fd)

        monkeypatch.setattr(os, name, counted)

    async def main() -> None:
        commits = committer(journal, tmp_path)
        commits.add_range(obj, 0, len(DATA), None)
        await commits.make_room()
        finished = asyncio.ensure_future(commits.finish(obj, "etag"))
        await asyncio.sleep(0)
        await commits.flush()
        await finished

    asyncio.run(main())
    assert log == ["sync a.bin True", f"range 0-{len(DATA)}", "commit"]
    assert syncs == ["fdatasync"]
    assert obj.planned.dest.read_bytes() == DATA
    assert committed_complete(journal) == ["v2/ds/a.bin"]


def test_ranges_whose_bytes_cannot_be_synced_are_not_journaled(
    journal: LoggedJournal, tmp_path: Path, log: list[str]
) -> None:
    """A transfer that failed closed its part; the part's name was then taken by another
    file: its bytes can no longer be made durable, so its ranges are dropped. A discarded
    part's ranges are dropped too."""
    gone = transfer(journal, tmp_path, "gone.bin", log)
    dropped = transfer(journal, tmp_path, "dropped.bin", log)
    assert gone.part is not None and dropped.part is not None
    gone.part.close()
    other = tmp_path / "other"
    other.write_bytes(DATA)  # same bytes, another inode (made while ours still exists)
    other.replace(gone.part.path)

    async def main() -> None:
        commits = committer(journal, tmp_path)
        commits.add_range(gone, 0, len(DATA), None)
        commits.add_range(dropped, 0, len(DATA), None)
        assert dropped.part is not None
        dropped.part.discard()
        await commits.flush()

    asyncio.run(main())
    assert committed_ranges(journal) == []
    assert "sync gone.bin False" in log


def test_a_failed_sync_commits_nothing_and_fails_the_finished_files(
    journal: LoggedJournal, tmp_path: Path, log: list[str]
) -> None:
    obj = transfer(journal, tmp_path, "a.bin", log, sync_error=True)
    other = transfer(journal, tmp_path, "b.bin", log)
    completed: list[str] = []

    async def main() -> None:
        commits = committer(journal, tmp_path, completed)
        commits.add_range(obj, 0, 4096, None)
        await commits.make_room()
        finished = asyncio.ensure_future(commits.finish(other, "etag"))
        await asyncio.sleep(0)
        await commits.flush()
        with pytest.raises(OSError, match="the disk lost it"):
            await finished

    asyncio.run(main())
    assert committed_ranges(journal) == [] and committed_complete(journal) == []
    assert completed == []
    assert not other.planned.dest.exists()  # nothing renamed in a batch that failed its sync


def test_a_finished_file_is_renamed_then_journaled_complete(
    journal: LoggedJournal, tmp_path: Path, log: list[str]
) -> None:
    obj = transfer(journal, tmp_path, "a.bin", log)
    completed: list[str] = []
    part = obj.part
    assert part is not None
    dest = obj.planned.dest

    async def main() -> int:
        commits = committer(journal, tmp_path, completed)
        await commits.make_room()
        finished = asyncio.ensure_future(commits.finish(obj, "etag"))
        await asyncio.sleep(0)
        assert not dest.exists() and completed == []  # only at the next flush
        await commits.flush()
        return await finished

    mtime = asyncio.run(main())
    assert dest.read_bytes() == DATA and not part.path.exists()
    assert mtime == dest.stat().st_mtime_ns
    assert committed_complete(journal) == ["v2/ds/a.bin"]
    assert completed == ["a.bin"]  # told after the commit
    assert part.fd == -1  # the committer closed it once journaled


def test_a_part_given_another_name_while_written_is_not_renamed(
    journal: LoggedJournal, tmp_path: Path, log: list[str]
) -> None:
    """Another name for the part (a hard link made while it was written) could change its
    bytes after they were verified: the file fails instead of appearing at its final path."""
    obj = transfer(journal, tmp_path, "a.bin", log)
    fine = transfer(journal, tmp_path, "b.bin", log)
    assert obj.part is not None
    os.link(obj.part.path, tmp_path / "elsewhere")
    completed: list[str] = []

    async def main() -> None:
        commits = committer(journal, tmp_path, completed)
        await commits.make_room()
        bad = asyncio.ensure_future(commits.finish(obj, "etag"))
        await commits.make_room()
        good = asyncio.ensure_future(commits.finish(fine, "etag"))
        await asyncio.sleep(0)
        await commits.flush()
        with pytest.raises(PartChangedError):
            await bad
        await good

    asyncio.run(main())
    assert not obj.planned.dest.exists()
    assert fine.planned.dest.read_bytes() == DATA
    assert committed_complete(journal) == ["v2/ds/b.bin"] and completed == ["b.bin"]


def test_a_link_at_the_final_path_is_replaced_not_followed(
    journal: LoggedJournal, tmp_path: Path, log: list[str]
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    obj = transfer(journal, tmp_path, "a.bin", log)
    obj.planned.dest.symlink_to(outside)

    async def main() -> None:
        commits = committer(journal, tmp_path)
        await commits.make_room()
        finished = asyncio.ensure_future(commits.finish(obj, "etag", last=True))
        await asyncio.sleep(0)
        await commits.flush()
        await finished

    asyncio.run(main())
    assert not obj.planned.dest.is_symlink() and obj.planned.dest.read_bytes() == DATA
    assert outside.read_bytes() == b"not yours"


def test_a_journal_that_cannot_commit_stops_recording(
    journal: LoggedJournal, tmp_path: Path, log: list[str]
) -> None:
    """A full disk under the journal: the batch is rolled back, its files fail with a disk
    error, and fetching on is refused (its progress could not be recorded)."""
    obj = transfer(journal, tmp_path, "a.bin", log)
    more = transfer(journal, tmp_path, "b.bin", log)
    journal.fail_commit = True
    completed: list[str] = []

    async def main() -> None:
        commits = committer(journal, tmp_path, completed)
        commits.add_range(more, 0, 4096, None)
        await commits.make_room()
        finished = asyncio.ensure_future(commits.finish(obj, "etag"))
        await asyncio.sleep(0)
        await commits.flush()
        with pytest.raises(DiskFullError, match="no space left on device writing the journal"):
            await finished
        with pytest.raises(DiskFullError):
            commits.add_range(more, 4096, 8192, None)

    asyncio.run(main())
    journal.close()  # which commits whatever is pending: the failed batch must not be
    assert committed_ranges(journal) == [] and committed_complete(journal) == []
    assert completed == []
    assert more.part is not None
    more.part.close()


def test_finished_files_are_committed_once_half_of_the_room_is_taken(
    journal: LoggedJournal, tmp_path: Path, log: list[str]
) -> None:
    """With room for four finished parts, two wake the committer long before its tick (60 s
    here), so the other two can fill while they are committed. A small file (no journal row
    yet) is recorded under its path relative to the output folder."""
    small = transfer(journal, tmp_path, "small.bin", log)
    small.object_id = 0  # fetched in one request: its first row says it is complete
    big = transfer(journal, tmp_path, "big.bin", log)
    completed: list[str] = []

    async def main() -> None:
        commits = Committer(
            journal,
            tmp_path,
            interval_s=60,
            on_complete=lambda obj, level: completed.append(obj.planned.dest.name),
            max_held=4,
        )
        running = asyncio.create_task(commits.run_forever())
        try:
            async with asyncio.timeout(10):
                for _ in range(2):
                    await commits.make_room()
                await asyncio.gather(commits.finish(small, "md5"), commits.finish(big, "md5"))
        finally:
            running.cancel()
            commits.close()

    asyncio.run(main())
    assert sorted(completed) == ["big.bin", "small.bin"]
    entry = journal.get("v2/ds/small.bin")
    assert entry is not None and entry.complete
    assert (tmp_path / "v2" / "ds" / "small.bin").read_bytes() == DATA
