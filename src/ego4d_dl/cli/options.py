"""Options shared by the commands: their declarations, the config file, validation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..catalog import (
    DEFAULT_VERSION,
)
from ..config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_CONCURRENCY,
    Options,
    build_options,
    load_config_file,
)

__all__ = [
    "Benchmarks",
    "BypassExisting",
    "Concurrency",
    "ConfigPath",
    "Datasets",
    "DryRun",
    "EndpointUrl",
    "JsonOut",
    "ListDatasets",
    "ManifestOverride",
    "MaxBandwidth",
    "Metadata",
    "NoSpaceCheck",
    "OutputDirectory",
    "Processes",
    "Profile",
    "ProgressInterval",
    "Quiet",
    "ReleaseManifest",
    "ShardOption",
    "SkipS3Checks",
    "StallTimeout",
    "Universities",
    "VerifyMode",
    "Version",
    "VideoUidFile",
    "VideoUids",
    "Yes",
    "gather_options",
    "merge_config",
    "typed_values",
]


def merge_config(ctx: typer.Context, values: dict[str, Any], config: Path | None) -> dict[str, Any]:
    """Values typed on the command line win; the config file fills in the rest."""
    if config is None:
        return values
    from_file = load_config_file(config)
    merged = dict(values)
    for key, value in from_file.items():
        source = ctx.get_parameter_source(key)
        if key in merged and (source is None or source.name in ("DEFAULT", "DEFAULT_MAP")):
            merged[key] = value
    return merged


# --- shared option declarations -----------------------------------------------------------

# Every option says what it does and its default in one line ("\[default: ...]" where
# click cannot tell it, e.g. when the default is decided later or is "none").
OutputDirectory = Annotated[
    Path | None,
    typer.Option(
        "--output-directory",
        "--output_directory",
        "-o",
        metavar="DIR",
        help="Where the dataset goes: DIR/<major version>/<dataset>/ [required].",
        show_default=False,
    ),
]
Datasets = Annotated[
    list[str] | None,
    typer.Option(
        "--datasets",
        "--dataset",
        metavar="NAME...",
        help="Datasets to fetch, e.g. full_scale annotations [default: annotations].",
        show_default=False,
    ),
]
Benchmarks = Annotated[
    list[str] | None,
    typer.Option(
        "--benchmarks",
        metavar="NAME...",
        help="Only files tagged with these benchmarks, e.g. EM FHO AV [default: all].",
        show_default=False,
    ),
]
Version = Annotated[
    str | None,
    typer.Option(
        "--version",
        metavar="RELEASE",
        help=f"Release: any the bucket holds, e.g. v1, v2, v2_1 [default: {DEFAULT_VERSION}].",
        show_default=False,
    ),
]
Profile = Annotated[
    str | None,
    typer.Option(
        "--aws-profile-name",
        "--aws_profile_name",
        metavar="PROFILE",
        help="AWS profile with your Ego4D keys [default: the standard AWS chain].",
        show_default=False,
    ),
]
VideoUids = Annotated[
    list[str] | None,
    typer.Option(
        "--video-uids",
        "--video_uids",
        metavar="UID...",
        help="Only these video or clip UIDs [default: all].",
        show_default=False,
    ),
]
VideoUidFile = Annotated[
    Path | None,
    typer.Option(
        "--video-uid-file",
        "--video_uid_file",
        metavar="FILE",
        help="Only the UIDs in FILE, whitespace-separated; not with --video_uids [default: all].",
        show_default=False,
    ),
]
Universities = Annotated[
    list[str] | None,
    typer.Option(
        "--universities",
        metavar="ID...",
        help="Only files from these universities' buckets, e.g. cmu unict [default: all].",
        show_default=False,
    ),
]
ConfigPath = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "--config-path",
        "--config_path",
        metavar="FILE",
        help="JSON file of options (the original CLI's); the command line wins [default: none].",
        show_default=False,
    ),
]
EndpointUrl = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        "--endpoint_url",
        metavar="URL",
        help="S3-compatible endpoint: a mirror or local sandbox [default: AWS S3].",
        show_default=False,
    ),
]
Concurrency = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        metavar="N",
        help=(
            "Requests in flight at once, exactly N (halved only while the server throttles) "
            f"[default: adaptive: from {DEFAULT_CONCURRENCY}, up to {DEFAULT_MAX_CONCURRENCY}, "
            "as many as make the download faster]."
        ),
        show_default=False,
    ),
]
JsonOut = Annotated[
    bool,
    typer.Option("--json", help="Machine-readable JSON on stdout [default: off]."),
]
ManifestOverride = Annotated[
    Path | None,
    typer.Option(
        "--manifest-override-path",
        "--manifest_override_path",
        metavar="CSV",
        help="Use this local manifest instead of the release's (one dataset) [default: none].",
        show_default=False,
    ),
]


ShardOption = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="Only shard K of N (files split by a stable hash of their S3 key), e.g. 3/8 "
        "[default: all files].",
        show_default=False,
        metavar="K/N",
    ),
]
Processes = Annotated[
    int | None,
    typer.Option(
        "--processes",
        metavar="N",
        help="Worker processes, each over its own part of the plan (its own shard's journal; "
        "--concurrency and --max-bandwidth are shared out among them) [default: automatic: "
        "1 on 2 cores or fewer, else one per 2 cores, at most 8, and at most one per GiB or "
        "per 2,000 files to fetch].",
        show_default=False,
    ),
]
MaxBandwidth = Annotated[
    str | None,
    typer.Option(
        "--max-bandwidth",
        "--max_bandwidth",
        help="Cap on the whole run's download rate, e.g. 200MB/s or 50MiB/s [default: none].",
        show_default=False,
        metavar="RATE",
    ),
]


def typed_values(ctx: typer.Context) -> dict[str, Any]:
    """The command's parameters as typed (or defaulted), with ``--config`` filling in what
    was not typed. ``build_options`` reads the option names it knows and ignores the rest."""
    values = dict(ctx.params)
    return merge_config(ctx, values, values.pop("config", None))


def gather_options(ctx: typer.Context) -> tuple[Options, list[str]]:
    """Validated ``Options`` from what the command was given, and warnings to show."""
    return build_options(typed_values(ctx))


# --- options of the download command --------------------------------------------------------

Yes = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Start without the confirmation prompt [default: ask]."),
]
ReleaseManifest = Annotated[
    bool,
    typer.Option(
        "--manifest",
        help="Also keep the release's full_scale manifest as DIR/manifest.csv, as the "
        "original CLI; the download goes on [default: off].",
    ),
]
Metadata = Annotated[
    bool,
    typer.Option("--metadata/--no-metadata", help="Also fetch the release's ego4d.json."),
]
VerifyMode = Annotated[
    str,
    typer.Option(
        "--verify",
        metavar="etag|size",
        help="etag: check every file's MD5 or multipart ETag; size: sizes only.",
    ),
]
StallTimeout = Annotated[
    float,
    typer.Option(
        "--stall-timeout",
        metavar="SECONDS",
        help="Seconds without a byte before a request is retried.",
    ),
]
NoSpaceCheck = Annotated[
    bool,
    typer.Option(
        "--no-space-check", help="Start even if free space looks too small [default: check]."
    ),
]
DryRun = Annotated[
    bool,
    typer.Option("--dry-run", help="Only show the plan, as `ego4d-dl plan` [default: off]."),
]
# The original CLI's own switches, accepted so that its command lines keep working.
SkipS3Checks = Annotated[bool, typer.Option("--skip-s3-checks", hidden=True)]
BypassExisting = Annotated[bool, typer.Option("--bypass-existing", hidden=True)]
ListDatasets = Annotated[bool, typer.Option("--list-datasets", hidden=True)]
Quiet = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Only errors, warnings and the summary [default: off]."),
]
ProgressInterval = Annotated[
    float,
    typer.Option(
        "--progress-interval",
        metavar="SECONDS",
        help="Seconds between progress lines in logs and pipes (and --json).",
    ),
]
