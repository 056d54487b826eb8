"""The Typer application: seed-compatible parsing, consoles, errors to exit codes.

Every ``Ego4dDLError`` becomes one line on stderr and an exit code (see ``ego4d_dl.cli``).
Messages carry names, paths and server text: they are printed as ``Text`` made ``safe``, and
the two consoles parse no markup or emoji codes unless a call asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from ..config import (
    Credentials,
    profile_key_id,
)
from ..errors import (
    ConfigError,
    CredentialsError,
    Ego4dDLError,
    ManifestError,
    PlanError,
)
from ..sinks import output_error_text
from ..text import safe

__all__ = [
    "EXIT_CREDENTIALS",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "ORIGINAL_LONG_OPTIONS",
    "OutputError",
    "app",
    "credentials_note",
    "exit_code_for",
    "expand_abbreviation",
    "expand_list_flags",
    "fail",
    "run_async",
    "seed_args",
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

# The original CLI's long options. argparse (allow_abbrev) takes an unambiguous prefix of one
# of them as that option (--output, --data, --bench, --univ, --ver, --aws ...), and so do we;
# the prefix is judged among the original's options only, so ours cannot make it ambiguous.
ORIGINAL_LONG_OPTIONS = (
    "--output_directory",
    "--datasets",
    "--benchmarks",
    "--annotations",
    "--metadata",
    "--no-metadata",
    "--manifest",
    "--bypass-existing",
    "--skip-s3-checks",
    "--version",
    "--aws_profile_name",
    "--universities",
    "--yes",
    "--video_uids",
    "--video_uid_file",
    "--manifest-override-path",
    "--list-datasets",
    "--help",
    "--config_path",
)
# The original's list options and their argparse nargs: "+" needs a value, "*" may have none
# (then it is no filter). Each spelling maps to the name used in messages.
_ONE_OR_MORE = {
    "--datasets": "--datasets",
    "--dataset": "--datasets",
    "--universities": "--universities",
    "--video_uids": "--video_uids",
    "--video-uids": "--video_uids",
}
_ANY_NUMBER = {"--benchmarks": "--benchmarks", "--annotations": "--annotations"}
_ROOT_FLAGS = frozenset({"--help", "-h"})


def _is_option(token: str) -> bool:
    return len(token) > 1 and token.startswith("-")


def expand_abbreviation(name: str, known: frozenset[str]) -> str:
    """``--data`` -> ``--datasets``: what argparse made of a prefix of the original's options.

    A name the command knows stays as it is, and so does one that is ambiguous among the
    original's options (argparse refused those too) or that names nothing this command has.
    """
    if name in known or not name.startswith("--"):
        return name
    matches = [o for o in ORIGINAL_LONG_OPTIONS if o.startswith(name)]
    if len(matches) == 1 and (matches[0] in known or matches[0] == "--annotations"):
        return matches[0]
    return name


def seed_args(args: Sequence[str], known: frozenset[str]) -> tuple[list[str], list[str]]:
    """The original CLI's argparse command line in the form click parses, and notes to show.

    ``--datasets a b`` -> ``--datasets a --datasets b``; ``--benchmarks`` with no value (no
    filter in the original) is dropped; ``--datasets`` with none is argparse's usage error;
    ``--annotations [...]`` (a no-op in the original) is dropped with a note; abbreviations
    are expanded. A list option given twice is a note: the original kept only the last.
    ``ValueError`` (argparse's wording) for what argparse refused.
    """
    out: list[str] = []
    notes: list[str] = []
    given: dict[str, list[list[str]]] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            out.extend(args[i - 1 :])
            break
        name, eq, attached = arg.partition("=")
        name = expand_abbreviation(name, known)
        if name.startswith("--") and name not in known:
            matches = [o for o in ORIGINAL_LONG_OPTIONS if o.startswith(name)]
            if len(matches) > 1:
                raise ValueError(f"ambiguous option: {name} could match {', '.join(matches)}")
        arg = name + eq + attached
        label = _ONE_OR_MORE.get(name) or _ANY_NUMBER.get(name)
        if label is None:
            out.append(arg)
            continue
        values = [attached] if eq else []
        if not eq:
            while i < len(args) and not _is_option(args[i]):
                values.append(args[i])
                i += 1
        if label == "--annotations":
            notes.append(
                "--annotations does nothing, as in the original CLI; annotations are a "
                "dataset: --datasets annotations"
            )
            continue
        if not values:
            if name in _ANY_NUMBER:
                continue  # argparse's nargs="*" with no value: no filter
            raise ValueError(f"argument {label}: expected at least one argument")
        given.setdefault(label, []).append(values)
        for value in values:
            out.extend((name, value))
    for label, groups in given.items():
        if len(groups) > 1:
            every = [v for g in groups for v in g]
            notes.append(
                f"{label} given {len(groups)} times: ego4d-dl takes every value "
                f"({' '.join(every)}); the original CLI took only the last "
                f"({' '.join(groups[-1])}): give {label} once for that"
            )
    return out, notes


def expand_list_flags(args: Sequence[str]) -> list[str]:
    """``--datasets a b --yes`` -> ``--datasets a --datasets b --yes`` (argparse's nargs)."""
    return seed_args(args, frozenset())[0]


def _command_options(command: Any) -> frozenset[str]:
    names: set[str] = set()
    for param in getattr(command, "params", ()):
        names.update(getattr(param, "opts", ()))
        names.update(getattr(param, "secondary_opts", ()))
    return frozenset(names)


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
    """Accepts the original CLI's command lines: no subcommand means ``download``, and its
    argparse habits (list options, abbreviations) are read as argparse read them. A command
    whose output cannot be written (``> /dev/full``, a closed pipe or stdout) ends with an
    ``error:`` line and exit code 1, never a traceback or a silent 0."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0].startswith("-") and args[0] not in _ROOT_FLAGS:
            args = ["download", *args]
        if args and not args[0].startswith("-"):
            command = self.get_command(ctx, args[0])
            known = _command_options(command) | {"--help", "-h"}
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


def _short_key(key_id: str) -> str:
    if not key_id.isascii() or not key_id.isalnum():
        return "(not a key id)"  # read from a file or the environment: never echoed raw
    return f"{key_id[:4]}...{key_id[-4:]}" if len(key_id) > 12 else key_id


def credentials_note(
    credentials: Credentials, environ: Mapping[str, str] | None = None
) -> str | None:
    """One line when the keys the AWS chain picks are not those the original CLI would use.

    The original always reads a named profile (``default`` unless ``--aws_profile_name``), which
    makes botocore skip ``AWS_ACCESS_KEY_ID`` and ``AWS_PROFILE``; ego4d-dl follows the standard
    chain, where those come first. With a profile named, both read it alike; with no keys in
    ``[default]`` the original could not run: no note either.
    """
    env = os.environ if environ is None else environ
    if credentials.profile or credentials.access_key_id:
        return None
    env_profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE")
    used: str | None
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        used = env["AWS_ACCESS_KEY_ID"]
        why = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
    elif env_profile and env_profile != "default":
        used = profile_key_id(env_profile, env)
        why = f"profile {env_profile!r} (AWS_PROFILE)"
    else:
        return None
    theirs = profile_key_id("default", env)
    # Without keys in [default] the original could not run at all: nothing to compare with.
    if theirs is None or used == theirs:
        return None
    keys = f"key {_short_key(used)}" if used else "the keys"
    return (
        f"using {keys} from {why}, as the standard AWS chain does; the original ego4d CLI "
        f"ignores those and reads the [default] profile (key {_short_key(theirs)}): pass "
        "--aws_profile_name default for its keys"
    )


def run_async(make: Callable[[], Coroutine[Any, Any, T]], *, credentials: Credentials) -> T:
    """Run a coroutine; translate our errors into a message and an exit code.

    First says which keys are in use when they are not the original CLI's (``credentials_note``).
    """
    note = credentials_note(credentials)
    if note is not None:
        stderr_console.print(f"note: {note}", markup=False)
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
