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
from .dashboard import JsonLinesSink, PlainProgressSink
from .demo import demo_release, mismatches
from .download import DownloadResult, free_bytes, run_download
from .engine import Engine
from .errors import (
    ConfigError,
    CredentialsError,
    Ego4dDLError,
    ManifestError,
    PlanError,
)
from .events import EventSink
from .journal import DiskIndex, Journal, JournalIndex, journal_path
from .plan import Plan
from .planner import build_plan, list_dataset_rows
from .report import human_bytes, plan_json, render_datasets, render_plan, render_summary
from .store import S3Store

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


app = typer.Typer(
    cls=_SeedCompatibleGroup,
    name="ego4d-dl",
    help=(
        "Download the Ego4D dataset: concurrent, resumable, every byte verified.\n\n"
        "Examples:\n\n"
        "  ego4d-dl download --output_directory ~/ego4d_data --datasets full_scale annotations\n\n"
        "  ego4d-dl plan --dry-run -o ~/ego4d_data --datasets clips --benchmarks FHO\n\n"
        "  ego4d-dl demo    (a real download from a local S3 sandbox, no credentials needed)"
    ),
    no_args_is_help=True,
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
    except KeyboardInterrupt:
        _err.print("interrupted")
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
    concurrency = int(values.get("concurrency") or DEFAULT_CONCURRENCY)
    if not 1 <= concurrency <= 1024:
        raise ConfigError(f"--concurrency must be between 1 and 1024, not {concurrency}")
    stall = float(values.get("stall_timeout") or DEFAULT_STALL_TIMEOUT_S)
    if stall <= 0:
        raise ConfigError(f"--stall-timeout must be positive, not {stall:g}")
    verify = str(values.get("verify") or "etag")
    if verify not in ("etag", "size"):
        raise ConfigError(f"--verify must be 'etag' or 'size', not {verify!r}")
    profile = values.get("aws_profile_name")
    endpoint = parse_endpoint(values.get("endpoint_url"))
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
    )
    return options, warnings


# --- shared option declarations -----------------------------------------------------------

OutputDirectory = Annotated[
    Path | None,
    typer.Option(
        "--output-directory",
        "--output_directory",
        "-o",
        help="Where the dataset goes; files land in <dir>/<major version>/<dataset>/.",
        show_default=False,
    ),
]
Datasets = Annotated[
    list[str] | None,
    typer.Option(
        "--datasets",
        "--dataset",
        help="Datasets to fetch, e.g. --datasets full_scale annotations [default: annotations].",
        show_default=False,
    ),
]
Benchmarks = Annotated[
    list[str] | None,
    typer.Option("--benchmarks", help="Only files tagged with these benchmarks (EM FHO AV ...)."),
]
Version = Annotated[
    str | None,
    typer.Option(
        "--version",
        help=f"Release: v1, v2 or v2_1 [default: {DEFAULT_VERSION}].",
        show_default=False,
    ),
]
Profile = Annotated[
    str | None,
    typer.Option(
        "--aws-profile-name",
        "--aws_profile_name",
        help="AWS profile holding your Ego4D keys [default: the standard AWS chain].",
        show_default=False,
    ),
]
VideoUids = Annotated[
    list[str] | None,
    typer.Option("--video-uids", "--video_uids", help="Only these video/clip UIDs."),
]
VideoUidFile = Annotated[
    Path | None,
    typer.Option(
        "--video-uid-file",
        "--video_uid_file",
        help="File of whitespace-separated UIDs (excludes --video_uids).",
    ),
]
Universities = Annotated[
    list[str] | None,
    typer.Option(
        "--universities", help="Only files from these universities' buckets (cmu, unict, ...)."
    ),
]
ConfigPath = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "--config-path",
        "--config_path",
        help="JSON file of options (the original CLI's); flags on the command line win.",
    ),
]
EndpointUrl = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        "--endpoint_url",
        help="S3-compatible endpoint (mirror or local sandbox), e.g. http://127.0.0.1:8333.",
    ),
]
Concurrency = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        help=f"Requests in flight at once [default: {DEFAULT_CONCURRENCY}].",
        show_default=False,
    ),
]
JsonOut = Annotated[
    bool, typer.Option("--json", help="Machine-readable JSON on stdout instead of tables.")
]
ManifestOverride = Annotated[
    Path | None,
    typer.Option(
        "--manifest-override-path",
        "--manifest_override_path",
        help="Use this local manifest CSV instead of the release's (one dataset only).",
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


@app.command("plan")
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
        bool, typer.Option("--dry-run", help="Accepted for clarity: plan never downloads.")
    ] = True,
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
            jpath = journal_path(options.output_directory)
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
    bool, typer.Option("--yes", "-y", help="Start without asking (for scripts and cron).")
]


def _make_sink(*, json_out: bool, quiet: bool, interval_s: float) -> EventSink:
    if json_out:
        return JsonLinesSink(sys.stdout)
    return PlainProgressSink(sys.stderr, interval_s=interval_s, quiet=quiet)


