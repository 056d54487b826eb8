"""Ego-Exo4D selection: the original's filters over manifest rows, part by part; pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .egoexo_manifest import EgoExoRow, Entry, MalformedPath

__all__ = [
    "EgoExoSelection",
    "PartSelection",
    "select_part",
    "unknown_benchmarks",
    "unknown_benchmarks_warning",
]


def _passes(wanted: frozenset[str] | None, have: Sequence[str] | None) -> bool:
    # The original: no filter, or a field the manifest leaves out, admits; an empty list
    # meets no filter.
    return wanted is None or have is None or not wanted.isdisjoint(have)


@dataclass(frozen=True, slots=True, kw_only=True)
class EgoExoSelection:
    """The original's filters: ``--uids``, ``--benchmarks``, ``--splits`` on entries,
    ``--views`` and ``-u/--universities`` on paths. ``None`` is "flag not given"; values are
    compared exactly (case included), as the original did."""

    uids: frozenset[str] | None = None
    benchmarks: frozenset[str] | None = None
    splits: frozenset[str] | None = None
    views: frozenset[str] | None = None
    universities: frozenset[str] | None = None

    def admits_entry(
        self, *, uid: str, benchmarks: Sequence[str] | None, splits: Sequence[str] | None
    ) -> bool:
        """The original's ``_manifest_ok``."""
        return (
            _passes(self.splits, splits)
            and _passes(self.benchmarks, benchmarks)
            and _passes(self.uids, (uid,))
        )

    def admits_path(
        self, *, views: Sequence[str] | None, universities: Sequence[str] | None
    ) -> bool:
        """The original's ``_path_ok``."""
        return _passes(self.views, views) and _passes(self.universities, universities)

    def admits(self, row: EgoExoRow) -> bool:
        """Whether the original would download ``row`` (entry and path filters both)."""
        return self.admits_entry(
            uid=row.uid, benchmarks=row.benchmarks, splits=row.splits
        ) and self.admits_path(views=row.views, universities=row.universities)


@dataclass(frozen=True, slots=True, kw_only=True)
class PartSelection:
    """What one part's manifest holds for a selection.

    ``rows`` are the admitted paths in manifest order; ``malformed`` every unusable path or
    entry, admitted or not (they cannot be judged); ``paths`` every path the manifest names
    (the original's "Filtered N -> M files"); ``benchmarks_seen`` every benchmark any entry
    names (the original's valid names, entries without paths included); ``uids_found`` the
    requested uids some entry of the part has, whatever the other filters say.
    """

    part: str
    rows: tuple[EgoExoRow, ...]
    malformed: tuple[MalformedPath, ...]
    entries: int
    paths: int
    benchmarks_seen: frozenset[str]
    uids_found: frozenset[str]


def select_part(
    part: str, parsed: Iterable[Entry | MalformedPath], selection: EgoExoSelection
) -> PartSelection:
    """Apply ``selection`` to a part's entries (from ``parse_entries``), keeping only what
    it admits: memory grows with the selection, not with the manifest."""
    rows: list[EgoExoRow] = []
    malformed: list[MalformedPath] = []
    benchmarks: set[str] = set()
    found: set[str] = set()
    entries = paths = 0
    for item in parsed:
        entries += 1
        if isinstance(item, MalformedPath):
            malformed.append(item)
            continue
        paths += item.path_count
        malformed.extend(item.malformed)
        benchmarks.update(item.benchmarks or ())
        if selection.uids is not None and item.uid in selection.uids:
            found.add(item.uid)
        if not selection.admits_entry(uid=item.uid, benchmarks=item.benchmarks, splits=item.splits):
            continue
        rows.extend(
            r
            for r in item.rows
            if selection.admits_path(views=r.views, universities=r.universities)
        )
    return PartSelection(
        part=part,
        rows=tuple(rows),
        malformed=tuple(malformed),
        entries=entries,
        paths=paths,
        benchmarks_seen=frozenset(benchmarks),
        uids_found=frozenset(found),
    )


def unknown_benchmarks(
    requested: frozenset[str] | None, parts: Iterable[PartSelection]
) -> tuple[frozenset[str], frozenset[str]]:
    """``(unknown, valid)``: the requested benchmarks no entry of the parts read names, and
    the names they do hold. The original warned and went on with its selection unchanged."""
    valid = frozenset().union(*(p.benchmarks_seen for p in parts))
    return (requested or frozenset()) - valid, valid


def unknown_benchmarks_warning(unknown: frozenset[str], valid: frozenset[str]) -> str | None:
    """One warning line for ``unknown_benchmarks``' result, or ``None`` when all are known."""
    if not unknown:
        return None
    names = ", ".join(repr(b) for b in sorted(unknown))
    if not valid:
        known = "the parts selected are not associated with benchmarks"
    else:
        known = "valid benchmarks for these parts: " + ", ".join(sorted(valid))
    return f"--benchmarks {names}: no entry of the selected parts names it; {known}"
