"""The transfer commands: ``plan``, ``download``, ``datasets`` and ``demo``; the display,
the confirmation prompt and signal handling around a run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from ..adopt import Adoption
from ..catalog import (
    DEFAULT_VERSION,
    normalise_version,
)
from ..config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_STALL_TIMEOUT_S,
    Credentials,
    Options,
    build_options,
    check_output_directory,
    parse_endpoint,
)
from ..dashboard import CheckProgressSink, Dashboard
from ..demo import demo_release, mismatches
from ..downloading import DownloadResult, free_bytes, plan_readonly, run_download
from ..engine import Engine
from ..errors import (
    Ego4dDLError,
)
from ..events import Event, discard
from ..families.ego4d import list_dataset_rows
from ..formatting import human_bytes
from ..jsonforms import plan_json
from ..planned import Plan
from ..render import confirmation_text, render_datasets, render_plan, render_summary, shown
from ..session import open_store
from ..sinks import Display, JsonLinesSink, PlainProgressSink
from ..store import S3Store
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
    stderr_console,
    stdout_console,
    warn,
    write_stdout,
)
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
    print_warnings,
    typed_values,
)
from .prompt import ask_yes_no

__all__ = [
    "WithChecks",
    "make_display",
    "on_signals",
    "print_adoption",
    "stop_engine_on_signals",
]

# "\b" keeps click from rewrapping the examples; each fits in 80 columns.
_DOWNLOAD_EPILOG = """\b
Output: a live dashboard in a terminal; in logs and pipes, a plain progress
line on stderr every --progress-interval seconds. The summary goes to
stdout, errors and warnings to stderr. Exit codes: 0 all verified, 1 some
failed, 2 usage, 3 credentials, 130 interrupted (run it again to resume).

\b
Unattended (cron, Slurm): no prompt, a progress line a minute:
  ego4d-dl download -o ~/ego4d_data --datasets annotations --yes \\
      --progress-interval 60 > summary.txt 2> progress.log
