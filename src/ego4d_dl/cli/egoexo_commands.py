"""``egoexo-dl``'s commands: the original ``egoexo`` flags over ego4d-dl's own command runs."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.text import Text

from ..config import DEFAULT_STALL_TIMEOUT_S, Options, check_output_directory
from ..doctor import diagnose
from ..downloading import free_bytes, plan_readonly
from ..errors import ConfigError, Ego4dDLError
from ..events import discard
from ..families.egoexo import egoexo_options
from ..jsonforms import doctor_json, plan_json, status_json
from ..planned import Plan
from ..render import render_doctor, render_plan, render_status
from ..session import open_store
from ..status import collect_status
from ..strays import Strays, find_strays, remove_strays
from .console import fail, print_warnings, run_async, stderr_console, stdout_console, write_stdout
from .demo import run_demo
from .download import _DownloadRun
from .egoexo_options import (
    BaseDir,
    Benchmarks,
    Delete,
    DeleteYes,
    Force,
    NumWorkers,
    OutDir,
    Parts,
    Release,
    S3Profile,
    Splits,
    Uids,
    Universities,
    Views,
)
from .options import (
    DryRun,
    EndpointUrl,
    JsonOut,
    MaxBandwidth,
    NoSpaceCheck,
    ProgressInterval,
    Quiet,
    ShardOption,
    StallTimeout,
    VerifyMode,
    Yes,
)
from .outcome import (
    doctor_exit_code,
    exit_code_for,
)
from .verify import Interval, Jobs, QuietChecks, Repair, RepairSpaceCheck, run_verify_command

__all__ = [
    "demo_command",
    "doctor_command",
    "download_command",
    "plan_command",
    "status_command",
    "verify_command",
]


def _options(values: dict[str, Any], *, quiet: bool = False) -> Options:
    """Validated options from the command's values; warnings and notes shown (stderr)."""
    try:
        options, warnings, notes = egoexo_options(values)
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    print_warnings(warnings)
    if not quiet:
        for note in notes:
            stderr_console.print(Text(f"note: {note}"))
    return options


_SHOWN_STRAYS = 20


def _show_strays(strays: Strays, console: Any) -> None:
    for folder in strays.linked_folders:
        console.print(Text(f"--delete: {folder}/ is reached through a link; nothing in it goes"))
    if not strays.files:
        console.print(Text("--delete: nothing to remove"))
        return
    console.print(
        Text(
            f"--delete: {len(strays.files):,} files in the selected parts' folders are named "
            "by no selected manifest path and would be removed:"
        )
    )
    for rel in strays.files[:_SHOWN_STRAYS]:
        console.print(Text(f"  delete {rel}"))
    if len(strays.files) > _SHOWN_STRAYS:
        console.print(Text(f"  ... and {len(strays.files) - _SHOWN_STRAYS:,} more"))


def _plan(options: Options, *, delete: bool, json_out: bool) -> None:
    """``plan`` (and ``download --dry-run``): the plan and, with ``--delete``, what goes."""
    try:
        check_output_directory(options.output_directory, create=False)
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))

    async def go() -> Plan:
        async with open_store(options, lookups=True) as store:
            return await plan_readonly(options, store, sink=discard, running_ok=True)

    plan = run_async(go, credentials=options.credentials)
    print_warnings(plan.warnings)
    strays = find_strays(plan) if delete and options.output_directory.is_dir() else None
    free = free_bytes(options.output_directory)
    if json_out:
        doc = plan_json(plan, free_bytes=free)
        if delete:
            doc["delete"] = [str(p) for p in strays.files] if strays else []
        write_stdout(json.dumps(doc, indent=1) + "\n")
        return
    render_plan(stdout_console, plan, free_bytes=free)
    if strays is not None:
        _show_strays(strays, stdout_console)


def plan_command(
    ctx: typer.Context,
    out_dir: OutDir = None,
    parts: Parts = None,
    uids: Uids = None,
    benchmarks: Benchmarks = None,
    splits: Splits = None,
    views: Views = None,
    universities: Universities = None,
    num_workers: NumWorkers = None,
    release: Release = None,
    s3_profile: S3Profile = None,
    base_dir: BaseDir = None,
    endpoint_url: EndpointUrl = None,
    delete: Delete = False,
    json_out: JsonOut = False,
    shard: ShardOption = None,
    dry_run: DryRun = True,
) -> None:
    """Show what a download would fetch: files, sizes, what is on disk, free space; with
    --delete, every file it would remove."""
    options = _options(ctx.params, quiet=json_out)
    _plan(options, delete=delete, json_out=json_out)


def _ask_delete(count: int) -> bool:
    """The original's deletion question; anything but yes (end of input too) is no."""
    sys.stderr.write(f"Remove these {count:,} files? (y/[n]): ")
    sys.stderr.flush()
    answer = sys.stdin.readline() if sys.stdin is not None else ""
    if not answer:
        sys.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


def _delete(plan: Plan, *, assume_yes: bool, quiet: bool) -> None:
    """``--delete`` after a download: list the strays, ask unless ``--delete_yes``, remove."""
    strays = find_strays(plan)
    if not strays.files and quiet:
        return
    _show_strays(strays, stderr_console)
    if not strays.files:
        return
    if not assume_yes and not _ask_delete(len(strays.files)):
        stderr_console.print("--delete: nothing removed")
        return
    removed = remove_strays(strays)
    stderr_console.print(Text(f"--delete: removed {len(removed):,} files"))


