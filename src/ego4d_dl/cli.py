"""The ``ego4d-dl`` command line: Typer front end, seed-compatible flags, exit codes.

The only module that imports typer and the only one that exits. It accepts the original
``ego4d`` CLI's flags in both spellings (``--output_directory`` and ``--output-directory``),
its list form (``--datasets full_scale annotations``) and its JSON ``--config`` files; every
``Ego4dDLError`` becomes one line on stderr and an exit code:

    0 all requested files complete and verified     2 usage or configuration error
    1 some files failed, or the network is down     3 credentials rejected or expired
    130 interrupted
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

from .adopt import Adoption
from .bandwidth import parse_bandwidth
from .catalog import (
    DEFAULT_DATASETS,
    DEFAULT_VERSION,
    normalise_dataset,
    normalise_university,
    normalise_version,
)
from .config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_STALL_TIMEOUT_S,
    Credentials,
    Options,
    load_config_file,
    parse_endpoint,
    read_uid_file,
)
from .dashboard import CheckProgressSink, Dashboard
from .demo import demo_release, mismatches
from .doctor import Blame, Diagnosis, diagnose
from .download import DownloadResult, default_jobs, free_bytes, run_download
from .engine import Engine
from .errors import (
    ConfigError,
    CredentialsError,
    Ego4dDLError,
    ManifestError,
    PlanError,
)
from .events import Event, EventSink, discard
from .journal import DiskIndex, Journal, JournalIndex, journal_path
from .plan import Plan
from .planner import build_plan, list_dataset_rows
from .progress import Display, JsonLinesSink, PlainProgressSink
from .report import (
    confirmation_text,
    doctor_json,
    human_bytes,
    plan_json,
    render_datasets,
    render_doctor,
    render_plan,
    render_status,
    render_summary,
    render_verify,
    status_json,
    verify_json,
)
from .shard import format_shard, parse_shard
from .status import collect_status
from .store import S3Store
from .verify import VerifyResult, run_verify

__all__ = ["app", "main"]

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CREDENTIALS = 3
EXIT_INTERRUPTED = 130

# Options that take several values in the original CLI (argparse nargs="+").
_LIST_FLAGS = frozenset(
    {
        "--datasets",
        "--dataset",
        "--benchmarks",
        "--universities",
        "--video-uids",
        "--video_uids",
    }
)
_ROOT_FLAGS = frozenset({"--help", "-h"})


def expand_list_flags(args: Sequence[str]) -> list[str]:
    """``--datasets a b --yes`` -> ``--datasets a --datasets b --yes`` (argparse's nargs="+")."""
    out: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        out.append(token)
        i += 1
        if token in _LIST_FLAGS:
            first = True
            while i < len(args) and not (args[i].startswith("-") and len(args[i]) > 1):
                if not first:
                    out.append(token)
                out.append(args[i])
                first = False
                i += 1
    return out


class _SeedCompatibleGroup(TyperGroup):
    """Accepts the original CLI's command lines: no subcommand means ``download``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in _ROOT_FLAGS:
            args = ["download", *args]
        return super().parse_args(ctx, expand_list_flags(args))


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

_MAIN_HELP = """Download the Ego4D dataset: concurrent, resumable, every byte verified.

The original `ego4d` CLI's command lines work as they are; run the same command again after
an interruption and it resumes. Output: a live dashboard in a terminal, plain progress lines
in logs and pipes (stderr), the summary on stdout.

\b
Examples:
  # see the tool work first: a local S3 sandbox, no credentials (about 20 s)
  ego4d-dl demo
  # the original CLI's usage, unchanged
  ego4d-dl --output_directory ~/ego4d_data --datasets full_scale annotations
  # what would it fetch, how big, is there room? (downloads nothing)
  ego4d-dl plan -o ~/ego4d_data --datasets clips --benchmarks FHO

Run `ego4d-dl COMMAND --help` for a command's options.
"""

app = typer.Typer(
    cls=_SeedCompatibleGroup,
    name="ego4d-dl",
    help=_MAIN_HELP,
    no_args_is_help=True,
    # Click's plain help: it keeps every alias and "[default: ...]" legible at 80 columns.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int) -> NoReturn:
    _err.print(f"[bold red]error:[/] {message}", markup=True)
    raise typer.Exit(code)


def exit_code_for(exc: Ego4dDLError) -> int:
    """The exit code an error maps to (the table in this module's docstring)."""
    if isinstance(exc, CredentialsError):
        return EXIT_CREDENTIALS
    if isinstance(exc, ConfigError | ManifestError | PlanError):
        return EXIT_USAGE
    return EXIT_FAILED


def _run(make: Callable[[], Coroutine[Any, Any, T]], *, credentials: Credentials) -> T:
    """Run a coroutine; translate our errors into a message and an exit code."""
    try:
        return asyncio.run(make())
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Before any transfer started (a Ctrl-C during planning or at the prompt).
        _err.print("interrupted: nothing was downloaded yet")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except CredentialsError as exc:
        _fail(
            f"{exc} (using {credentials.label}). Ego4D keys expire after 14 days; renew them "
            "from your Ego4D licence e-mail and run `aws configure"
            + (f" --profile {credentials.profile}" if credentials.profile else "")
            + "`.",
            EXIT_CREDENTIALS,
        )
    except Ego4dDLError as exc:
        _fail(str(exc), exit_code_for(exc))


def _merge_config(
    ctx: typer.Context, values: dict[str, Any], config: Path | None
) -> dict[str, Any]:
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


def _check_output_directory(path: Path, *, create: bool) -> None:
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
        help=f"Requests in flight at once [default: {DEFAULT_CONCURRENCY}].",
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
    ),
]
MaxBandwidth = Annotated[
    str | None,
    typer.Option(
        "--max-bandwidth",
        "--max_bandwidth",
        help="Cap on the whole run's download rate, e.g. 200MB/s or 50MiB/s [default: none].",
        show_default=False,
    ),
]


