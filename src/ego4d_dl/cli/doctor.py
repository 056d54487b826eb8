"""The ``doctor`` command: every common cause of a failing download, checked and explained."""

from __future__ import annotations

import json

import typer

from ..doctor import diagnose
from ..errors import Ego4dDLError
from ..jsonforms import doctor_json
from ..render import render_doctor
from ..shard import format_shard
from .console import fail, print_warnings, run_async, stdout_console, write_stdout
from .options import (
    Benchmarks,
    Concurrency,
    ConfigPath,
    Datasets,
    EndpointUrl,
    JsonOut,
    OutputDirectory,
    Profile,
    ShardOption,
    Universities,
    Version,
    VideoUidFile,
    VideoUids,
    gather_options,
)
from .outcome import doctor_exit_code, exit_code_for

__all__ = ["doctor_command"]


def doctor_command(
    ctx: typer.Context,
    output_directory: OutputDirectory = None,
    datasets: Datasets = None,
    benchmarks: Benchmarks = None,
    version: Version = None,
    aws_profile_name: Profile = None,
    video_uids: VideoUids = None,
    video_uid_file: VideoUidFile = None,
    universities: Universities = None,
    config: ConfigPath = None,
    endpoint_url: EndpointUrl = None,
    concurrency: Concurrency = None,
    shard: ShardOption = None,
    json_out: JsonOut = False,
) -> None:
    """Check profile, keys, clock, proxies, buckets, disk space and the output directory.

    Explains each problem in plain words; exits 0 only when a download would start (2: a
    configuration problem, 3: the keys, 1: network or disk).
    """
    try:
        options, warnings = gather_options(ctx)
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    print_warnings(warnings)
    diagnosis = run_async(lambda: diagnose(options), credentials=options.credentials)
    if json_out:
        write_stdout(json.dumps(doctor_json(diagnosis), indent=1) + "\n")
    else:
        if options.shard is not None:
            stdout_console.print(f"checking for shard {format_shard(options.shard)}")
        render_doctor(stdout_console, diagnosis)
    raise typer.Exit(doctor_exit_code(diagnosis))
