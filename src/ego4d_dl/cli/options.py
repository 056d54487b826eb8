"""Options shared by the commands: their declarations, the config file, validation.

Every flag of the original CLI in both spellings; ``build_options`` turns what was typed
(command line over ``--config`` file) into frozen ``Options`` or a ``ConfigError``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from ..bandwidth import parse_bandwidth
from ..catalog import (
    DEFAULT_DATASETS,
    DEFAULT_VERSION,
    normalise_dataset,
    normalise_university,
    normalise_version,
)
from ..config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_STALL_TIMEOUT_S,
    Credentials,
    Options,
    load_config_file,
    parse_endpoint,
    read_uid_file,
)
from ..errors import (
    ConfigError,
)
from ..shard import parse_shard
from .app import stderr_console

__all__ = [
    "Benchmarks",
    "Concurrency",
    "ConfigPath",
    "Datasets",
    "EndpointUrl",
    "JsonOut",
    "ManifestOverride",
    "MaxBandwidth",
    "OutputDirectory",
    "Profile",
    "ShardOption",
    "Universities",
    "Version",
    "VideoUidFile",
    "VideoUids",
    "build_options",
    "check_output_directory",
    "gather_options",
    "merge_config",
    "print_warnings",
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


def check_output_directory(path: Path, *, create: bool) -> None:
    """Refuse an output directory that is a file or that we could not write into."""
    probe = path
    while not probe.exists():
        if probe == probe.parent:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"output directory {path}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory {path}: no permission to write in {probe}")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create output directory {path}: {exc.strerror}") from None


def build_options(values: dict[str, Any]) -> tuple[Options, list[str]]:
    """Validate raw option values into ``Options``; also return warnings to show."""
    warnings: list[str] = []
    out_raw = values.get("output_directory")
    if not out_raw:
        raise ConfigError("missing --output_directory (where the dataset should go)")
    output_directory = Path(str(out_raw)).expanduser().absolute()
    version = normalise_version(str(values.get("version") or DEFAULT_VERSION))
    datasets: list[str] = []
    for name in values.get("datasets") or DEFAULT_DATASETS:
        canon = normalise_dataset(name)
        if canon != name.strip() and canon.replace("_", "-") != name.strip().lower():
            warnings.append(f"dataset {name!r} read as {canon!r}")
        if canon not in datasets:
            datasets.append(canon)
    uids_given = values.get("video_uids") or []
    uid_file = values.get("video_uid_file")
    if uids_given and uid_file:
        raise ConfigError("--video_uids and --video_uid_file are mutually exclusive; use one")
    uids = read_uid_file(Path(str(uid_file))) if uid_file else frozenset(uids_given)
    upper = sorted(u for u in uids if u != u.lower())
    if upper:
        warnings.append(
            f"Ego4D UIDs are lower case; read {len(upper)} as lower case: {', '.join(upper[:5])}"
            + (" ..." if len(upper) > 5 else "")
        )
        uids = frozenset(u.lower() for u in uids)
    universities = frozenset(normalise_university(u) for u in values.get("universities") or [])
    benchmarks = frozenset(b.strip().lower() for b in values.get("benchmarks") or [] if b.strip())
    raw_concurrency = values.get("concurrency")
    concurrency = DEFAULT_CONCURRENCY if raw_concurrency is None else int(raw_concurrency)
    if not 1 <= concurrency <= 1024:
        raise ConfigError(f"--concurrency must be between 1 and 1024, not {concurrency}")
    # Given: exactly that many. Not given: adaptive, up to the ceiling.
    max_concurrency = DEFAULT_MAX_CONCURRENCY if raw_concurrency is None else None
    raw_stall = values.get("stall_timeout")
    stall = DEFAULT_STALL_TIMEOUT_S if raw_stall is None else float(raw_stall)
    if stall <= 0:
        raise ConfigError(f"--stall-timeout must be positive, not {stall:g}")
    verify = str(values.get("verify") or "etag")
    if verify not in ("etag", "size"):
        raise ConfigError(f"--verify must be 'etag' or 'size', not {verify!r}")
    profile = values.get("aws_profile_name")
    endpoint = parse_endpoint(values.get("endpoint_url"))
    shard = values.get("shard")
    max_bandwidth = values.get("max_bandwidth")
    options = Options(
        output_directory=output_directory,
        version=version,
        datasets=tuple(datasets),
        benchmarks=benchmarks,
        universities=universities,
        video_uids=uids,
        credentials=Credentials(profile=str(profile) if profile else None),
        endpoint=endpoint,
        concurrency=concurrency,
        max_concurrency=max_concurrency,
        stall_timeout_s=stall,
        manifest_only=bool(values.get("manifest")),
        metadata=values.get("metadata", True) is not False,
        assume_yes=bool(values.get("yes")),
        verify=verify,  # type: ignore[arg-type]
        shard=parse_shard(str(shard)) if shard else None,
        max_bandwidth_bytes_s=parse_bandwidth(str(max_bandwidth)) if max_bandwidth else None,
    )
    return options, warnings


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
        help=f"Release: v1, v2 or v2_1 [default: {DEFAULT_VERSION}].",
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


def print_warnings(warnings: Sequence[str]) -> None:
    for w in warnings:
        stderr_console.print(f"[yellow]warning:[/] {w}", markup=True)