"""


class WithChecks:
    """A display that also shows the progress of reading files back (verify, adoption)."""

    def __init__(self, display: Display, checks: CheckProgressSink) -> None:
        self._display = display
        self._checks = checks

    def __call__(self, event: Event) -> None:
        self._display(event)
        self._checks(event)

    def expect(self, plan: Plan) -> None:
        self._display.expect(plan)

    def note(self, message: str) -> None:
        self._display.note(message)

    def close(self) -> None:
        self._checks.close()
        self._display.close()


def print_adoption(adoption: Adoption) -> None:
    if adoption.adopted_files:
        origin = " (left by the original ego4d CLI)" if adoption.original_cli else ""
        how = (
            "checked against their ETags"
            if adoption.checked_files
            else "taken at their size (--verify size)"
        )
        if adoption.from_journals and not adoption.checked_files:
            how = "known complete to another journal"
        stderr_console.print(
            f"adopted {adoption.adopted_files:,} files ({human_bytes(adoption.adopted_bytes)}) "
            f"already on disk{origin}, {how}; not downloaded again"
        )
    if adoption.rejected_files:
        warn(
            f"{adoption.rejected_files:,} files on disk had the right size "
            "but not the right bytes; they are downloaded again"
        )
    if adoption.leftovers_removed:
        stderr_console.print(
            f"removed {adoption.leftovers_removed:,} temporary files left by the original CLI "
            f"({human_bytes(adoption.leftover_bytes)})"
        )


@app.command("plan", short_help="What a download would fetch: files, sizes, free space.")
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


def stdout_is_terminal() -> bool:
    """Whether the live dashboard may draw: stdout is an interactive, capable terminal."""
    return (
        sys.stdout.isatty() and stdout_console.is_terminal and not stdout_console.is_dumb_terminal
    )


class OutputGuard:
    """Ends a download whose progress or JSON output cannot be written (``> /dev/full``, a
    pipe whose reader left, a closed stream): the sinks report the first failure here (from
    any thread); before the engine starts the download is not begun, during the run the
    engine is stopped as by a first Ctrl-C (the journal keeps every completed range), and the
    command then exits 1 with an ``error:`` line. A broken pipe (``| head``) ends it the same
    way: nobody reads the progress any more, and a run that goes on unseen must not end in a
    silent 0 either."""

    def __init__(self) -> None:
        self.error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: Callable[[], object] | None = None

    def __call__(self, error: str) -> None:
        if self.error is not None:
            return
        self.error = error
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(stop)

    def arm(self, stop: Callable[[], object]) -> None:
        """From the event loop: what to call when the output fails from now on."""
        self._loop, self._stop = asyncio.get_running_loop(), stop
        if self.error is not None:
            stop()


def make_display(
    *, json_out: bool, quiet: bool, interval_s: float, on_output_error: OutputGuard | None = None
) -> Display:
    """Where each kind of output goes (see the README's "Output and dashboard"):

    ``--json``: every event as a JSON line on stdout, and nothing else there. A terminal on
    stdout: the live dashboard there. Otherwise (logs, pipes) or ``--quiet``: plain lines on
    stderr, progress every ``interval_s`` and warnings as they happen (``--quiet``: failed
    files only). The summary goes to stdout after the run, errors to stderr, in every mode.
    """
    if json_out:
        return JsonLinesSink(
            sys.stdout, interval_s=interval_s, log=sys.stderr, on_output_error=on_output_error
        )
    if not quiet and stdout_is_terminal():
        # A console of its own: unlike stdout_console it wraps and crops to the terminal's width.
        return Dashboard(Console(highlight=False), redirect_stderr=sys.stderr.isatty())
    return PlainProgressSink(
        sys.stderr, interval_s=interval_s, quiet=quiet, on_output_error=on_output_error
    )


async def confirm_download(plan: Plan, *, assume_yes: bool, quiet: bool) -> bool:
    """Show what will happen (size, file count, free space, what resumes); ask unless --yes.

    The answer may come from a terminal or a pipe (``yes | ego4d-dl ...``), as with the
    original CLI; end of input is ``NoAnswerError`` (exit 1).
    """
    text = confirmation_text(plan, free_bytes=free_bytes(plan.output_directory))
    if assume_yes:
        if not quiet:
            stderr_console.print(Text(text + "\nStarting (--yes)."))
        return True
    return await ask_yes_no(text + "\nStart the download? [Y/n] ")


def on_signals(
    stop: Callable[[], object],
    message: str,
    say: Callable[[str], None],
    *,
    before_exit: Callable[[], object] | None = None,
) -> None:
    """First SIGINT or SIGTERM: ``say`` the message and call ``stop``. A second: exit at once,
    after ``before_exit`` (``demo``: remove the sandbox, which no ``finally`` will).

    Replaces any earlier handlers (each phase of a run stops in its own way); runs as a loop
    callback, so ``stop`` may touch asyncio objects.
    """
    loop = asyncio.get_running_loop()
    hits = 0

    def handler() -> None:
        nonlocal hits
        hits += 1
        if hits > 1:
            # The journal only ever records synced bytes, so leaving now loses nothing but
            # the ranges in flight. Give the terminal its cursor back (the dashboard hid it).
            if sys.stdout.isatty():
                os.write(sys.stdout.fileno(), b"\x1b[?25h\n")
            if before_exit is not None:
                before_exit()
            os._exit(EXIT_INTERRUPTED)
        say(message)
        stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)


def stop_planning_on_signals(
    display: Display, *, before_exit: Callable[[], object] | None = None
) -> None:
    """Until the engine runs, the first signal cancels the whole command."""
    task = asyncio.current_task()
    if task is not None:
        on_signals(
            task.cancel,
            "stopping (Ctrl-C again to quit at once)",
            display.note,
            before_exit=before_exit,
        )


def stop_engine_on_signals(
    display: Display, *, before_exit: Callable[[], object] | None = None
) -> Callable[[Engine], None]:
    """For ``run_download``'s ``on_engine``: the first Ctrl-C or SIGTERM stops scheduling,
    cancels requests in flight and flushes the journal (then the summary); a second leaves
    at once (after ``before_exit``)."""

    def install(engine: Engine) -> None:
        on_signals(
            engine.stop,
            "stopping: cancelling requests in flight and saving progress "
            "(Ctrl-C again to quit at once)",
            display.note,
            before_exit=before_exit,
        )

    return install


def download_exit_code(result: DownloadResult) -> int:
    summary = result.summary
    if summary is None:
        return EXIT_OK
    if summary.stop_kind == "credentials":
        return EXIT_CREDENTIALS
    if summary.stop_kind == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_FAILED


@app.command(
    "download",
    short_help="Download, verify, resume (the default command).",
    epilog=_DOWNLOAD_EPILOG,
)
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
        if summary.stop_kind == "interrupted":
            stderr_console.print(
                f"interrupted: {summary.verified + summary.skipped:,} files complete, "
                "resume with the same command"
            )
        elif summary.stop_kind == "credentials":
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


@app.command("datasets", short_help="List the datasets of a release.")
def datasets_command(
    ctx: typer.Context,
    version: Version = None,
    aws_profile_name: Profile = None,
    endpoint_url: EndpointUrl = None,
    json_out: JsonOut = False,
) -> None:
    """List the datasets of a release (its datasets.csv)."""
    try:
        release = normalise_version(version or DEFAULT_VERSION)
        endpoint = parse_endpoint(endpoint_url)
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    credentials = Credentials(profile=aws_profile_name)

    async def go() -> list[tuple[str, str]]:
        async with S3Store(
            credentials=credentials, endpoint=endpoint, max_connections=4, stall_timeout_s=30
        ) as store:
            return await list_dataset_rows(store, release)

    rows = run_async(go, credentials=credentials)
    if json_out:
        doc = [{"dataset": n, "description": d} for n, d in rows]
        write_stdout(json.dumps(doc, indent=1) + "\n")
    else:
        render_datasets(stdout_console, release, rows)


@app.command("demo", short_help="A real download from a local S3 sandbox; no credentials needed.")
def demo_command(
    output_directory: Annotated[
        Path | None,
        typer.Option(
            "--output-directory",
            "--output_directory",
            "-o",
            metavar="DIR",
            help="Where the demo download goes [default: a new temporary folder].",
            show_default=False,
        ),
    ] = None,
    concurrency: Concurrency = None,
) -> None:
    """Start a local S3 server (SeaweedFS on 127.0.0.1), seed it with a small fake Ego4D
    release (about 110 MiB), download all of it as `download` would, check every file
    against what the server holds, and stop the server. Shows the live dashboard in a
    terminal, plain lines otherwise."""
    out = (output_directory or Path(tempfile.mkdtemp(prefix="ego4d-dl-demo-"))).expanduser()
    try:
        check_output_directory(out.absolute(), create=True)
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    out = out.absolute()
    sink = make_display(json_out=False, quiet=False, interval_s=1.0)

    async def confirm(plan: Plan) -> bool:
        render_plan(stdout_console, plan, free_bytes=free_bytes(out))
        sink.expect(plan)
        return True

    async def go(options: Options, stop_sandbox: Callable[[], object]) -> DownloadResult:
        # A second Ctrl-C leaves through os._exit: no finally runs, so it stops the sandbox.
        stop_planning_on_signals(sink, before_exit=stop_sandbox)
        try:
            return await run_download(
                options,
                sink=sink,
                confirm=confirm,
                on_engine=stop_engine_on_signals(sink, before_exit=stop_sandbox),
            )
        finally:
            sink.close()

    stderr_console.print(
        "starting the local S3 sandbox (SeaweedFS on 127.0.0.1) and seeding it ..."
    )
    try:
        with demo_release(out, concurrency=concurrency or DEFAULT_CONCURRENCY) as demo:
            stderr_console.print(shown(f"sandbox at {demo.endpoint_url}; downloading into {out}"))
            result = run_async(
                lambda: go(demo.options, demo.stop), credentials=demo.options.credentials
            )
            bad = mismatches(out, demo.expected_md5)
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    stderr_console.print("sandbox stopped")
    summary = result.summary
    if summary is not None:
        render_summary(stdout_console, summary)
    code = download_exit_code(result)
    if summary is not None and summary.stop_kind == "interrupted":
        stderr_console.print(f"interrupted: {summary.verified + summary.skipped:,} files complete")
        raise typer.Exit(code)
    if bad:
        fail(f"{len(bad)} files differ from what the sandbox served: {', '.join(bad[:5])}", 1)
    stdout_console.print(
        shown(
            f"all {len(demo.expected_md5)} files are byte-identical to the sandbox's source; "
            f"they are in {out}"
        )
    )
    raise typer.Exit(code)
