"""Full-object ``x-amz-checksum-*`` values computed the way S3 encodes them."""

from __future__ import annotations

import hashlib
import zlib
from base64 import b64encode
from pathlib import Path

__all__ = ["checksum_file"]

MiB = 1024 * 1024


def checksum_file(path: Path, name: str) -> str | None:
    """Base64 checksum of a whole file in S3's encoding, for the algorithms stdlib has."""
    if name == "ChecksumSHA256":
        h = hashlib.sha256()
    elif name == "ChecksumSHA1":
        h = hashlib.sha1()
    elif name == "ChecksumCRC32":
        crc = 0
        with path.open("rb") as f:
            while block := f.read(4 * MiB):
                crc = zlib.crc32(block, crc)
        return b64encode(crc.to_bytes(4, "big")).decode()
    else:
        return None
    with path.open("rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return b64encode(h.digest()).decode()