def _gather(
    ctx: typer.Context,
    *,
    config: Path | None,
    **values: Any,
) -> tuple[Options, list[str]]:
    merged = _merge_config(ctx, values, config)
    return build_options(merged)


def _print_warnings(warnings: Sequence[str]) -> None:
    for w in warnings:
        _err.print(f"[yellow]warning:[/] {w}", markup=True)


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
        options, warnings = _gather(
            ctx,
            config=config,
            output_directory=output_directory,
            datasets=datasets,
            benchmarks=benchmarks,
            version=version,
            aws_profile_name=aws_profile_name,
            video_uids=video_uids,
            video_uid_file=video_uid_file,
            universities=universities,
            endpoint_url=endpoint_url,
            concurrency=concurrency,
            shard=shard,
        )
        _check_output_directory(options.output_directory, create=False)
    except Ego4dDLError as exc:
        _fail(str(exc), exit_code_for(exc))
    _print_warnings(warnings)
    override = manifest_override_path.expanduser() if manifest_override_path else None

    async def go() -> Any:
        async with S3Store(
            credentials=options.credentials,
            endpoint=options.endpoint,
            max_connections=max(8, options.concurrency),
            stall_timeout_s=options.stall_timeout_s,
        ) as store:
            jpath = journal_path(options.output_directory, options.shard)
            if not jpath.exists():
                return await build_plan(
                    options,
                    store,
                    index=DiskIndex(),
                    manifest_override=override,
                )
            with Journal(jpath, readonly=True) as journal:
                return await build_plan(
                    options,
                    store,
                    index=JournalIndex(journal, options.output_directory),
                    manifest_override=override,
                )

    plan = _run(go, credentials=options.credentials)
    _print_warnings(plan.warnings)
    free = free_bytes(options.output_directory)
    if json_out:
        sys.stdout.write(json.dumps(plan_json(plan, free_bytes=free), indent=1) + "\n")
    else:
        render_plan(_out, plan, free_bytes=free)


Yes = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Start without the confirmation prompt [default: ask]."),
]


def _stdout_is_terminal() -> bool:
    """Whether the live dashboard may draw: stdout is an interactive, capable terminal."""
    return sys.stdout.isatty() and _out.is_terminal and not _out.is_dumb_terminal


def _make_sink(*, json_out: bool, quiet: bool, interval_s: float) -> Display:
    """Where each kind of output goes (see the README's "Output and dashboard"):

    ``--json``: every event as a JSON line on stdout, and nothing else there. A terminal on
    stdout: the live dashboard there. Otherwise (logs, pipes) or ``--quiet``: plain lines on
    stderr, progress every ``interval_s`` and warnings as they happen (``--quiet``: failed
    files only). The summary goes to stdout after the run, errors to stderr, in every mode.
    """
    if json_out:
        return JsonLinesSink(sys.stdout, interval_s=interval_s, log=sys.stderr)
    if not quiet and _stdout_is_terminal():
        # A console of its own: unlike _out it wraps and crops to the terminal's width.
        return Dashboard(Console(highlight=False), redirect_stderr=sys.stderr.isatty())
    return PlainProgressSink(sys.stderr, interval_s=interval_s, quiet=quiet)


