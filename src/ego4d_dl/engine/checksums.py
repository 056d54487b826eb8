"""Full-object ``x-amz-checksum-*`` values computed the way S3 encodes them."""

from __future__ import annotations

import hashlib
import os
import zlib
from base64 import b64encode
from collections.abc import Iterator

__all__ = ["checksum_fd"]

MiB = 1024 * 1024


def _blocks(fd: int) -> Iterator[bytes]:
    offset = 0
    while block := os.pread(fd, 4 * MiB, offset):
        yield block
        offset += len(block)


def checksum_fd(fd: int, name: str) -> str | None:
    """Base64 checksum of an open file's bytes in S3's encoding, for the algorithms stdlib
    has (``None`` for the others)."""
    if name == "ChecksumCRC32":
        crc = 0
        for block in _blocks(fd):
            crc = zlib.crc32(block, crc)
        return b64encode(crc.to_bytes(4, "big")).decode()
    if name == "ChecksumSHA256":
        h = hashlib.sha256()
    elif name == "ChecksumSHA1":
        h = hashlib.sha1()
    else:
        return None
    for block in _blocks(fd):
        h.update(block)
    return b64encode(h.digest()).decode()
