"""The ``verify`` command: read every file back against its ETag; ``--repair`` refetches."""

from __future__ import annotations

import json
import sys
from typing import Annotated, NoReturn

import typer

from ..config import Options
from ..downloading import default_jobs
from ..errors import ConfigError, Ego4dDLError
from ..events import discard
from ..jsonforms import verify_json
from ..readback_view import CheckProgressSink
from ..render import render_verify
from ..results import VerifyResult
from ..sinks import Display
from ..verify import run_verify
from .console import fail, print_warnings, run_async, stdout_console, write_stdout
from .display import WithChecks, make_display
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
)
from .outcome import (
    exit_code_for,
    verify_exit_code,
)
from .signals import stop_engine_on_signals

__all__ = ["run_verify_command", "verify_command"]


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


CheckMetadata = Annotated[
    bool,
    typer.Option("--metadata/--no-metadata", help="Also check the release's ego4d.json."),
]
RepairSpaceCheck = Annotated[
    bool,
    typer.Option(
        "--no-space-check", help="Repair even if free space looks too small [default: off]."
    ),
]
QuietChecks = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Print only problems and the summary [default: off]."),
]
Interval = Annotated[
    float, typer.Option("--progress-interval", help="Seconds between progress lines.")
]


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
    metadata: CheckMetadata = True,
    no_space_check: RepairSpaceCheck = False,
    json_out: JsonOut = False,
    quiet: QuietChecks = False,
    progress_interval: Interval = 10.0,
) -> None:
    """Read every downloaded file back and check it against its ETag; --repair refetches.

    Works on any output directory, with or without a journal (one made by the original CLI
    too): the plan comes from the release's manifests, so missing files are found as well.
    """
    try:
        options, warnings = gather_options(ctx)
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    print_warnings(warnings)
    run_verify_command(
        options,
        repair=repair,
        jobs=jobs,
        no_space_check=no_space_check,
        json_out=json_out,
        quiet=quiet,
        progress_interval=progress_interval,
    )


def run_verify_command(
    options: Options,
    *,
    repair: bool,
    jobs: int | None,
    no_space_check: bool,
    json_out: bool,
    quiet: bool,
    progress_interval: float,
) -> NoReturn:
    """``verify`` for options already gathered (``egoexo-dl verify`` too): check the folder
    and --jobs, read everything back with a display, report, exit with the verdict."""
    try:
        if not options.output_directory.is_dir():
            raise ConfigError(f"output directory {options.output_directory} does not exist")
        if jobs is not None and not 1 <= jobs <= 256:
            raise ConfigError(f"--jobs must be between 1 and 256, not {jobs}")
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    # --json prints one document at the end, as `plan --json` does: no progress events.
    display = None if json_out else _display(quiet=quiet, interval_s=progress_interval)

    async def go() -> VerifyResult:
        return await run_verify(
            options,
            sink=display if display is not None else discard,
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
    _report(result, json_out=json_out)
    raise typer.Exit(verify_exit_code(result))


def _display(*, quiet: bool, interval_s: float) -> Display:
    checks = CheckProgressSink(sys.stderr, interval_s=interval_s, quiet=quiet, list_damaged=False)
    return WithChecks(make_display(json_out=False, quiet=quiet, interval_s=interval_s), checks)


def _report(result: VerifyResult, *, json_out: bool) -> None:
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
