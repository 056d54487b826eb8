"""The Typer application: seed-compatible parsing, consoles, errors to exit codes.

Every ``Ego4dDLError`` becomes one line on stderr and an exit code (see ``ego4d_dl.cli``).
Messages carry names, paths and server text: they are printed as ``Text`` made ``safe``, and
the two consoles parse no markup or emoji codes unless a call asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from ..config import (
    Credentials,
)
from ..errors import (
    ConfigError,
    CredentialsError,
    Ego4dDLError,
    ManifestError,
    PlanError,
)
from ..progress import output_error_text
from ..text import safe

__all__ = [
    "EXIT_CREDENTIALS",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "OutputError",
    "app",
    "exit_code_for",
    "expand_list_flags",
    "fail",
    "run_async",
    "stderr_console",
    "stdout_console",
    "warn",
    "write_stdout",
]

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


class OutputError(Exception):
    """The command's own output (stdout or stderr) could not be written."""


class _Console(Console):
    """A console whose write failures are an ``OutputError`` naming the stream."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        try:
            super().print(*objects, **kwargs)
        except (OSError, ValueError) as exc:
            raise OutputError(_cannot_write(self.stderr, exc)) from exc


def _cannot_write(stderr: bool, exc: BaseException) -> str:
    return f"cannot write to {'stderr' if stderr else 'stdout'}: {output_error_text(exc)}"


def write_stdout(text: str) -> None:
    """``text`` to stdout (JSON documents), flushed; failures are an ``OutputError``."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except (OSError, ValueError) as exc:
        raise OutputError(_cannot_write(False, exc)) from exc


class _SeedCompatibleGroup(TyperGroup):
    """Accepts the original CLI's command lines: no subcommand means ``download``. A command
    whose output cannot be written (``> /dev/full``, a closed pipe or stdout) ends with an
    ``error:`` line and exit code 1, never a traceback or a silent 0."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in _ROOT_FLAGS:
            args = ["download", *args]
        return super().parse_args(ctx, expand_list_flags(args))

    def invoke(self, ctx: Any) -> Any:
        try:
            with _sdk_logs_off_stderr():
                return super().invoke(ctx)
        except OutputError as exc:
            fail(str(exc), EXIT_FAILED)


# botocore and aiobotocore log a WARNING with a traceback each time a credential refresh
# fails (dozens in a run whose credential_process or SSO token gave out), and Python's
# last-resort handler prints them on stderr when nothing is configured. The failure reaches
# the user once, as the run's error line; there is no --log-file to keep them in, so while a
# command runs these loggers write nowhere.
_SDK_LOGGERS = ("botocore", "aiobotocore", "boto3", "aioboto3")


@contextlib.contextmanager
def _sdk_logs_off_stderr() -> Iterator[None]:
    saved: list[tuple[logging.Logger, bool, logging.Handler]] = []
    for name in _SDK_LOGGERS:
        logger = logging.getLogger(name)
        handler: logging.Handler = logging.NullHandler()
        saved.append((logger, logger.propagate, handler))
        logger.addHandler(handler)
        logger.propagate = False
    try:
        yield
    finally:
        for logger, propagate, handler in saved:
            logger.removeHandler(handler)
            logger.propagate = propagate


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

stdout_console = _Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
stderr_console = _Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)


def fail(message: str, code: int) -> NoReturn:
    """One ``error:`` line on stderr (``message`` made ``safe``: it may quote a server or a
    manifest), then exit with ``code``, even when stderr itself cannot be written."""
    with contextlib.suppress(OutputError):
        stderr_console.print(Text.assemble(("error:", "bold red"), " ", safe(message)))
    raise typer.Exit(code)


def warn(message: str) -> None:
    """One ``warning:`` line on stderr, ``message`` made ``safe``."""
    stderr_console.print(Text.assemble(("warning:", "yellow"), " ", safe(message)))


def exit_code_for(exc: Ego4dDLError) -> int:
    """The exit code an error maps to (the table in this module's docstring)."""
    if isinstance(exc, CredentialsError):
        return EXIT_CREDENTIALS
    if isinstance(exc, ConfigError | ManifestError | PlanError):
        return EXIT_USAGE
    return EXIT_FAILED


def run_async(make: Callable[[], Coroutine[Any, Any, T]], *, credentials: Credentials) -> T:
    """Run a coroutine; translate our errors into a message and an exit code."""
    try:
        return asyncio.run(make())
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Before any transfer started (a Ctrl-C during planning or at the prompt).
        stderr_console.print("interrupted: nothing was downloaded yet")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except CredentialsError as exc:
        fail(
            f"{exc} (using {credentials.label}). Ego4D keys expire after 14 days; renew them "
            "from your Ego4D licence e-mail and run `aws configure"
            + (f" --profile {credentials.profile}" if credentials.profile else "")
            + "`.",
            EXIT_CREDENTIALS,
        )
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
