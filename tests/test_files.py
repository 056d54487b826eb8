"""Part files: vectored writes land where they should and hash what they wrote; a link at the
part path is never followed, a resume goes on from the bytes already there, and a file that
is not ours (a directory, a FIFO, another name's, another writer's) is refused."""

from __future__ import annotations

import errno
import hashlib
import os
import stat

import pytest

from ego4d_dl.files import PartBusyError, PartFile, part_path


@pytest.mark.parametrize("count", [1, 3, 600])
def test_write_and_hash_writes_chunks_in_order(tmp_path, count):
    chunks = [bytes([i % 251]) * (1 + i % 7) for i in range(count)]
    data = b"".join(chunks)
    part = PartFile(tmp_path / "x.bin", len(data) + 5, fresh=True)
    md5 = hashlib.md5()
    try:
        part.write_and_hash(5, chunks, md5)
    finally:
        part.close()
    on_disk = part.path.read_bytes()
    assert on_disk[5:] == data
    assert on_disk[:5] == b"\0" * 5
    assert md5.digest() == hashlib.md5(data).digest()


# --- links, resuming, files that are not ours ------------------------------------------------


DATA = bytes(range(256)) * 16  # 4 KiB


def test_a_link_at_the_part_path_is_replaced_never_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"keep me")
    dest = tmp_path / "x.bin"
    part_path(dest).symlink_to(outside)
    part = PartFile(dest, len(DATA), fresh=True)
    try:
        part.write(0, DATA)
    finally:
        part.close()
    assert outside.read_bytes() == b"keep me"
    assert not part.path.is_symlink() and part.path.read_bytes() == DATA


def test_resuming_through_a_link_is_refused(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(DATA[:100])
    dest = tmp_path / "x.bin"
    part_path(dest).symlink_to(outside)
    with pytest.raises(OSError) as info:
        PartFile(dest, len(DATA), fresh=False)
    assert info.value.errno == errno.ELOOP
    assert outside.read_bytes() == DATA[:100] and part_path(dest).is_symlink()


def test_a_part_closed_then_swapped_for_a_link_is_not_synced_through_it(tmp_path):
    """``sync`` of a closed part reopens it by name: a link there now is not followed, even to
    the very inode that was written, and its data is reported not durable."""
    dest = tmp_path / "x.bin"
    part = PartFile(dest, len(DATA), fresh=True)
    part.write(0, DATA)
    part.close()
    moved = tmp_path / "moved.bin"
    part.path.rename(moved)
    part.path.symlink_to(moved)
    assert part.sync() is False
    part.path.unlink()
    assert part.sync() is False  # and the name gone: nothing to sync either


def test_resuming_keeps_the_bytes_written_and_goes_on_at_the_offset(tmp_path):
    dest = tmp_path / "x.bin"
    half = len(DATA) // 2
    first = PartFile(dest, len(DATA), fresh=True)
    first.write(0, DATA[:half])
    ino = first.ino
    first.close()
    again = PartFile(dest, len(DATA), fresh=False)
    try:
        assert again.ino == ino  # the same file, not a new one
        assert again.size_on_disk() == len(DATA)
        assert again.hash(0, half) == hashlib.md5(DATA[:half]).digest()
        again.write(half, DATA[half:])
    finally:
        again.close()
    assert part_path(dest).read_bytes() == DATA


def test_a_fresh_start_empties_the_part_and_a_longer_one_is_cut_to_size(tmp_path):
    dest = tmp_path / "x.bin"
    part_path(dest).write_bytes(b"\xff" * (len(DATA) + 100))
    resumed = PartFile(dest, len(DATA), fresh=False)
    resumed.close()
    assert part_path(dest).read_bytes() == b"\xff" * len(DATA)
    fresh = PartFile(dest, len(DATA), fresh=True)
    fresh.close()
    assert part_path(dest).read_bytes() == b"\0" * len(DATA)


def test_a_directory_or_a_fifo_at_the_part_path_is_refused(tmp_path):
    folder = tmp_path / "dir.bin"
    part_path(folder).mkdir()
    fifo = tmp_path / "fifo.bin"
    os.mkfifo(part_path(fifo))
    for fresh in (True, False):
        with pytest.raises(OSError):
            PartFile(folder, len(DATA), fresh=fresh)
        with pytest.raises(OSError, match="is not a regular file"):
            PartFile(fifo, len(DATA), fresh=fresh)
    assert part_path(folder).is_dir() and stat.S_ISFIFO(part_path(fifo).lstat().st_mode)


def test_a_part_with_another_name_is_not_resumed_nor_written_through(tmp_path):
    """A hard link to the part (a file of someone else's, or a copy made with ``ln``): a
    resume refuses it; a fresh start takes the name for a file of its own and leaves the
    other name's bytes as they were."""
    dest = tmp_path / "x.bin"
    theirs = tmp_path / "theirs.bin"
    theirs.write_bytes(DATA)
    os.link(theirs, part_path(dest))
    with pytest.raises(OSError) as info:
        PartFile(dest, len(DATA), fresh=False)
    assert info.value.errno == errno.EMLINK
    part = PartFile(dest, len(DATA), fresh=True)
    try:
        part.write(0, b"\0" * len(DATA))
        assert part.intact()
    finally:
        part.close()
    assert theirs.read_bytes() == DATA and theirs.stat().st_nlink == 1


def test_a_part_another_writer_holds_is_busy(tmp_path):
    dest = tmp_path / "x.bin"
    holder = PartFile(dest, len(DATA), fresh=True)
    try:
        for fresh in (False, True):
            with pytest.raises(PartBusyError):
                PartFile(dest, len(DATA), fresh=fresh)
        holder.write(0, DATA)
    finally:
        holder.close()
    assert part_path(dest).read_bytes() == DATA  # the refused opener truncated nothing
    PartFile(dest, len(DATA), fresh=False).close()  # free once the holder is gone


def test_intact_is_false_once_the_name_points_elsewhere(tmp_path):
    dest = tmp_path / "x.bin"
    part = PartFile(dest, len(DATA), fresh=True)
    try:
        assert part.intact()
        other = tmp_path / "other"
        other.write_bytes(DATA)
        other.replace(part.path)
        assert not part.intact()
    finally:
        part.close()