async def _confirm(plan: Plan, *, assume_yes: bool, quiet: bool) -> bool:
    """The original's prompt, with file count, free space and what resumes."""
    t = plan.totals
    free = free_bytes(plan.output_directory)
    resume = f", {t.resume_files:,} resumed" if t.resume_files else ""
    question = (
        f"Expected size of downloaded files is {t.fetch_bytes / 1024**3:.4f} GiB in "
        f"{t.fetch_files:,} files{resume}"
        + (f"; {human_bytes(free)} free" if free is not None else "")
        + ". Start? [Y/n] "
    )
    if assume_yes:
        if not quiet:
            _err.print(question.replace(" Start? [Y/n] ", " Starting (--yes)."))
        return True
    if not sys.stdin.isatty():
        raise ConfigError("stdin is not a terminal, so nobody can answer the prompt: pass --yes")
    while True:
        answer = (await asyncio.to_thread(input, question)).strip().lower()
        if answer in ("", "y", "yes"):
            return True
        if answer in ("n", "no"):
            return False


def _install_signal_handlers(engine: Engine) -> None:
    """First Ctrl-C or SIGTERM: stop cleanly. A second: leave at once."""
    loop = asyncio.get_running_loop()
    hits = {"n": 0}

    def handler() -> None:
        hits["n"] += 1
        if hits["n"] > 1:
            os._exit(EXIT_INTERRUPTED)
        _err.print("stopping: finishing bookkeeping (Ctrl-C again to quit at once)")
        engine.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)


def _exit_code(result: DownloadResult) -> int:
    summary = result.summary
    if summary is None:
        return EXIT_OK
    if summary.stop_kind == "credentials":
        return EXIT_CREDENTIALS
    if summary.stop_kind == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_FAILED


@app.command("download")
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
        bool, typer.Option("--manifest", help="Fetch only the manifests (and ego4d.json).")
    ] = False,
    metadata: Annotated[
        bool,
        typer.Option("--metadata/--no-metadata", help="Also fetch the release's ego4d.json."),
    ] = True,
    verify: Annotated[
        str,
        typer.Option(
            "--verify",
            help="etag: MD5 / multipart-ETag check of every file; size: sizes only (faster).",
        ),
    ] = "etag",
    stall_timeout: Annotated[
        float,
        typer.Option("--stall-timeout", help="Seconds without a byte before a request is retried."),
    ] = DEFAULT_STALL_TIMEOUT_S,
    no_space_check: Annotated[
        bool, typer.Option("--no-space-check", help="Start even if free space looks too small.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show the plan (same as `ego4d-dl plan`).")
    ] = False,
    json_out: JsonOut = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only errors and the summary.")
    ] = False,
    progress_interval: Annotated[
        float, typer.Option("--progress-interval", help="Seconds between progress lines.")
    ] = 10.0,
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
        )
        _check_output_directory(options.output_directory, create=True)
    except Ego4dDLError as exc:
        _fail(str(exc), exit_code_for(exc))
    _print_warnings(warnings)
    sink = _make_sink(json_out=json_out, quiet=quiet, interval_s=progress_interval)
    override = manifest_override_path.expanduser() if manifest_override_path else None

    async def go() -> DownloadResult:
        return await run_download(
            options,
            sink=sink,
            confirm=lambda plan: _confirm(plan, assume_yes=options.assume_yes, quiet=quiet),
            on_engine=_install_signal_handlers,
            manifest_override=override,
            space_check=not no_space_check,
        )

    result = _run(go, credentials=options.credentials)
    _print_warnings(result.plan.warnings)
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


@app.command("datasets")
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


@app.command("demo")
def demo_command(
    output_directory: Annotated[
        Path | None,
        typer.Option(
            "--output-directory",
            "--output_directory",
            "-o",
            help="Where the demo download goes [default: a new temporary folder].",
            show_default=False,
        ),
    ] = None,
    concurrency: Concurrency = None,
) -> None:
    """Start a local S3 sandbox, download a small fake Ego4D release from it, verify it."""
    out = (output_directory or Path(tempfile.mkdtemp(prefix="ego4d-dl-demo-"))).expanduser()
    try:
        _check_output_directory(out.absolute(), create=True)
    except Ego4dDLError as exc:
        _fail(str(exc), exit_code_for(exc))
    out = out.absolute()
    sink = PlainProgressSink(sys.stderr, interval_s=1.0)

    async def go(options: Options) -> DownloadResult:
        return await run_download(
            options,
            sink=sink,
            confirm=lambda plan: _confirm(plan, assume_yes=True, quiet=False),
            on_engine=_install_signal_handlers,
        )

    _err.print("starting the local S3 sandbox (SeaweedFS on 127.0.0.1) ...")
    try:
        with demo_release(out, concurrency=concurrency or DEFAULT_CONCURRENCY) as demo:
            _err.print(f"sandbox at {demo.endpoint_url}; downloading into {out}")
            result = _run(lambda: go(demo.options), credentials=demo.options.credentials)
            bad = mismatches(out, demo.expected_md5)
    except Ego4dDLError as exc:
        _fail(str(exc), exit_code_for(exc))
    render_plan(_out, result.plan, free_bytes=free_bytes(out))
    if result.summary is not None:
        render_summary(_out, result.summary)
    if bad:
        _fail(f"{len(bad)} files differ from what the sandbox served: {', '.join(bad[:5])}", 1)
    _out.print(
        f"all {len(demo.expected_md5)} files are byte-identical to the sandbox's source; "
        f"they are in {out}"
    )
    raise typer.Exit(_exit_code(result))


def main() -> None:
    """Console-script entry point."""
    app()
