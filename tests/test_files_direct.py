"""Part files written direct (``O_DIRECT``) where they can be: the aligned middle of each
write goes direct, its unaligned ends buffered, and the bytes on disk are exactly the ones
hashed, however the pieces and chunks fall; where the filesystem refuses direct writes, the
write is buffered as before."""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import random
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ego4d_dl.files import PartFile

CHUNK_SIZES = [1, 17, 4095, 4096, 65536, 262144, 1 << 20]
HOP_SIZES = [1, 4097, 70000, 300000, 1 << 20, (1 << 20) + 12345]


def _write_pieces(part: PartFile, data: bytes, cuts: list[int], seed: int) -> None:
    """Write ``data`` as the pieces between ``cuts``, concurrently, each in hops of random
    chunks (as ``engine.fetch`` does), and check each piece's MD5 as it was fed."""

    def piece(bounds: tuple[int, int, int]) -> None:
        start, stop, piece_seed = bounds
        rng = random.Random(piece_seed)
        md5 = hashlib.md5()
        offset = start
        while offset < stop:
            end = min(stop, offset + rng.choice(HOP_SIZES))
            chunks, at = [], offset
            while at < end:
                n = min(end - at, rng.choice(CHUNK_SIZES))
                chunks.append(data[at : at + n])
                at += n
            part.write_and_hash(offset, chunks, md5)
            offset = end
        assert md5.digest() == hashlib.md5(data[start:stop]).digest()

    spans = [(a, b, seed + i) for i, (a, b) in enumerate(itertools.pairwise(cuts))]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(piece, spans))


@pytest.mark.parametrize("seed", range(4))
def test_pieces_and_chunks_of_any_alignment_land_exactly(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randrange(3 << 20, 6 << 20)
    data = rng.randbytes(size)
    cuts = sorted({0, size, *(rng.randrange(size) for _ in range(3))})
    part = PartFile(tmp_path / "x.bin", size, fresh=True)
    try:
        _write_pieces(part, data, cuts, seed)
        assert part.hash(0, size) == hashlib.md5(data).digest()
        assert part.sync()
    finally:
        part.close()
    assert part.path.read_bytes() == data


def test_where_direct_writes_are_refused_writes_are_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem that takes the O_DIRECT open but refuses the write (EINVAL): that write
    and every later one go buffered, and nothing is lost."""
    real_pwrite = os.pwrite
    refused: list[int] = []
    direct: list[int] = []

    def pwrite(fd: int, data: object, offset: int) -> int:
        if fd == part._direct:
            direct[:] = [fd]
            refused.append(offset)
            raise OSError(errno.EINVAL, "refused")
        return real_pwrite(fd, data, offset)  # type: ignore[arg-type]

    data = random.Random(7).randbytes(3 << 20)
    part = PartFile(tmp_path / "x.bin", len(data), fresh=True)
    monkeypatch.setattr(os, "pwrite", pwrite)
    try:
        _write_pieces(part, data, [0, 1 << 20, len(data)], 7)
    finally:
        part.close()
    assert refused and part._direct_refused
    assert part.path.read_bytes() == data
    with pytest.raises(OSError) as closed:  # the refused descriptor was closed with the part
        os.fstat(direct[0])
    assert closed.value.errno == errno.EBADF


def test_without_o_direct_writes_are_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "O_DIRECT", raising=False)
    data = random.Random(8).randbytes(2 << 20)
    part = PartFile(tmp_path / "x.bin", len(data), fresh=True)
    try:
        _write_pieces(part, data, [0, len(data)], 8)
        assert part._direct == -1
    finally:
        part.close()
    assert part.path.read_bytes() == data


def _on_local_disk(folder: Path) -> bool:
    return _fs_type(folder) in {0xEF53, 0x58465342, 0x9123683E}


def _fs_type(folder: Path) -> int:
    """statfs f_type as ``stat -f`` prints it (no ctypes: another way than the code's)."""
    out = subprocess.run(
        ["stat", "-f", "-c", "%t", str(folder)], capture_output=True, text=True, check=False
    )
    return int(out.stdout.strip() or "0", 16)


def test_a_local_disk_is_written_direct(tmp_path: Path) -> None:
    if not _on_local_disk(tmp_path):
        pytest.skip("the temporary folder is not on a local disk's filesystem here")
    data = random.Random(9).randbytes(2 << 20)
    part = PartFile(tmp_path / "x.bin", len(data), fresh=True)
    try:
        _write_pieces(part, data, [0, len(data)], 9)
        assert part._direct >= 0  # type: ignore[operator]
    finally:
        part.close()
    assert part.path.read_bytes() == data


def test_other_filesystems_keep_the_page_cache() -> None:
    """tmpfs stands for the filesystems whose direct I/O differs (NFS, Lustre, FUSE)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or _fs_type(shm) != 0x01021994:
        pytest.skip("no tmpfs at /dev/shm here")
    folder = Path(tempfile.mkdtemp(dir=shm))
    try:
        data = random.Random(10).randbytes(2 << 20)
        part = PartFile(folder / "x.bin", len(data), fresh=True)
        try:
            _write_pieces(part, data, [0, len(data)], 10)
            assert part._direct == -1
        finally:
            part.close()
        assert part.path.read_bytes() == data
    finally:
        shutil.rmtree(folder)
