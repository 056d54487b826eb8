"""The ``status`` command: every shard's and dataset's progress, offline."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..config import build_options
from ..errors import Ego4dDLError
from ..jsonforms import status_json
from ..render import render_status
from ..status import collect_status
from .console import fail, print_warnings, stdout_console, write_stdout
from .options import (
    Benchmarks,
    ConfigPath,
    JsonOut,
    OutputDirectory,
    ShardOption,
    Universities,
    Version,
    VideoUidFile,
    VideoUids,
    typed_values,
)
from .outcome import exit_code_for

__all__ = ["status_command"]


def status_command(
    ctx: typer.Context,
    output_directory: OutputDirectory = None,
    datasets: Annotated[
        list[str] | None,
        typer.Option(
            "--datasets",
            "--dataset",
            help="Datasets to report on [default: every dataset with a saved manifest].",
            show_default=False,
        ),
    ] = None,
    benchmarks: Benchmarks = None,
    version: Version = None,
    video_uids: VideoUids = None,
    video_uid_file: VideoUidFile = None,
    universities: Universities = None,
    config: ConfigPath = None,
    shard: ShardOption = None,
    metadata: Annotated[
        bool,
        typer.Option("--metadata/--no-metadata", help="Count the release's ego4d.json too."),
    ] = True,
    json_out: JsonOut = False,
) -> None:
    """Show what every shard has done: complete / partial / to fetch, per shard and dataset.

    Offline: reads the manifests saved in the output directory, every journal and the disk;
    needs no keys. Pass the download's selection flags (--benchmarks ...) to count as it did.
    """
    try:
        merged = typed_values(ctx)
        options, warnings = build_options(merged)
        status = collect_status(options, datasets_given=bool(merged.get("datasets")))
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    print_warnings([*warnings, *status.warnings])
    if json_out:
        write_stdout(json.dumps(status_json(status), indent=1) + "\n")
    else:
        render_status(stdout_console, status)
