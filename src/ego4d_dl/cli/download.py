"""The ``download`` command (the default) and ``plan``: plan, confirm, transfer, summarise."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from ..config import DEFAULT_STALL_TIMEOUT_S, build_options, check_output_directory
from ..dashboard import CheckProgressSink
from ..downloading import DownloadResult, free_bytes, plan_readonly, run_download
from ..engine.core import Engine
from ..errors import Ego4dDLError
from ..events import StopKind, discard
from ..jsonforms import plan_json
from ..planned import Plan
from ..render import render_plan, render_summary
from ..session import open_store
from .console import fail, print_warnings, run_async, stderr_console, stdout_console, write_stdout
from .datasets import datasets_command
from .display import OutputGuard, WithChecks, make_display, print_adoption
from .options import (
    Benchmarks,
    Concurrency,
    ConfigPath,
    Datasets,
    EndpointUrl,
    JsonOut,
    ManifestOverride,
    MaxBandwidth,
    OutputDirectory,
    Profile,
    ShardOption,
    Universities,
    Version,
    VideoUidFile,
    VideoUids,
    gather_options,
    typed_values,
)
from .outcome import EXIT_FAILED, EXIT_OK, EXIT_USAGE, download_exit_code, exit_code_for
from .prompt import confirm_download
from .signals import stop_engine_on_signals, stop_planning_on_signals

__all__ = ["download_command", "plan_command"]


# "\b" keeps click from rewrapping the examples; each fits in 80 columns.
DOWNLOAD_EPILOG = """\b
Output: a live dashboard in a terminal; in logs and pipes, a plain progress
line on stderr every --progress-interval seconds. The summary goes to
stdout, errors and warnings to stderr. Exit codes: 0 all verified, 1 some
failed, 2 usage, 3 credentials, 130 interrupted (run it again to resume).

\b
Unattended (cron, Slurm): no prompt, a progress line a minute:
  ego4d-dl download -o ~/ego4d_data --datasets annotations --yes \\
      --progress-interval 60 > summary.txt 2> progress.log