async def _read_answer(question: str) -> str | None:
    """Ask on stderr (stdout may be a pipe of results); read one line from the terminal.

    The event loop waits for stdin to be readable instead of a thread blocking in
    ``input()``, which a Ctrl-C could not stop. None at end of input (Ctrl-D).
    """
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    line: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        if not line.done():
            line.set_result(os.read(fd, 4096))

    sys.stderr.write(question)
    sys.stderr.flush()
    loop.add_reader(fd, readable)
    try:
        data = await line
    finally:
        loop.remove_reader(fd)
    return data.decode(errors="replace") if data else None


async def _confirm(plan: Plan, *, assume_yes: bool, quiet: bool) -> bool:
    """Show what will happen (size, file count, free space, what resumes); ask unless --yes."""
    text = confirmation_text(plan, free_bytes=free_bytes(plan.output_directory))
    if assume_yes:
        if not quiet:
            _err.print(text + "\nStarting (--yes).", markup=False)
        return True
    if not sys.stdin.isatty():
        raise ConfigError("stdin is not a terminal, so nobody can answer the prompt: pass --yes")
    while True:
        answer = await _read_answer(text + "\nStart the download? [Y/n] ")
        if answer is None:
            return False
        answer = answer.strip().lower()
        if answer in ("", "y", "yes"):
            return True
        if answer in ("n", "no"):
            return False