def download_command(
    ctx: typer.Context,
    out_dir: OutDir = None,
    parts: Parts = None,
    uids: Uids = None,
    benchmarks: Benchmarks = None,
    splits: Splits = None,
    views: Views = None,
    universities: Universities = None,
    num_workers: NumWorkers = None,
    yes: Yes = False,
    force: Force = False,
    delete: Delete = False,
    delete_yes: DeleteYes = False,
    release: Release = None,
    s3_profile: S3Profile = None,
    base_dir: BaseDir = None,
    endpoint_url: EndpointUrl = None,
    verify: VerifyMode = "etag",
    stall_timeout: StallTimeout = DEFAULT_STALL_TIMEOUT_S,
    no_space_check: NoSpaceCheck = False,
    dry_run: DryRun = False,
    json_out: JsonOut = False,
    quiet: Quiet = False,
    progress_interval: ProgressInterval = 10.0,
    shard: ShardOption = None,
    max_bandwidth: MaxBandwidth = None,
) -> None:
    """Download parts of Ego-Exo4D: plan, confirm, fetch concurrently, verify every file
    (ETag, and the manifest's size), resume later; --delete removes what is no longer listed."""
    options = _options(ctx.params, quiet=quiet or json_out)
    if dry_run:
        _plan(options, delete=delete, json_out=json_out)
        return
    try:
        check_output_directory(options.output_directory, create=False)
        if delete and options.shard is not None:
            raise ConfigError("--delete needs the whole selection: run it without --shard")
        if progress_interval <= 0:
            raise ConfigError(f"--progress-interval must be positive, not {progress_interval:g}")
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    if force:
        print_warnings(
            [
                "--force: files verified against their ETags are not fetched again; "
                "`egoexo-dl verify --repair` reads every file back and refetches what differs"
            ]
        )
    run = _DownloadRun(
        options,
        json_out=json_out,
        quiet=quiet,
        interval_s=progress_interval,
        space_check=not no_space_check,
    )
    result = run.execute()
    code = run.report(result)
    if delete and not result.declined and result.summary is not None:
        _delete(result.plan, assume_yes=delete_yes, quiet=quiet)
    raise typer.Exit(code)


def verify_command(
    ctx: typer.Context,
    out_dir: OutDir = None,
    parts: Parts = None,
    uids: Uids = None,
    benchmarks: Benchmarks = None,
    splits: Splits = None,
    views: Views = None,
    universities: Universities = None,
    num_workers: NumWorkers = None,
    release: Release = None,
    s3_profile: S3Profile = None,
    base_dir: BaseDir = None,
    endpoint_url: EndpointUrl = None,
    shard: ShardOption = None,
    repair: Repair = False,
    jobs: Jobs = None,
    max_bandwidth: MaxBandwidth = None,
    no_space_check: RepairSpaceCheck = False,
    json_out: JsonOut = False,
    quiet: QuietChecks = False,
    progress_interval: Interval = 10.0,
) -> None:
    """Read every downloaded file back and check it against its ETag; --repair refetches.
    Works on a folder the original `egoexo` filled too."""
    options = _options(ctx.params, quiet=quiet or json_out)
    run_verify_command(
        options,
        repair=repair,
        jobs=jobs,
        no_space_check=no_space_check,
        json_out=json_out,
        quiet=quiet,
        progress_interval=progress_interval,
    )


def status_command(
    ctx: typer.Context,
    out_dir: OutDir = None,
    parts: Parts = None,
    uids: Uids = None,
    benchmarks: Benchmarks = None,
    splits: Splits = None,
    views: Views = None,
    universities: Universities = None,
    release: Release = None,
    shard: ShardOption = None,
    json_out: JsonOut = False,
) -> None:
    """What every part has done: complete / partial / to fetch. Offline: reads the manifests
    a download saved, the journals and the disk; pass the download's filters to count as it
    did (every part with a saved manifest unless --parts)."""
    options = _options(ctx.params, quiet=True)
    try:
        status = collect_status(options, datasets_given=bool(parts))
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    print_warnings(status.warnings)
    if json_out:
        write_stdout(json.dumps(status_json(status), indent=1) + "\n")
    else:
        render_status(stdout_console, status)


def doctor_command(
    ctx: typer.Context,
    out_dir: OutDir = None,
    parts: Parts = None,
    uids: Uids = None,
    benchmarks: Benchmarks = None,
    splits: Splits = None,
    views: Views = None,
    universities: Universities = None,
    num_workers: NumWorkers = None,
    release: Release = None,
    s3_profile: S3Profile = None,
    base_dir: BaseDir = None,
    endpoint_url: EndpointUrl = None,
    shard: ShardOption = None,
    json_out: JsonOut = False,
) -> None:
    """Check profile, keys, clock, proxies, buckets, disk space and the output directory;
    exits 0 only when a download would start."""
    options = _options(ctx.params, quiet=json_out)
    diagnosis = run_async(lambda: diagnose(options), credentials=options.credentials)
    if json_out:
        write_stdout(json.dumps(doctor_json(diagnosis), indent=1) + "\n")
    else:
        render_doctor(stdout_console, diagnosis)
    raise typer.Exit(doctor_exit_code(diagnosis))


def demo_command(out_dir: OutDir = None, num_workers: NumWorkers = None) -> None:
    """Start a local S3 server (SeaweedFS on 127.0.0.1), seed it with a small fake Ego-Exo4D
    release (every part, about 13 MiB in ~200 files), download all of it as `download` would,
    check every file against what the server holds, and stop the server."""
    run_demo(out_dir, num_workers, family="egoexo")
