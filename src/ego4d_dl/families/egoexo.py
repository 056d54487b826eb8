"""The Ego-Exo4D family: its options, per-part JSON manifests, filters and destinations."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import random
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from ..config import EgoExoChoice, Options, build_options
from ..egoexo_catalog import (
    DEFAULT_BASE_DIR,
    DEFAULT_RELEASE,
    ReleaseRoot,
    expand_parts,
    release_root,
)
from ..egoexo_manifest import EgoExoRow, MalformedPath, parse_entries
from ..egoexo_select import (
    EgoExoSelection,
    PartSelection,
    select_part,
    unknown_benchmarks,
    unknown_benchmarks_warning,
)
from ..errors import (
    AccessDeniedError,
    ConfigError,
    CredentialsError,
    ObjectNotFoundError,
    PlanError,
    most_relevant,
)
from ..journal import JOURNAL_DIR
from ..manifest import MalformedRow
from ..ondisk import PART_SUFFIX
from ..planned import fold_name
from ..retry import RetryPolicy, retry_call
from ..store import ObjectStore
from . import Fetched, Selected, Wanted

__all__ = ["EgoExo", "egoexo_options", "saved_manifest_path"]

# As families.ego4d.PLAN_RETRY: planning lookups give up sooner than transfers.
_PLAN_RETRY = RetryPolicy(max_attempts=5, base_delay_s=0.2, max_delay_s=4.0)


def _given(values: Mapping[str, Any], name: str) -> frozenset[str] | None:
    # argparse's nargs="+": a flag given has a value, so an empty list is a flag not given.
    raw = values.get(name)
    return frozenset(str(v) for v in raw) if raw else None


def egoexo_options(values: Mapping[str, Any]) -> tuple[Options, list[str], list[str]]:
    """The original ``egoexo`` command line's values as validated ``Options``, with warnings
    and notes (what ``--parts default``/``all`` stand for).

    ``values`` use the original's names: ``out_dir``, ``parts``, ``uids``, ``benchmarks``,
    ``splits``, ``views``, ``universities``, ``num_workers``, ``release``, ``s3_profile``,
    ``base_dir``, and ego4d-dl's own (``endpoint_url``, ``shard``, ``max_bandwidth``, ...).
    A filter is ``None`` when not given (argparse's ``nargs="+"`` never gives an empty one).
    """
    if not values.get("out_dir"):
        raise ConfigError("missing -o/--out_dir (where the dataset should go)")
    workers = values.get("num_workers")
    if workers is not None and not 1 <= int(workers) <= 1024:
        raise ConfigError(f"--num_workers must be between 1 and 1024, not {workers}")
    root = release_root(
        str(values.get("release") or DEFAULT_RELEASE),
        str(values.get("base_dir") or DEFAULT_BASE_DIR),
    )
    expanded = expand_parts(values.get("parts") or ())
    shared = {
        "output_directory": values["out_dir"],
        "aws_profile_name": values.get("s3_profile"),
        "endpoint_url": values.get("endpoint_url"),
        "concurrency": workers,
        "stall_timeout": values.get("stall_timeout"),
        "yes": values.get("yes"),
        "verify": values.get("verify"),
        "shard": values.get("shard"),
        "max_bandwidth": values.get("max_bandwidth"),
        "metadata": False,
    }
    options, warnings = build_options(shared)
    release = root.prefix.rstrip("/").rsplit("/", 1)[-1]
    choice = EgoExoChoice(
        manifest_bucket=root.bucket,
        manifest_prefix=root.prefix,
        uids=_given(values, "uids"),
        benchmarks=_given(values, "benchmarks"),
        splits=_given(values, "splits"),
        views=_given(values, "views"),
        universities=_given(values, "universities"),
    )
    options = dataclasses.replace(options, version=release, datasets=expanded.parts, egoexo=choice)
    return options, warnings, list(expanded.notes)


def saved_manifest_path(release: str, part: str) -> PurePosixPath:
    """Where a download keeps a part's manifest, relative to the output folder: inside
    ego4d-dl's own folder, which no manifest path may name, so it never mixes with the
    dataset's files (the original keeps no manifest on disk)."""
    return PurePosixPath(JOURNAL_DIR, "egoexo", release, *part.split("/"), "manifest.json")


async def _fetch_part(store: ObjectStore, root: ReleaseRoot, part: str) -> bytes | None:
    """A part's manifest, ``None`` when the release has none."""
    key = root.manifest_key(part)
    try:
        return await retry_call(
            lambda: store.get_bytes(root.bucket, key),
            policy=_PLAN_RETRY,
            sleep=asyncio.sleep,
            rng=random.Random(),
        )
    except ObjectNotFoundError:
        return None
    except AccessDeniedError as exc:
        raise CredentialsError(
            f"access denied to the Ego-Exo4D manifests (s3://{root.bucket}/{key}); are these "
            "the keys from your approved Ego-Exo4D licence?",
            code="AccessDenied",
        ) from exc


def _malformed(m: MalformedPath) -> MalformedRow:
    return MalformedRow(line=m.entry_no, reason=f"{m.where}: {m.reason}")


class _Claims:
    """Destinations taken so far across the run's parts, by the name a case-insensitive,
    normalising filesystem sees: two objects never write one file, a file never stands where
    another path needs a folder, and no path is another's ``.part``."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, EgoExoRow]] = {}
        self.folders: set[str] = set()

    def take(self, part: str, row: EgoExoRow) -> bool:
        """Claim ``row``'s destination; ``False`` for a repeat of an identical path (fetched
        once), ``PlanError`` for a clash."""
        name = fold_name(row.relative_path)
        previous = self.files.get(name)
        if previous is not None:
            other_part, other = previous
            if (other.bucket, other.key, other.relative_path) == (
                row.bucket,
                row.key,
                row.relative_path,
            ):
                return False
            self._refuse(part, row, other_part, other, "would both write it")
        segments = name.split("/")
        prefixes = ["/".join(segments[:i]) for i in range(1, len(segments))]
        for prefix in prefixes:
            if prefix in self.files:
                other_part, other = self.files[prefix]
                self._refuse(part, row, other_part, other, "needs a folder where the other is")
        if name in self.folders:
            other_part, other = next(v for k, v in self.files.items() if k.startswith(name + "/"))
            self._refuse(part, row, other_part, other, "is a file where the other needs a folder")
        for clash in (name + PART_SUFFIX, name.removesuffix(PART_SUFFIX)):
            if clash != name and clash in self.files:
                other_part, other = self.files[clash]
                self._refuse(part, row, other_part, other, "would clash with a temporary file")
        self.files[name] = (part, row)
        self.folders.update(prefixes)
        return True

    @staticmethod
    def _refuse(part: str, row: EgoExoRow, other_part: str, other: EgoExoRow, why: str) -> None:
        raise PlanError(
            f"{part} entry {row.entry_no} ({row.relative_path!r}) and {other_part} entry "
            f"{other.entry_no} ({other.relative_path!r}): one {why} (s3://{row.bucket}/"
            f"{row.key} and s3://{other.bucket}/{other.key}); refusing to plan either"
        )


class EgoExo:
    """The Ego-Exo4D family for one run's options (``Family``): ``options.datasets`` are the
    parts, ``options.version`` the release, ``options.egoexo`` the rest."""

    name = "Ego-Exo4D"
    # takes/<take>/<kind>/<file>, annotations/ego_pose/<split>/<body>/<kind>/<file>: each
    # folder holds a few files, a part's top folder many; measured on the sandbox's release,
    # 204 files took 166 HEADs and 2 pages by folder, 34 HEADs and 8 pages five levels up.
    lookup_merge_levels = 5

    def __init__(self, options: Options) -> None:
        if options.egoexo is None:
            raise ValueError("not an Ego-Exo4D run's options")
        self.options = options
        self.release = options.version
        choice = options.egoexo
        self.root = ReleaseRoot(bucket=choice.manifest_bucket, prefix=choice.manifest_prefix)
        self._selection = EgoExoSelection(
            uids=choice.uids,
            benchmarks=choice.benchmarks,
            splits=choice.splits,
            views=choice.views,
            universities=choice.universities,
        )
        self._kept: list[PartSelection] = []
        self._claims = _Claims()

    async def fetch(self, store: ObjectStore) -> Sequence[Fetched]:
        """Every part's manifest, fetched at once; parts the release lacks are one error
        naming them all (the original read the others first, then said the same)."""
        parts = self.options.datasets
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = {p: tg.create_task(_fetch_part(store, self.root, p)) for p in parts}
        except BaseExceptionGroup as group:
            raise most_relevant(group) from None
        missing = [p for p, t in tasks.items() if t.result() is None]
        if missing:
            where = self.root.url
            if len(missing) == len(parts):
                raise ConfigError(
                    f"no manifest for any part asked for under {where} ({', '.join(missing)}): "
                    "is --release (or --base_dir) right?"
                )
            raise ConfigError(
                f"some supplied parts do not exist in release {self.release}: "
                f"{', '.join(missing)} (no manifest.json under {where})"
            )
        return [
            Fetched(
                dataset=p,
                data=data,
                source=f"s3://{self.root.bucket}/{self.root.manifest_key(p)}",
                keep_as=saved_manifest_path(self.release, p),
            )
            for p, task in tasks.items()
            if (data := task.result()) is not None
        ]

    def select(self, fetched: Fetched) -> Selected:
        """A part's paths after the original's filters, each landing at its checked
        ``relative_path``; repeats of one path across parts are fetched once."""
        part = fetched.dataset
        text = io.TextIOWrapper(io.BytesIO(fetched.data), encoding="utf-8-sig")
        chosen = select_part(part, parse_entries(text, source=fetched.source), self._selection)
        self._kept.append(chosen)
        wanted = []
        repeats = 0
        for r in chosen.rows:
            if not self._claims.take(part, r):
                repeats += 1
                continue
            wanted.append(
                Wanted(
                    dataset=part,
                    uid=r.uid,
                    bucket=r.bucket,
                    key=r.key,
                    dest=PurePosixPath(r.relative_path),
                    line=r.entry_no,
                    size_bytes=r.size_bytes,
                    checksum=r.checksum,
                )
            )
        warnings = []
        if repeats:
            warnings.append(f"{part}: {repeats} paths repeat earlier ones; each fetched once")
        if chosen.malformed:
            first = chosen.malformed[0]
            warnings.append(
                f"{part}: {len(chosen.malformed)} malformed manifest paths skipped; first: "
                f"{first.where}: {first.reason}"
            )
        return Selected(
            dataset=part,
            wanted=tuple(wanted),
            rows=chosen.paths + sum(1 for m in chosen.malformed if m.path_no == 0),
            malformed=tuple(_malformed(m) for m in chosen.malformed),
            warnings=tuple(warnings),
        )

    def check(self, selected: Sequence[Selected]) -> list[str]:
        """Benchmarks no entry of the parts names: a warning, as in the original."""
        unknown, valid = unknown_benchmarks(self._selection.benchmarks, self._kept)
        warning = unknown_benchmarks_warning(unknown, valid)
        return [warning] if warning else []

    def extras(self) -> Sequence[Wanted]:
        """Nothing beyond the parts' manifests."""
        return ()

    def saved(self, output_directory: Path, datasets: Sequence[str] | None) -> Mapping[str, Path]:
        """Where earlier downloads kept the manifests of ``datasets`` (parts; every part with
        a saved manifest when ``None``)."""
        if datasets is None:
            root = output_directory / saved_manifest_path(self.release, "x").parent.parent
            found = sorted(root.glob("**/manifest.json")) if root.is_dir() else []
            datasets = [p.parent.relative_to(root).as_posix() for p in found]
        return {p: output_directory / saved_manifest_path(self.release, p) for p in datasets}