"""


def plan_command(
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
    manifest_override_path: ManifestOverride = None,
    json_out: JsonOut = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Accepted for clarity: plan never downloads [default: on]."),
    ] = True,
    shard: ShardOption = None,
) -> None:
    """Show what a download would fetch: files, sizes, what is already on disk, free space."""
    try:
        options, warnings = gather_options(ctx)
        check_output_directory(options.output_directory, create=False)
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    print_warnings(warnings)

    async def go() -> Plan:
        async with open_store(options, lookups=True) as store:
            return await plan_readonly(options, store, sink=discard, running_ok=True)

    plan = run_async(go, credentials=options.credentials)
    print_warnings(plan.warnings)
    free = free_bytes(options.output_directory)
    if json_out:
        write_stdout(json.dumps(plan_json(plan, free_bytes=free), indent=1) + "\n")
    else:
        render_plan(stdout_console, plan, free_bytes=free)


Yes = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Start without the confirmation prompt [default: ask]."),
]


def download_command(
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
    manifest_override_path: ManifestOverride = None,
    yes: Yes = False,
    manifest: Annotated[
        bool,
        typer.Option(
            "--manifest",
            help="Also keep the release's full_scale manifest as DIR/manifest.csv, as the "
            "original CLI; the download goes on [default: off].",
        ),
    ] = False,
    metadata: Annotated[
        bool,
        typer.Option("--metadata/--no-metadata", help="Also fetch the release's ego4d.json."),
    ] = True,
    verify: Annotated[
        str,
        typer.Option(
            "--verify",
            metavar="etag|size",
            help="etag: check every file's MD5 or multipart ETag; size: sizes only.",
        ),
    ] = "etag",
    stall_timeout: Annotated[
        float,
        typer.Option(
            "--stall-timeout",
            metavar="SECONDS",
            help="Seconds without a byte before a request is retried.",
        ),
    ] = DEFAULT_STALL_TIMEOUT_S,
    no_space_check: Annotated[
        bool,
        typer.Option(
            "--no-space-check", help="Start even if free space looks too small [default: check]."
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Only show the plan, as `ego4d-dl plan` [default: off]."),
    ] = False,
    # The original CLI's own switches, accepted so that its command lines keep working.
    skip_s3_checks: Annotated[bool, typer.Option("--skip-s3-checks", hidden=True)] = False,
    bypass_existing: Annotated[bool, typer.Option("--bypass-existing", hidden=True)] = False,
    list_datasets: Annotated[bool, typer.Option("--list-datasets", hidden=True)] = False,
    json_out: JsonOut = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="Only errors, warnings and the summary [default: off]."),
    ] = False,
    progress_interval: Annotated[
        float,
        typer.Option(
            "--progress-interval",
            metavar="SECONDS",
            help="Seconds between progress lines in logs and pipes (and --json).",
        ),
    ] = 10.0,
    shard: ShardOption = None,
    max_bandwidth: MaxBandwidth = None,
) -> None:
    """Download datasets: plan, confirm, fetch concurrently, verify every file, resume later."""
    try:
        # The original's switches may come from its config file too.
        values = typed_values(ctx)
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    if values.get("list_datasets"):
        ctx.invoke(
            datasets_command,
            ctx=ctx,
            version=values.get("version"),
            aws_profile_name=values.get("aws_profile_name"),
            endpoint_url=values.get("endpoint_url"),
            json_out=json_out,
        )
        return
    if values.get("skip_s3_checks"):
        print_warnings(["--skip-s3-checks is ignored: objects are always looked up, by listing"])
    if values.get("bypass_existing"):
        print_warnings(
            ["--bypass-existing is ignored: complete files are skipped by journal or size"]
        )
    if dry_run:
        ctx.invoke(
            plan_command,
            ctx=ctx,
            output_directory=output_directory,
            datasets=datasets,
            benchmarks=benchmarks,
            version=version,
            aws_profile_name=aws_profile_name,
            video_uids=video_uids,
            video_uid_file=video_uid_file,
            universities=universities,
            config=config,
            endpoint_url=endpoint_url,
            concurrency=concurrency,
            manifest_override_path=manifest_override_path,
            json_out=json_out,
            shard=shard,
        )
        return
    try:
        options, warnings = build_options(values)
        # Created only once the user says yes (run_download): a "no" changes nothing.
        check_output_directory(options.output_directory, create=False)
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    print_warnings(warnings)
    if progress_interval <= 0:
        fail(f"--progress-interval must be positive, not {progress_interval:g}", EXIT_USAGE)
    guard = OutputGuard()
    sink = make_display(
        json_out=json_out, quiet=quiet, interval_s=progress_interval, on_output_error=guard
    )
    if not json_out:
        checks = CheckProgressSink(sys.stderr, interval_s=progress_interval, quiet=quiet)
        sink = WithChecks(sink, checks)

    warned = False

    async def confirm(plan: Plan) -> bool:
        nonlocal warned
        # Skipped rows and unknown UIDs belong before the question, not under the summary.
        print_warnings(plan.warnings)
        warned = True
        sink.expect(plan)
        if guard.error is not None:
            return False  # the output broke while planning: do not begin unseen
        return await confirm_download(plan, assume_yes=options.assume_yes, quiet=quiet)

    on_signal = stop_engine_on_signals(sink)

    def on_engine(engine: Engine) -> None:
        on_signal(engine)
        guard.arm(engine.stop)

    async def go() -> DownloadResult:
        stop_planning_on_signals(sink)
        try:
            return await run_download(
                options,
                sink=sink,
                confirm=confirm,
                on_engine=on_engine,
                space_check=not no_space_check,
            )
        finally:
            sink.close()

    result = run_async(go, credentials=options.credentials)
    if guard.error is not None:
        done = result.summary.verified + result.summary.skipped if result.summary else 0
        fail(
            f"{guard.error}; the download stopped ({done:,} files complete): run the same "
            "command to resume",
            EXIT_FAILED,
        )
    if not warned:
        print_warnings(result.plan.warnings)
    print_warnings(result.notes)
    if result.adoption is not None and not (json_out or quiet):
        print_adoption(result.adoption)
    summary = result.summary
    if result.release_manifest is not None and not quiet:
        stderr_console.print(f"Manifest downloaded: {result.release_manifest}", markup=False)
    if result.declined:
        stderr_console.print("Aborting the download operation.")
    elif summary is not None and not json_out:
        render_summary(stdout_console, summary)
    code = download_exit_code(result)
    if summary is not None and summary.stopped_by:
        if summary.stop_kind is StopKind.INTERRUPTED:
            stderr_console.print(
                f"interrupted: {summary.verified + summary.skipped:,} files complete, "
                "resume with the same command"
            )
        elif summary.stop_kind is StopKind.CREDENTIALS:
            fail(
                f"{summary.stopped_by} (using {options.credentials.label}). Ego4D keys expire "
                "after 14 days; renew them and run the same command to resume.",
                code,
            )
        else:
            # Disk-full messages already say how to resume; say it once.
            hint = "" if "resume" in summary.stopped_by else "; run the same command to resume"
            fail(f"{summary.stopped_by}{hint}", code)
    malformed = sum(len(d.malformed) for d in result.plan.datasets)
    if summary is not None and malformed and code == EXIT_OK:
        # Requested rows that could not even be planned are files not downloaded: the exit
        # code must not say "all complete" (users' scripts check it, not the warnings).
        fail(
            f"{malformed:,} manifest rows were skipped as malformed (see the warning above); "
            "everything else is complete",
            EXIT_FAILED,
        )
    raise typer.Exit(code)
