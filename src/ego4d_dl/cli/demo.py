"""The ``demo`` command: a real download from a local S3 sandbox, no credentials needed."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from ..config import DEFAULT_CONCURRENCY, Options, check_output_directory
from ..demo import demo_release, mismatches
from ..downloading import DownloadResult, free_bytes, run_download
from ..errors import Ego4dDLError
from ..events import StopKind
from ..planned import Plan
from ..render import render_plan, render_summary, shown
from .console import fail, run_async, stderr_console, stdout_console
from .display import make_display
from .options import Concurrency
from .outcome import download_exit_code, exit_code_for
from .signals import stop_engine_on_signals, stop_planning_on_signals

__all__ = ["demo_command", "run_demo"]


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
    run_demo(output_directory, concurrency, family="ego4d")


def run_demo(output_directory: Path | None, concurrency: int | None, *, family: str) -> None:
    """The demo of one release family (``ego4d`` or ``egoexo``, as ``demo.demo_release``)."""
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
        with demo_release(
            out, concurrency=concurrency or DEFAULT_CONCURRENCY, family=family
        ) as demo:
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
    if summary is not None and summary.stop_kind is StopKind.INTERRUPTED:
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
