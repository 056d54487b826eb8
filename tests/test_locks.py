"""Locks between processes: the claim on an output folder, part files, links never followed.

The claims are taken by real separate processes (open-file-description locks are what two
processes see of each other); the matrix is every pair of run kinds that may meet in a folder.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ego4d_dl.files import PartBusyError, PartFile, finalize_batch
from ego4d_dl.locks import DirectoryClaim, RunConflictError, open_plain
from ego4d_dl.shard import Shard

_HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ego4d_dl.locks import DirectoryClaim
    shard = eval(sys.argv[2])
    claim = DirectoryClaim(Path(sys.argv[1]), shard)
    claim.acquire()
    print("held", flush=True)
    sys.stdin.read()
    """
)


class Holder:
    """A process that holds a claim until it is closed."""

    def __init__(self, folder: Path, shard: Shard | None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLD, str(folder), repr(shard)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == "held\n", self.proc.stderr.read() if self.proc.stderr else line

    def close(self) -> None:
        self.proc.communicate(timeout=10)  # closes stdin: the holder ends, its locks go


def _refusal(folder: Path, shard: Shard | None) -> str | None:
    claim = DirectoryClaim(folder, shard)
    try:
        claim.acquire()
    except RunConflictError as exc:
        return str(exc)
    claim.release()
    return None


@pytest.mark.parametrize(
    ("running", "starting", "allowed"),
    [
        (None, None, False),
        (None, (1, 1), False),
        (None, (2, 3), False),
        ((1, 1), None, False),
        ((1, 2), None, False),
        ((1, 2), (2, 2), True),  # the one way to share: same N, another K
        ((1, 2), (1, 2), False),
        ((1, 2), (1, 3), False),
        ((2, 4), (1, 1), False),
        ((3, 8), (7, 8), True),
    ],
)
def test_which_runs_may_share_a_folder(
    tmp_path: Path, running: Shard | None, starting: Shard | None, allowed: bool
) -> None:
    holder = Holder(tmp_path, running)
    try:
        refused = _refusal(tmp_path, starting)
        probe_refused = None
        try:
            DirectoryClaim(tmp_path, starting).probe()
        except RunConflictError as exc:
            probe_refused = str(exc)
    finally:
        holder.close()
    assert (refused is None) is allowed, refused
    assert (probe_refused is None) is allowed, probe_refused
    if running is None and not allowed:
        assert refused is not None and "without --shard" in refused
    if running is not None and starting is not None and running[1] != starting[1]:
        # The message says how to join them, not "split the work" with a clashing N.
        assert refused is not None and f"--shard K/{running[1]}" in refused
    # Once the holder is gone, anything may start.
    assert _refusal(tmp_path, starting) is None


def test_probe_creates_nothing(tmp_path: Path) -> None:
    DirectoryClaim(tmp_path / ".ego4d-dl", None).probe()
    assert not (tmp_path / ".ego4d-dl").exists()


def test_open_plain_replaces_links_and_leaves_their_targets(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    sym = tmp_path / "sym"
    sym.symlink_to(outside)
    hard = tmp_path / "hard"
    os.link(outside, hard)
    for path in (sym, hard):
        fd = open_plain(path, os.O_RDWR | os.O_CREAT)
        try:
            os.write(fd, b"ours")
            assert os.fstat(fd).st_nlink == 1
        finally:
            os.close(fd)
        assert not path.is_symlink() and path.read_bytes() == b"ours"
    assert outside.read_bytes() == b"precious"
    # Without O_CREAT a link is refused, not followed; a directory never opened.
    sym.unlink()
    sym.symlink_to(outside)
    with pytest.raises(OSError) as caught:
        open_plain(sym, os.O_RDWR)
    assert caught.value.errno == errno.ELOOP
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        open_plain(tmp_path / "dir", os.O_RDWR | os.O_CREAT)


def test_a_part_being_written_elsewhere_is_not_touched(tmp_path: Path) -> None:
    dest = tmp_path / "x.bin"
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from ego4d_dl.files import PartFile
        part = PartFile(Path({str(dest)!r}), 8, fresh=True)
        part.write(0, b"theirs!!")
        print("held", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    try:
        with pytest.raises(PartBusyError, match="another process"):
            PartFile(dest, 8, fresh=True)
        # Refused before any truncation: the other process's bytes are intact.
        assert dest.with_name("x.bin.part").read_bytes() == b"theirs!!"
    finally:
        proc.communicate(timeout=10)


def test_a_closed_part_is_synced_by_name_only_while_the_name_is_ours(tmp_path: Path) -> None:
    part = PartFile(tmp_path / "x.bin", 4, fresh=True)
    part.write(0, b"abcd")
    part.close()
    assert part.sync()  # reopened by name, same inode
    part.path.rename(tmp_path / "moved")
    part.path.write_bytes(b"zzzz")
    assert not part.sync()  # another file now: its ranges must not be journaled


def test_finalize_renames_only_an_intact_part(tmp_path: Path) -> None:
    good = PartFile(tmp_path / "good.bin", 4, fresh=True)
    good.write(0, b"good")
    bad = PartFile(tmp_path / "bad.bin", 4, fresh=True)
    bad.write(0, b"ours")
    os.link(bad.path, tmp_path / "elsewhere")  # a second name for our inode
    results = finalize_batch([(good, tmp_path / "good.bin"), (bad, tmp_path / "bad.bin")])
    assert isinstance(results[0], os.stat_result)
    assert (tmp_path / "good.bin").read_bytes() == b"good"
    assert isinstance(results[1], OSError) and "another name" in str(results[1])
    assert not (tmp_path / "bad.bin").exists()
    for p in (good, bad):
        p.close()


def test_every_filesystem_of_a_batch_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dataset folder linked onto another disk is synced too, not only the output's."""
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem (/dev/shm)")
    import ego4d_dl.files as files

    synced: list[int] = []
    real = files._syncfs

    def recording(fd: int) -> bool:
        synced.append(os.fstat(fd).st_dev)
        return real(fd)

    monkeypatch.setattr(files, "_syncfs", recording)
    elsewhere = other / f"ego4d-dl-test-{os.getpid()}"
    elsewhere.mkdir()
    try:
        (tmp_path / "linked").symlink_to(elsewhere)
        items = []
        for folder in (tmp_path / "here", tmp_path / "linked"):
            for i in range(8):
                part = PartFile(folder / f"{i}.bin", 1, fresh=True)
                part.write(0, b"x")
                items.append((part, folder / f"{i}.bin"))
        results = finalize_batch(items)
        assert all(isinstance(r, os.stat_result) for r in results)
        assert set(synced) == {tmp_path.stat().st_dev, elsewhere.stat().st_dev}
        for part, _ in items:
            part.close()
    finally:
        for p in elsewhere.iterdir():
            p.unlink()
        elsewhere.rmdir()


def test_holds_exactly_reads_a_plain_file_never_a_link(tmp_path: Path) -> None:
    from ego4d_dl.locks import holds_exactly

    plain = tmp_path / "plain"
    plain.write_bytes(b"abc")
    assert holds_exactly(plain, b"abc")
    assert not holds_exactly(plain, b"abd")
    assert not holds_exactly(plain, b"abcd")
    assert not holds_exactly(tmp_path / "absent", b"")
    link = tmp_path / "link"
    link.symlink_to(plain)
    assert not holds_exactly(link, b"abc")
    hard = tmp_path / "hard"
    os.link(plain, hard)
    assert not holds_exactly(hard, b"abc")


def test_a_rerun_leaves_unchanged_manifests_alone_and_replaces_links(tmp_path: Path) -> None:
    from ego4d_dl.downloading import _write_atomic
    from ego4d_dl.versionfile import VersionEntry, format_entries, write_version_file

    entries = [VersionEntry("u1", "", "u1.mp4")]
    ver = write_version_file(tmp_path, entries)
    csv_path = tmp_path / "manifest.csv"
    _write_atomic(csv_path, b"a,b\n")
    inodes = (ver.stat().st_ino, csv_path.stat().st_ino)
    assert write_version_file(tmp_path, entries) == ver
    _write_atomic(csv_path, b"a,b\n")
    assert (ver.stat().st_ino, csv_path.stat().st_ino) == inodes  # not rewritten
    # Changed content is written; a link with the same bytes is replaced, its target kept.
    _write_atomic(csv_path, b"a,c\n")
    assert csv_path.read_bytes() == b"a,c\n"
    target = tmp_path / "elsewhere"
    target.write_bytes(format_entries(entries))
    ver.unlink()
    ver.symlink_to(target)
    write_version_file(tmp_path, entries)
    assert not ver.is_symlink() and ver.read_bytes() == target.read_bytes()


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm", "-journal"])
def test_a_link_at_any_journal_file_is_replaced_never_followed(tmp_path: Path, suffix: str) -> None:
    from ego4d_dl.journal import Journal

    folder = tmp_path / ".ego4d-dl"
    folder.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"not ours")
    path = folder / "journal.sqlite"
    (folder / f"journal.sqlite{suffix}").symlink_to(outside)
    with Journal(path) as journal:
        assert any("was a symbolic link" in note for note in journal.notes)
    assert outside.read_bytes() == b"not ours"
    # Only SQLite's own names are there: nothing else is created beside the journal.
    names = {p.name for p in folder.iterdir()} - {"runs.lock"}
    assert names <= {"journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"}
    assert "journal.sqlite" in names
