"""Release families: what the planner needs to know of a dataset family, behind one Protocol.

A family fetches its manifests, reads and filters them into ``Wanted`` files with destinations
inside the output folder, and says what else a release brings (Ego4D's ``ego4d.json``). The
planner (``planning``), ``status`` and the engine are the same for every family. Imports
``manifest``, ``store`` (types) and ``events``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from ..events import EventSink, ManifestLoaded
from ..manifest import MalformedRow
from ..store import ObjectStore

__all__ = ["Family", "Fetched", "Selected", "Wanted", "announce", "manifest_mismatch"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Wanted:
    """One file a family's manifest asks for; ``dest`` is relative to the output folder and
    was checked to stay inside it."""

    dataset: str  # the dataset (Ego4D) or part (Ego-Exo4D) it belongs to
    uid: str
    bucket: str
    key: str
    dest: PurePosixPath
    line: int = 0  # in its manifest, for messages
    size_bytes: int | None = None  # as the manifest states it, when it does
    checksum: str | None = None  # as the manifest states it (an MD5 in hex), when it does


@dataclass(frozen=True, slots=True, kw_only=True)
class Selected:
    """What a dataset's manifest asked for after the user's filters, and what was left out."""

    dataset: str
    wanted: tuple[Wanted, ...]
    rows: int  # rows read, malformed ones included
    malformed: tuple[MalformedRow, ...] = ()
    unknown_uids: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Fetched:
    """A dataset's manifest as fetched: its bytes, where it came from, and where (relative to
    the output folder) it is kept for ``status`` and for going back to the original tool;
    ``keep_as`` is ``None`` for a manifest that is not the release's (an override)."""

    dataset: str
    data: bytes
    source: str
    keep_as: PurePosixPath | None


class Family(Protocol):
    """A dataset family (Ego4D, Ego-Exo4D) as one run's options describe it."""

    name: str  # "Ego4D"
    release: str  # the release, as shown: "v2_1"
    # How many folder levels up a lookup may gather keys into one listing (lookup.py).
    lookup_merge_levels: int

    async def fetch(self, store: ObjectStore) -> Sequence[Fetched]:
        """Every selected dataset's manifest (a clear error when one does not exist)."""
        ...

    def select(self, fetched: Fetched) -> Selected:
        """Read a manifest and apply the user's filters; destinations are checked here."""
        ...

    def check(self, selected: Sequence[Selected]) -> list[str]:
        """Checks across datasets (UIDs no dataset holds...): warnings, or a raised error."""
        ...

    def extras(self) -> Sequence[Wanted]:
        """Files of the release beyond the manifests' rows (Ego4D's ``ego4d.json``)."""
        ...

    def saved(self, output_directory: Path, datasets: Sequence[str] | None) -> Mapping[str, Path]:
        """Where earlier downloads kept the manifests of ``datasets`` (all of them: ``None``)
        in ``output_directory``: ``status`` reads them, offline."""
        ...


_MD5_HEX = frozenset("0123456789abcdef")


def manifest_mismatch(wanted: Wanted, *, size_bytes: int, etag: str) -> str | None:
    """Why the object found for ``wanted`` is not the file its manifest describes (another
    size, or an MD5 that a single-part ETag contradicts), or ``None``. A checksum that is not
    an MD5, or an ETag that is not one (multipart, SSE-KMS), proves nothing either way."""
    if wanted.size_bytes is not None and wanted.size_bytes != size_bytes:
        return (
            f"the manifest says {wanted.size_bytes:,} bytes, the object holds {size_bytes:,}: "
            "the release changed since its manifest was written"
        )
    checksum = (wanted.checksum or "").strip().lower()
    md5_etag = len(etag) == 32 and set(etag) <= _MD5_HEX
    if len(checksum) == 32 and set(checksum) <= _MD5_HEX and md5_etag and checksum != etag:
        return f"the manifest's checksum {checksum} is not the object's MD5 {etag}"
    return None


def announce(sink: EventSink, selected: Selected) -> None:
    """Report a dataset's manifest as loaded (shared by the planner and ``status``)."""
    sink(
        ManifestLoaded(
            dataset=selected.dataset,
            rows=selected.rows,
            selected=len(selected.wanted),
            malformed=len(selected.malformed),
        )
    )
