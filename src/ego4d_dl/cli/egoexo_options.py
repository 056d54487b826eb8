"""The original ``egoexo`` downloader's flags, as ``egoexo-dl`` declares them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..egoexo_catalog import DEFAULT_BASE_DIR, DEFAULT_RELEASE

__all__ = [
    "BaseDir",
    "Benchmarks",
    "Delete",
    "DeleteYes",
    "Force",
    "NumWorkers",
    "OutDir",
    "Parts",
    "Release",
    "S3Profile",
    "Splits",
    "Uids",
    "Universities",
    "Views",
]

OutDir = Annotated[
    Path | None,
    typer.Option(
        "--out_dir",
        "--out-dir",
        "-o",
        metavar="DIR",
        help="Where the dataset goes: DIR/<relative_path of each file> [required].",
        show_default=False,
    ),
]
Parts = Annotated[
    list[str] | None,
    typer.Option(
        "--parts",
        metavar="PART...",
        help="Parts to fetch: metadata, annotations, takes, take_trajectory, ..., or default or "
        "all [default: default].",
        show_default=False,
    ),
]


def _filter(flag: str, what: str, *more: str) -> Any:
    return typer.Option(
        flag, *more, metavar="VALUE...", help=f"Only {what} [default: all].", show_default=False
    )


Uids = Annotated[list[str] | None, _filter("--uids", "these take or capture uids")]
Benchmarks = Annotated[list[str] | None, _filter("--benchmarks", "data of these benchmarks")]
Splits = Annotated[list[str] | None, _filter("--splits", "these splits: train val test")]
Views = Annotated[list[str] | None, _filter("--views", "these views: ego exo")]
Universities = Annotated[
    list[str] | None, _filter("--universities", "these universities' data", "-u")
]
NumWorkers = Annotated[
    int | None,
    typer.Option(
        "--num_workers",
        "--num-workers",
        "--concurrency",
        metavar="N",
        help="Requests in flight, exactly N [default: adaptive, as ego4d-dl's --concurrency].",
        show_default=False,
    ),
]
Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Accepted; verified files are never fetched again (use `egoexo-dl verify "
        "--repair` to re-check them) [default: off].",
    ),
]
Delete = Annotated[
    bool,
    typer.Option(
        "--delete",
        "-d",
        help="Also remove files in the selected parts' folders that the selection does not "
        "name; lists them and asks first [default: off].",
    ),
]
DeleteYes = Annotated[
    bool,
    typer.Option(
        "--delete_yes", "--delete-yes", help="Remove them without asking (-dy) [default: ask]."
    ),
]
Release = Annotated[
    str | None,
    typer.Option(
        "--release",
        metavar="NAME",
        help=f"Release [default: {DEFAULT_RELEASE}].",
        show_default=False,
    ),
]
S3Profile = Annotated[
    str | None,
    typer.Option(
        "--s3_profile",
        "--s3-profile",
        metavar="PROFILE",
        help="AWS profile with your Ego-Exo4D keys [default: the standard AWS chain].",
        show_default=False,
    ),
]
BaseDir = Annotated[
    str | None,
    typer.Option(
        "--base_dir",
        "--base-dir",
        metavar="S3_URL",
        help=f"Where the releases are [default: {DEFAULT_BASE_DIR}].",
        show_default=False,
    ),
]
