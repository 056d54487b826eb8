"""The command line's voice: two consoles, error and warning lines, output failures, running a
command's coroutine."""

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

from ..config import Credentials, profile_key_id
from ..errors import CredentialsError, Ego4dDLError
from ..sinks import output_error_text
from ..text import safe
from .outcome import EXIT_CREDENTIALS, EXIT_INTERRUPTED, exit_code_for

__all__ = [
    "OutputError",
    "credentials_note",
    "fail",
    "print_warnings",
    "run_async",
    "sdk_logs_off_stderr",
    "stderr_console",
    "stdout_console",
    "warn",
    "write_stdout",
]


T = TypeVar("T")


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


# botocore and aiobotocore log a WARNING with a traceback each time a credential refresh
# fails (dozens in a run whose credential_process or SSO token gave out), and Python's
# last-resort handler prints them on stderr when nothing is configured. The failure reaches
# the user once, as the run's error line; there is no --log-file to keep them in, so while a
# command runs these loggers write nowhere.
_SDK_LOGGERS = ("botocore", "aiobotocore", "boto3", "aioboto3")


@contextlib.contextmanager
def sdk_logs_off_stderr() -> Iterator[None]:
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
            f"{exc} (using {credentials.label}). Ego4D and Ego-Exo4D keys expire after 14 days; "
            "renew them from your licence e-mail and run `aws configure"
            + (f" --profile {credentials.profile}" if credentials.profile else "")
            + "`.",
            EXIT_CREDENTIALS,
        )
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))


def print_warnings(warnings: Sequence[str]) -> None:
    for w in warnings:
        warn(w)
