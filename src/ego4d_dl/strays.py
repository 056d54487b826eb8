"""Files in an output folder no selected manifest names (``egoexo-dl --delete``): found, removed.

Only regular files directly inside folders the selected parts' manifests write into are ever
candidates: never the output folder's top level, never ego4d-dl's own folder, never a link
or anything reached through one, never a file the selection names or its ``.part``.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .egoexo_manifest import EgoExoRow, parse_manifest
from .journal import JOURNAL_DIR
from .ondisk import PART_SUFFIX
from .planned import Plan, fold_name

__all__ = ["Strays", "find_strays", "remove_strays"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Strays:
    """What ``--delete`` would remove: ``files`` (relative to ``root``, sorted), and the
    folders passed over because a link leads to them (named, never entered)."""

    root: Path
    files: tuple[PurePosixPath, ...]
    linked_folders: tuple[PurePosixPath, ...] = ()


def _folders(manifests: Iterable[bytes]) -> set[PurePosixPath]:
    """The folders (relative, never the top level) the manifests' paths land in, filters or
    not: a take the filters leave out still has its folder in the part's layout."""
    folders: set[PurePosixPath] = set()
    for data in manifests:
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig")
        for row in parse_manifest(text, source="saved manifest"):
            if isinstance(row, EgoExoRow) and "/" in row.relative_path:
                folders.add(PurePosixPath(row.relative_path).parent)
    return {f for f in folders if f.parts[0].casefold() != JOURNAL_DIR}


@contextlib.contextmanager
def _open_folder(root: Path, folder: PurePosixPath) -> Iterator[int | None]:
    """A descriptor of ``root/folder`` reached without following a link below ``root``;
    ``None`` when it does not exist, ``-1`` when a link or non-folder is in the way."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in folder.parts:
            try:
                child = os.open(name, flags, dir_fd=fd)
            except FileNotFoundError:
                yield None
                return
            except OSError:  # ELOOP (a link) or ENOTDIR
                yield -1
                return
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def find_strays(plan: Plan) -> Strays:
    """The regular files in the folders of the plan's parts that the plan does not name.

    ``plan.manifests`` are the selected parts' whole manifests (every path, admitted or not);
    the files kept are every file of the plan (whatever its action) and their ``.part`` files,
    compared as a case-insensitive, normalising filesystem would.
    """
    root = plan.output_directory
    keep: set[str] = set()
    for f in plan.files:
        name = fold_name(f.dest.relative_to(root).as_posix())
        keep.update((name, name + PART_SUFFIX))
    found: list[PurePosixPath] = []
    linked: list[PurePosixPath] = []
    for folder in sorted(_folders(plan.manifests.values())):
        with _open_folder(root, folder) as fd:
            if fd is None:
                continue
            if fd == -1:
                linked.append(folder)
                continue
            for entry in os.scandir(fd):
                rel = folder / entry.name
                if entry.is_file(follow_symlinks=False) and fold_name(rel.as_posix()) not in keep:
                    found.append(rel)
    return Strays(root=root, files=tuple(sorted(found)), linked_folders=tuple(linked))


def remove_strays(strays: Strays) -> list[PurePosixPath]:
    """Remove ``strays.files``, each only if it is still a regular file reached without a
    link; returns those removed."""
    removed = []
    for rel in strays.files:
        with _open_folder(strays.root, rel.parent) as fd:
            if fd is None or fd == -1:
                continue
            try:
                st = os.stat(rel.name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    continue
                os.unlink(rel.name, dir_fd=fd)
            except FileNotFoundError:
                continue
            removed.append(rel)
    return removed