def _on_signals(stop: Callable[[], object], message: str, say: Callable[[str], None]) -> None:
    """First SIGINT or SIGTERM: ``say`` the message and call ``stop``. A second: exit at once.

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
            os._exit(EXIT_INTERRUPTED)
        say(message)
        stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)


def _stop_planning_on_signals(display: Display) -> None:
    """Until the engine runs, the first signal cancels the whole command."""
    task = asyncio.current_task()
    if task is not None:
        _on_signals(task.cancel, "stopping (Ctrl-C again to quit at once)", display.note)


def _stop_engine_on_signals(display: Display) -> Callable[[Engine], None]:
    """For ``run_download``'s ``on_engine``: the first Ctrl-C or SIGTERM stops scheduling,
    cancels requests in flight and flushes the journal (then the summary); a second leaves
    at once."""

    def install(engine: Engine) -> None:
        _on_signals(
            engine.stop,
            "stopping: cancelling requests in flight and saving progress "
            "(Ctrl-C again to quit at once)",
            display.note,
        )

    return install


def _exit_code(result: DownloadResult) -> int:
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
            help="Fetch only the manifests, into each dataset folder [default: off].",
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
        options, warnings = _gather(
            ctx,
            config=config,
            output_directory=output_directory,
            datasets=datasets,
            benchmarks=benchmarks,
            version=version,
            aws_profile_name=aws_profile_name,
            video_uids=video_uids,
            video_uid_file=video_uid_file,
            universities=universities,
            endpoint_url=endpoint_url,
            concurrency=concurrency,
            yes=yes,
            manifest=manifest,
            metadata=metadata,
            verify=verify,
            stall_timeout=stall_timeout,
            shard=shard,
            max_bandwidth=max_bandwidth,
        )
        _check_output_directory(options.output_directory, create=True)
    except Ego4dDLError as exc:
        _fail(str(exc), exit_code_for(exc))
    _print_warnings(warnings)
    if progress_interval <= 0:
        _fail(f"--progress-interval must be positive, not {progress_interval:g}", EXIT_USAGE)
    sink = _make_sink(json_out=json_out, quiet=quiet, interval_s=progress_interval)
    if not json_out:
        checks = CheckProgressSink(sys.stderr, interval_s=progress_interval, quiet=quiet)
        sink = _WithChecks(sink, checks)
    override = manifest_override_path.expanduser() if manifest_override_path else None

    warned = False

    async def confirm(plan: Plan) -> bool:
        nonlocal warned
        # Skipped rows and unknown UIDs belong before the question, not under the summary.
        _print_warnings(plan.warnings)
        warned = True
        sink.expect(plan)
        return await _confirm(plan, assume_yes=options.assume_yes, quiet=quiet)

    async def go() -> DownloadResult:
        _stop_planning_on_signals(sink)
        try:
            return await run_download(
                options,
                sink=sink,
                confirm=confirm,
                on_engine=_stop_engine_on_signals(sink),
                manifest_override=override,
                space_check=not no_space_check,
            )
        finally:
            sink.close()

    result = _run(go, credentials=options.credentials)
    if not warned:
        _print_warnings(result.plan.warnings)
    if result.adoption is not None and not (json_out or quiet):
        _print_adoption(result.adoption)
    summary = result.summary
    if result.declined:
        _err.print("Aborting the download operation.")
    elif summary is None:
        if not json_out:
            _out.print(f"Manifests saved under {options.output_directory}")
    elif not json_out:
        render_summary(_out, summary)
    code = _exit_code(result)
    if summary is not None and summary.stopped_by:
        if summary.stop_kind == "interrupted":
            _err.print(
                f"interrupted: {summary.verified + summary.skipped:,} files complete, "
                "resume with the same command"
            )
        elif summary.stop_kind == "credentials":
            _fail(
                f"{summary.stopped_by} (using {options.credentials.label}). Ego4D keys expire "
                "after 14 days; renew them and run the same command to resume.",
                code,
            )
        else:
            # Disk-full messages already say how to resume; say it once.
            hint = "" if "resume" in summary.stopped_by else "; run the same command to resume"
            _fail(f"{summary.stopped_by}{hint}", code)
    malformed = sum(len(d.malformed) for d in result.plan.datasets)
    if summary is not None and malformed and code == EXIT_OK:
        # Requested rows that could not even be planned are files not downloaded: the exit
        # code must not say "all complete" (users' scripts check it, not the warnings).
        _fail(
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
        _fail(str(exc), exit_code_for(exc))
    credentials = Credentials(profile=aws_profile_name)

    async def go() -> list[tuple[str, str]]:
        async with S3Store(
            credentials=credentials, endpoint=endpoint, max_connections=4, stall_timeout_s=30
        ) as store:
            return await list_dataset_rows(store, release)

    rows = _run(go, credentials=credentials)
    if json_out:
        doc = [{"dataset": n, "description": d} for n, d in rows]
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    else:
        render_datasets(_out, release, rows)


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
        _check_output_directory(out.absolute(), create=True)
    except Ego4dDLError as exc:
        _fail(str(exc), exit_code_for(exc))
    out = out.absolute()
    sink = _make_sink(json_out=False, quiet=False, interval_s=1.0)

    async def confirm(plan: Plan) -> bool:
        render_plan(_out, plan, free_bytes=free_bytes(out))
        sink.expect(plan)
        return True

    async def go(options: Options) -> DownloadResult:
        _stop_planning_on_signals(sink)
        try:
            return await run_download(
                options, sink=sink, confirm=confirm, on_engine=_stop_engine_on_signals(sink)
            )
        finally:
            sink.close()

    _err.print("starting the local S3 sandbox (SeaweedFS on 127.0.0.1) and seeding it ...")
    try:
        with demo_release(out, concurrency=concurrency or DEFAULT_CONCURRENCY) as demo:
            _err.print(f"sandbox at {demo.endpoint_url}; downloading into {out}")
            result = _run(lambda: go(demo.options), credentials=demo.options.credentials)
            bad = mismatches(out, demo.expected_md5)
    except Ego4dDLError as exc:
        _fail(str(exc), exit_code_for(exc))
    _err.print("sandbox stopped")
    summary = result.summary
    if summary is not None:
        render_summary(_out, summary)
    code = _exit_code(result)
    if summary is not None and summary.stop_kind == "interrupted":
        _err.print(f"interrupted: {summary.verified + summary.skipped:,} files complete")
        raise typer.Exit(code)
    if bad:
        _fail(f"{len(bad)} files differ from what the sandbox served: {', '.join(bad[:5])}", 1)
    _out.print(
        f"all {len(demo.expected_md5)} files are byte-identical to the sandbox's source; "
        f"they are in {out}"
    )
    raise typer.Exit(code)


# --- operating at scale: adoption, verify, status, doctor -----------------------------------


class _WithChecks:
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


def _print_adoption(adoption: Adoption) -> None:
    if adoption.adopted_files:
        origin = " (left by the original ego4d CLI)" if adoption.original_cli else ""
        how = (
            "checked against their ETags"
            if adoption.checked_files
            else "taken at their size (--verify size)"
        )
        if adoption.from_journals and not adoption.checked_files:
            how = "known complete to another journal"
        _err.print(
            f"adopted {adoption.adopted_files:,} files ({human_bytes(adoption.adopted_bytes)}) "
            f"already on disk{origin}, {how}; not downloaded again"
        )
    if adoption.rejected_files:
        _err.print(
            f"[yellow]warning:[/] {adoption.rejected_files:,} files on disk had the right size "
            "but not the right bytes; they are downloaded again",
            markup=True,
        )
    if adoption.leftovers_removed:
        _err.print(
            f"removed {adoption.leftovers_removed:,} temporary files left by the original CLI "
            f"({human_bytes(adoption.leftover_bytes)})"
        )


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
        options, warnings = _gather(
            ctx,
            config=config,
            output_directory=output_directory,
            datasets=datasets,
            benchmarks=benchmarks,
            version=version,
            aws_profile_name=aws_profile_name,
            video_uids=video_uids,
            video_uid_file=video_uid_file,
            universities=universities,
            endpoint_url=endpoint_url,
            concurrency=concurrency,
            metadata=metadata,
            shard=shard,
            max_bandwidth=max_bandwidth,
        )
        if not options.output_directory.is_dir():
            raise ConfigError(f"output directory {options.output_directory} does not exist")
        if jobs is not None and not 1 <= jobs <= 256:
            raise ConfigError(f"--jobs must be between 1 and 256, not {jobs}")
    except Ego4dDLError as exc:
        _fail(str(exc), exit_code_for(exc))
    _print_warnings(warnings)
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
        display = _WithChecks(
            _make_sink(json_out=False, quiet=quiet, interval_s=progress_interval), checks
        )
        sink = display

    async def go() -> VerifyResult:
        return await run_verify(
            options,
            sink=sink,
            repair=repair,
            jobs=jobs or default_jobs(),
            on_engine=_stop_engine_on_signals(display) if display else lambda _: None,
            space_check=not no_space_check,
        )

    try:
        result = _run(go, credentials=options.credentials)
    finally:
        if display is not None:
            display.close()
    _print_warnings(result.plan.warnings)
    if json_out:
        sys.stdout.write(json.dumps(verify_json(result), indent=1) + "\n")
    else:
        render_verify(_out, result)
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
        merged = _merge_config(
            ctx,
            {
                "output_directory": output_directory,
                "datasets": datasets,
                "benchmarks": benchmarks,
                "version": version,
                "video_uids": video_uids,
                "video_uid_file": video_uid_file,
                "universities": universities,
                "metadata": metadata,
                "shard": shard,
            },
            config,
        )
        options, warnings = build_options(merged)
        status = collect_status(options, datasets_given=bool(merged.get("datasets")))
    except Ego4dDLError as exc:
        _fail(str(exc), exit_code_for(exc))
    _print_warnings([*warnings, *status.warnings])
    if json_out:
        sys.stdout.write(json.dumps(status_json(status), indent=1) + "\n")
    else:
        render_status(_out, status)


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
        options, warnings = _gather(
            ctx,
            config=config,
            output_directory=output_directory,
            datasets=datasets,
            benchmarks=benchmarks,
            version=version,
            aws_profile_name=aws_profile_name,
            video_uids=video_uids,
            video_uid_file=video_uid_file,
            universities=universities,
            endpoint_url=endpoint_url,
            concurrency=concurrency,
            shard=shard,
        )
    except Ego4dDLError as exc:
        _fail(str(exc), exit_code_for(exc))
    _print_warnings(warnings)
    diagnosis = _run(lambda: diagnose(options), credentials=options.credentials)
    if json_out:
        sys.stdout.write(json.dumps(doctor_json(diagnosis), indent=1) + "\n")
    else:
        if options.shard is not None:
            _out.print(f"checking for shard {format_shard(options.shard)}")
        render_doctor(_out, diagnosis)
    raise typer.Exit(_doctor_exit_code(diagnosis))


def main() -> None:
    """Console-script entry point (also ``python -m ego4d_dl``)."""
    app(prog_name="ego4d-dl")
