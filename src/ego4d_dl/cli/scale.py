"""Commands for operating at dataset scale: ``verify``, ``status`` and ``doctor``."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from ..config import build_options
from ..dashboard import CheckProgressSink
from ..doctor import diagnose
from ..downloading import default_jobs
from ..errors import (
    ConfigError,
    Ego4dDLError,
)
from ..events import EventSink, discard
from ..jsonforms import doctor_json, status_json, verify_json
from ..render import render_doctor, render_status, render_verify
from ..results import Blame, Diagnosis, VerifyResult
from ..shard import format_shard
from ..sinks import Display
from ..status import collect_status
from ..verify import run_verify
from .app import (
    EXIT_CREDENTIALS,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    app,
    exit_code_for,
    fail,
    run_async,
    stdout_console,
    write_stdout,
)
from .options import (
    Benchmarks,
    Concurrency,
    ConfigPath,
    Datasets,
    EndpointUrl,
    JsonOut,
    MaxBandwidth,
    OutputDirectory,
    Profile,
    ShardOption,
    Universities,
    Version,
    VideoUidFile,
    VideoUids,
    gather_options,
    print_warnings,
    typed_values,
)
from .transfer import (
    WithChecks,
    make_display,
    stop_engine_on_signals,
)

__all__: list[str] = []

# --- operating at scale: adoption, verify, status, doctor -----------------------------------


Repair = Annotated[
    bool,
    typer.Option(
        "--repair", help="Refetch every missing, truncated or corrupt file [default: off]."
    ),
]
Jobs = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        "-j",
        help="Files read back and hashed at once [default: one per CPU core].",
        show_default=False,
    ),
]


@app.command("verify", short_help="Re-hash downloaded files against their ETags; --repair.")
def verify_command(
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
    repair: Repair = False,
    jobs: Jobs = None,
    max_bandwidth: MaxBandwidth = None,
    metadata: Annotated[
        bool,
        typer.Option("--metadata/--no-metadata", help="Also check the release's ego4d.json."),
    ] = True,
    no_space_check: Annotated[
        bool,
        typer.Option(
            "--no-space-check", help="Repair even if free space looks too small [default: off]."
        ),
    ] = False,
    json_out: JsonOut = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Print only problems and the summary [default: off]."),
    ] = False,
    progress_interval: Annotated[
        float, typer.Option("--progress-interval", help="Seconds between progress lines.")
    ] = 10.0,
) -> None:
    """Read every downloaded file back and check it against its ETag; --repair refetches.

    Works on any output directory, with or without a journal (one made by the original CLI
    too): the plan comes from the release's manifests, so missing files are found as well.
    """
    try:
        options, warnings = gather_options(ctx)
        if not options.output_directory.is_dir():
            raise ConfigError(f"output directory {options.output_directory} does not exist")
        if jobs is not None and not 1 <= jobs <= 256:
            raise ConfigError(f"--jobs must be between 1 and 256, not {jobs}")
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    print_warnings(warnings)
    checks = (
        None
        if json_out
        else CheckProgressSink(
            sys.stderr, interval_s=progress_interval, quiet=quiet, list_damaged=False
        )
    )
    # --json prints one document at the end, as `plan --json` does: no progress events.
    sink: EventSink = discard
    display: Display | None = None
    if checks is not None:
        display = WithChecks(
            make_display(json_out=False, quiet=quiet, interval_s=progress_interval), checks
        )
        sink = display

    async def go() -> VerifyResult:
        return await run_verify(
            options,
            sink=sink,
            repair=repair,
            jobs=jobs or default_jobs(),
            on_engine=stop_engine_on_signals(display) if display else lambda _: None,
            space_check=not no_space_check,
        )

    try:
        result = run_async(go, credentials=options.credentials)
    finally:
        if display is not None:
            display.close()
    print_warnings(result.plan.warnings)
    if result.rebuilt_from is not None:
        print_warnings(
            [
                f"the journal was damaged: set aside as {result.rebuilt_from.name} and rebuilt "
                "from the files on disk and the manifests"
            ]
        )
    if json_out:
        write_stdout(json.dumps(verify_json(result), indent=1) + "\n")
    else:
        render_verify(stdout_console, result)
    if result.repair is not None and result.repair.stop_kind == "credentials":
        raise typer.Exit(EXIT_CREDENTIALS)
    if result.repair is not None and result.repair.stop_kind == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILED)


@app.command("status", short_help="Progress of every shard and dataset, offline.")
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


def _doctor_exit_code(diagnosis: Diagnosis) -> int:
    blame = diagnosis.blame
    if blame is Blame.NONE:
        return EXIT_OK
    if blame is Blame.CREDENTIALS:
        return EXIT_CREDENTIALS
    if blame is Blame.CONFIG:
        return EXIT_USAGE
    return EXIT_FAILED


@app.command("doctor", short_help="Check keys, clock, buckets, proxies and disk; explain.")
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
    raise typer.Exit(_doctor_exit_code(diagnosis))
