"""Checks of an assembled part file against its object: MD5, multipart composite MD5 or a
full-object checksum, part digests reused where the download already has them."""

from __future__ import annotations

import asyncio
import functools

from ..errors import IntegrityError
from ..etags import VerifyLevel, composite_etag, etag_kind, multipart_count
from ..events import EventSink, IntegrityFailed
from ..journal import Journal, RangeRecord
from ..layout import exact_layout
from ..ranges import part_bounds
from .checksums import checksum_fd
from .requests import Requests
from .state import Transfer

__all__ = ["Verifier"]


class Verifier:
    """Verifies the part files of one run (``verifying``: ETags; otherwise sizes only)."""

    def __init__(
        self, *, requests: Requests, journal: Journal, sink: EventSink, verifying: bool
    ) -> None:
        self._requests = requests
        self._journal = journal
        self._sink = sink
        self.verifying = verifying

    async def verify(self, obj: Transfer) -> str:
        """Check the assembled part file against the ETag; return the level reached."""
        part = obj.part
        assert part is not None
        st_size = await asyncio.to_thread(part.size_on_disk)
        if st_size != obj.size_bytes:
            raise IntegrityError(
                obj.key, f"{obj.key}: part file has {st_size} bytes, not {obj.size_bytes}"
            )
        kind = etag_kind(obj.etag) if self.verifying else VerifyLevel.SIZE
        if kind is VerifyLevel.MD5:
            digest = obj.part_md5.get(0) if len(obj.layout) == 1 else None
            if digest is None:
                digest = await asyncio.to_thread(part.hash, 0, obj.size_bytes)
            if digest.hex() != obj.etag:
                raise self.mismatch(obj, f"MD5 {digest.hex()} != ETag {obj.etag}")
            return kind.value
        if kind is VerifyLevel.COMPOSITE and len(obj.layout) == multipart_count(obj.etag):
            await self._check_composite(obj)
            return kind.value
        if self.verifying:
            # No part layout to recompute a composite ETag from, or an ETag that is not
            # MD5-derived: a full-object checksum if the server has one, else the size.
            return await self.verify_checksum(obj)
        return VerifyLevel.SIZE.value

    async def _check_composite(self, obj: Transfer) -> None:
        got = await self._composite(obj)
        if got != obj.etag and not obj.layout_exact:
            # The uniform guess was wrong; the bytes may be fine. Learn the real layout.
            obj.layout, obj.layout_exact = await exact_layout(
                self._requests.store,
                obj.planned.bucket,
                obj.key,
                etag=obj.etag,
                size_bytes=obj.size_bytes,
                run=self._requests.limited_head,
            )
            obj.part_md5.clear()
            self._journal.set_layout(obj.object_id, obj.layout, exact=True)
            got = await self._composite(obj)
        if got != obj.etag:
            raise self.mismatch(obj, f"composite MD5 {got} != ETag {obj.etag}")

    async def _composite(self, obj: Transfer) -> str:
        part = obj.part
        assert part is not None
        bounds = part_bounds(obj.layout)

        async def digest(i: int) -> bytes:
            known = obj.part_md5.get(i)
            if known is not None:
                return known
            return await asyncio.to_thread(part.hash, *bounds[i])

        digests = await asyncio.gather(*(digest(i) for i in range(len(bounds))))
        return composite_etag(digests)

    async def verify_checksum(self, obj: Transfer) -> str:
        """ETag not MD5-derived: use a full-object x-amz-checksum if the server has one."""
        part = obj.part
        assert part is not None
        store = self._requests.store
        head = await self._requests.call(
            lambda: store.head(obj.planned.bucket, obj.key, checksums=True)
        )
        for name, value in head.checksums.items():
            if "-" in value:
                continue  # a composite checksum of parts: not checkable without the layout
            local = await asyncio.to_thread(
                part.read_with, functools.partial(checksum_fd, name=name)
            )
            if local is None:
                continue
            if local != value:
                raise self.mismatch(obj, f"{name} {local} != {value}")
            return VerifyLevel.CHECKSUM.value
        return VerifyLevel.SIZE.value

    def mismatch(self, obj: Transfer, reason: str) -> IntegrityError:
        """Report bytes that do not match; the error that restarts the file."""
        self._sink(
            IntegrityFailed(
                dataset=obj.dataset, key=obj.key, reason=reason, refetch_bytes=obj.size_bytes
            )
        )
        return IntegrityError(obj.key, f"{obj.key}: {reason}")

    async def check_resumed(self, obj: Transfer, done: list[RangeRecord]) -> list[RangeRecord]:
        """Re-hash journaled ranges from disk; forget any whose bytes changed since."""
        part = obj.part
        assert part is not None
        checkable = [r for r in done if r.md5 is not None]
        digests = await asyncio.gather(
            *(asyncio.to_thread(part.hash, r.start, r.stop) for r in checkable)
        )
        bad = [r for r, d in zip(checkable, digests, strict=True) if d != r.md5]
        if not bad:
            return done
        self._journal.drop_ranges(obj.object_id, [r.start for r in bad])
        self._sink(
            IntegrityFailed(
                dataset=obj.dataset,
                key=obj.key,
                reason=f"{len(bad)} resumed ranges changed on disk since they were fetched",
                refetch_bytes=sum(r.stop - r.start for r in bad),
            )
        )
        bad_starts = {r.start for r in bad}
        return [r for r in done if r.start not in bad_starts]
