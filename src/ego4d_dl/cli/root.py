"""The Typer application: seed-compatible parsing, consoles, errors to exit codes."""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup

from .coerce import install_plain_coercion
from .seed import command_options, seed_args

__all__ = ["COMMANDS", "Entry", "TableGroup", "app", "load_command"]


class Entry:
    """Where a command lives and what the main help says of it."""

    __slots__ = ("epilog", "function", "module", "short_help")

    def __init__(self, module: str, function: str, short_help: str, epilog: str = "") -> None:
        self.module = module
        self.function = function
        self.short_help = short_help
        self.epilog = epilog


# Every command, in the order ``--help`` lists them. A command's module (and what it imports:
# the engine, the store, Rich) is loaded only when that command runs or shows its help, so
# ``ego4d-dl --help`` starts with Typer alone.
COMMANDS: dict[str, Entry] = {
    "plan": Entry(
        "download", "plan_command", "What a download would fetch: files, sizes, free space."
    ),
    "download": Entry(
        "download",
        "download_command",
        "Download, verify, resume (the default command).",
        epilog="DOWNLOAD_EPILOG",
    ),
    "datasets": Entry("datasets", "datasets_command", "List the datasets of a release."),
    "demo": Entry(
        "demo", "demo_command", "A real download from a local S3 sandbox; no credentials needed."
    ),
    "verify": Entry(
        "verify", "verify_command", "Re-hash downloaded files against their ETags; --repair."
    ),
    "status": Entry("status", "status_command", "Progress of every shard and dataset, offline."),
    "doctor": Entry(
        "doctor", "doctor_command", "Check keys, clock, buckets, proxies and disk; explain."
    ),
}


class _PlainCommand(TyperCommand):
    """A Typer command whose options of plain types, help included, are converted without
    pydantic (``coerce``)."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        install_plain_coercion([option])
        return option


def load_command(name: str, entry: Entry) -> Any:
    """Import a command's module and build its Click command, as Typer would."""
    module = importlib.import_module(f".{entry.module}", __package__)
    epilog = getattr(module, entry.epilog) if entry.epilog else None
    single = typer.Typer(add_completion=False, rich_markup_mode=None)
    single.command(name, cls=_PlainCommand, short_help=entry.short_help, epilog=epilog)(
        getattr(module, entry.function)
    )
    command = typer.main.get_command(single)
    install_plain_coercion(command.params)
    return command


_ROOT_FLAGS = frozenset({"--help", "-h"})


class TableGroup(TyperGroup):
    """A group whose commands come from a table (``COMMANDS``), loaded on use; no command
    means ``download``; a subclass reads the rest of the command line its original's way
    (``rewrite``). A command whose output cannot be written (``> /dev/full``, a closed pipe or
    stdout) ends with an ``error:`` line and exit code 1, never a traceback or a silent 0."""

    table: ClassVar[dict[str, Entry]] = {}

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        install_plain_coercion([option])
        return option

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.table)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        entry = self.table.get(cmd_name)
        if command is None and entry is not None:
            command = self.commands[cmd_name] = load_command(cmd_name, entry)
        return command

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # From the table, not from the commands: listing them must not import them.
        with formatter.section("Commands"):
            formatter.write_dl([(name, entry.short_help) for name, entry in self.table.items()])

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in _ROOT_FLAGS:
            args = ["download", *args]
        if args and not args[0].startswith("-"):
            command = self.get_command(ctx, args[0])
            try:
                args = [args[0], *self.rewrite(command, args[1:])]
            except ValueError as exc:
                ctx.fail(str(exc))
        return super().parse_args(ctx, args)

    def rewrite(self, command: Any, args: list[str]) -> list[str]:
        """``args`` of ``command`` in the form click parses (``ValueError``: a usage error)."""
        return args

    def invoke(self, ctx: Any) -> Any:
        from .console import OutputError, fail, sdk_logs_off_stderr
        from .outcome import EXIT_FAILED

        try:
            with sdk_logs_off_stderr():
                return super().invoke(ctx)
        except OutputError as exc:
            fail(str(exc), EXIT_FAILED)


class _SeedCompatibleGroup(TableGroup):
    """Accepts the original CLI's command lines: its argparse habits (list options,
    abbreviations) are read as argparse read them."""

    table = COMMANDS

    def rewrite(self, command: Any, args: list[str]) -> list[str]:
        known = command_options(command) | _ROOT_FLAGS
        rest, notes = seed_args(args, known)
        if notes:
            from .console import stderr_console

            for note in notes:
                stderr_console.print(f"note: {note}", markup=False)
        return rest


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
    # A root callback makes Typer build a group although no command is registered with it:
    # the group above loads them.
    callback=lambda: None,
)
