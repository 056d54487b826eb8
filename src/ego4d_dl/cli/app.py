"""The Typer application: seed-compatible parsing, consoles, errors to exit codes."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from .console import OutputError, fail, sdk_logs_off_stderr, stderr_console
from .outcome import EXIT_FAILED
from .seed import command_options, seed_args

__all__ = ["app", "register_commands"]


_ROOT_FLAGS = frozenset({"--help", "-h"})


class _SeedCompatibleGroup(TyperGroup):
    """Accepts the original CLI's command lines: no subcommand means ``download``, and its
    argparse habits (list options, abbreviations) are read as argparse read them. A command
    whose output cannot be written (``> /dev/full``, a closed pipe or stdout) ends with an
    ``error:`` line and exit code 1, never a traceback or a silent 0."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in _ROOT_FLAGS:
            args = ["download", *args]
        if args and not args[0].startswith("-"):
            command = self.get_command(ctx, args[0])
            known = command_options(command) | {"--help", "-h"}
            try:
                rest, notes = seed_args(args[1:], known)
            except ValueError as exc:
                ctx.fail(str(exc))
            for note in notes:
                stderr_console.print(f"note: {note}", markup=False)
            args = [args[0], *rest]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            with sdk_logs_off_stderr():
                return super().invoke(ctx)
        except OutputError as exc:
            fail(str(exc), EXIT_FAILED)


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


def register_commands() -> None:
    """Every command, in the order ``--help`` lists them (explicitly: importing a module
    registers nothing)."""
    from .datasets import datasets_command
    from .demo import demo_command
    from .doctor import doctor_command
    from .download import DOWNLOAD_EPILOG, download_command, plan_command
    from .status import status_command
    from .verify import verify_command

    command = app.command
    command("plan", short_help="What a download would fetch: files, sizes, free space.")(
        plan_command
    )
    command(
        "download",
        short_help="Download, verify, resume (the default command).",
        epilog=DOWNLOAD_EPILOG,
    )(download_command)
    command("datasets", short_help="List the datasets of a release.")(datasets_command)
    command("demo", short_help="A real download from a local S3 sandbox; no credentials needed.")(
        demo_command
    )
    command("verify", short_help="Re-hash downloaded files against their ETags; --repair.")(
        verify_command
    )
    command("status", short_help="Progress of every shard and dataset, offline.")(status_command)
    command("doctor", short_help="Check keys, clock, buckets, proxies and disk; explain.")(
        doctor_command
    )
