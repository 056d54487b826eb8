"""Part files: vectored writes land where they should and hash what they wrote."""

from __future__ import annotations

import hashlib

import pytest

from ego4d_dl.files import PartFile


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
