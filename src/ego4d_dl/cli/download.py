"""The ``download`` command (the default) and ``plan``: plan, confirm, transfer, summarise."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from ..config import DEFAULT_STALL_TIMEOUT_S, Options, build_options, check_output_directory
from ..downloading import DownloadResult, free_bytes, plan_readonly
from ..errors import Ego4dDLError
from ..events import RunSummary, StopKind, discard
from ..jsonforms import plan_json
from ..planned import Plan
from ..processes import Stoppable
from ..processes import download as run_download
from ..readback_view import CheckProgressSink
from ..render import render_plan, render_summary
from ..session import open_store
from .console import fail, print_warnings, run_async, stderr_console, stdout_console, write_stdout
from .datasets import datasets_command
from .display import OutputGuard, WithChecks, make_display, print_adoption
from .options import (
    Benchmarks,
    BypassExisting,
    Concurrency,
    ConfigPath,
    Datasets,
    DryRun,
    EndpointUrl,
    JsonOut,
    ListDatasets,
    ManifestOverride,
    MaxBandwidth,
    Metadata,
    NoSpaceCheck,
    OutputDirectory,
    Processes,
    Profile,
    ProgressInterval,
    Quiet,
    ReleaseManifest,
    ShardOption,
    SkipS3Checks,
    StallTimeout,
    Universities,
    VerifyMode,
    Version,
    VideoUidFile,
    VideoUids,
    Yes,
    gather_options,
    typed_values,
)
from .outcome import EXIT_FAILED, EXIT_OK, EXIT_USAGE, download_exit_code, exit_code_for
from .prompt import confirm_download
from .signals import stop_engine_on_signals, stop_planning_on_signals

__all__ = ["DOWNLOAD_EPILOG", "download_command", "plan_command"]


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
    dry_run: DryRun = True,
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
    manifest: ReleaseManifest = False,
    metadata: Metadata = True,
    verify: VerifyMode = "etag",
    stall_timeout: StallTimeout = DEFAULT_STALL_TIMEOUT_S,
    no_space_check: NoSpaceCheck = False,
    dry_run: DryRun = False,
    skip_s3_checks: SkipS3Checks = False,
    bypass_existing: BypassExisting = False,
    list_datasets: ListDatasets = False,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    progress_interval: ProgressInterval = 10.0,
    shard: ShardOption = None,
    max_bandwidth: MaxBandwidth = None,
    processes: Processes = None,
) -> None:
    """Download datasets: plan, confirm, fetch concurrently, verify every file, resume later."""
    try:
        # The original's switches may come from its config file too.
        values = typed_values(ctx)
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    if values.get("list_datasets"):
        _invoke_with(ctx, datasets_command, values, "version", "aws_profile_name", "endpoint_url")
        return
    _note_ignored_switches(values)
    if dry_run:
        _invoke_with(ctx, plan_command, ctx.params, *_PLAN_PARAMS)
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
    run = _DownloadRun(
        options,
        json_out=json_out,
        quiet=quiet,
        interval_s=progress_interval,
        space_check=not no_space_check,
    )
    raise typer.Exit(run.report(run.execute()))


_PLAN_PARAMS = (
    "output_directory",
    "datasets",
    "benchmarks",
    "version",
    "aws_profile_name",
    "video_uids",
    "video_uid_file",
    "universities",
    "config",
    "endpoint_url",
    "concurrency",
    "manifest_override_path",
    "shard",
)


def _invoke_with(ctx: typer.Context, command: Any, values: dict[str, Any], *names: str) -> None:
    """Run another command with the named parameters of this one (``--dry-run``: ``plan``)."""
    ctx.invoke(command, ctx=ctx, **{n: values.get(n) for n in names}, json_out=values["json_out"])


def _note_ignored_switches(values: dict[str, Any]) -> None:
    if values.get("skip_s3_checks"):
        print_warnings(["--skip-s3-checks is ignored: objects are always looked up, by listing"])
    if values.get("bypass_existing"):
        print_warnings(
            ["--bypass-existing is ignored: complete files are skipped by journal or size"]
        )


class _DownloadRun:
    """One download as the command line runs it: its display, question, signals and output
    guard around ``downloading.run_download``, then what it tells the user and its exit code."""

    def __init__(
        self, options: Options, *, json_out: bool, quiet: bool, interval_s: float, space_check: bool
    ) -> None:
        self.options = options
        self.json_out, self.quiet, self.space_check = json_out, quiet, space_check
        self.guard = OutputGuard()
        sink = make_display(
            json_out=json_out, quiet=quiet, interval_s=interval_s, on_output_error=self.guard
        )
        if not json_out:
            checks = CheckProgressSink(sys.stderr, interval_s=interval_s, quiet=quiet)
            sink = WithChecks(sink, checks)
        self.sink = sink
        self.warned = False
        self._on_signal = stop_engine_on_signals(sink)

    async def confirm(self, plan: Plan) -> bool:
        # Skipped rows and unknown UIDs belong before the question, not under the summary.
        print_warnings(plan.warnings)
        self.warned = True
        self.sink.expect(plan)
        if self.guard.error is not None:
            return False  # the output broke while planning: do not begin unseen
        return await confirm_download(plan, assume_yes=self.options.assume_yes, quiet=self.quiet)

    def on_engine(self, engine: Stoppable) -> None:
        self._on_signal(engine)
        self.guard.arm(engine.stop)

    async def go(self) -> DownloadResult:
        stop_planning_on_signals(self.sink)
        try:
            return await run_download(
                self.options,
                sink=self.sink,
                confirm=self.confirm,
                on_engine=self.on_engine,
                space_check=self.space_check,
            )
        finally:
            self.sink.close()

    def execute(self) -> DownloadResult:
        return run_async(self.go, credentials=self.options.credentials)

    def report(self, result: DownloadResult) -> int:
        """Tell how the run ended (stdout: the summary; stderr: the rest); the exit code."""
        summary = result.summary
        if self.guard.error is not None:
            done = summary.verified + summary.skipped if summary else 0
            fail(
                f"{self.guard.error}; the download stopped ({done:,} files complete): run the "
                "same command to resume",
                EXIT_FAILED,
            )
        if not self.warned:
            print_warnings(result.plan.warnings)
        print_warnings(result.notes)
        if result.adoption is not None and not (self.json_out or self.quiet):
            print_adoption(result.adoption)
        if result.release_manifest is not None and not self.quiet:
            stderr_console.print(f"Manifest downloaded: {result.release_manifest}", markup=False)
        if result.declined:
            stderr_console.print("Aborting the download operation.")
        elif summary is not None and not self.json_out:
            render_summary(stdout_console, summary)
        code = download_exit_code(result)
        if summary is not None and summary.stopped_by:
            self._stopped(summary, code)
        malformed = sum(len(d.malformed) for d in result.plan.datasets)
        if summary is not None and malformed and code == EXIT_OK:
            # Requested rows that could not even be planned are files not downloaded: the exit
            # code must not say "all complete" (users' scripts check it, not the warnings).
            fail(
                f"{malformed:,} manifest rows were skipped as malformed (see the warning "
                "above); everything else is complete",
                EXIT_FAILED,
            )
        return code

    def _stopped(self, summary: RunSummary, code: int) -> None:
        if summary.stop_kind is StopKind.INTERRUPTED:
            stderr_console.print(
                f"interrupted: {summary.verified + summary.skipped:,} files complete, "
                "resume with the same command"
            )
            return
        stopped_by = summary.stopped_by or ""
        if summary.stop_kind is StopKind.CREDENTIALS:
            fail(
                f"{stopped_by} (using {self.options.credentials.label}). Ego4D and Ego-Exo4D "
                "keys expire after 14 days; renew them and run the same command to resume.",
                code,
            )
        # Disk-full messages already say how to resume; say it once.
        hint = "" if "resume" in stopped_by else "; run the same command to resume"
        fail(f"{stopped_by}{hint}", code)
