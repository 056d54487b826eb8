"""What a run shows while it works: the live dashboard, plain or JSON lines, read-back progress."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable

from rich.console import Console

from ..adopt import Adoption
from ..events import Event
from ..formatting import human_bytes
from ..planned import Plan
from ..readback_view import CheckProgressSink
from ..sinks import Display, JsonLinesSink, PlainProgressSink
from .console import stderr_console, stdout_console, warn

__all__ = ["OutputGuard", "WithChecks", "make_display", "print_adoption", "stdout_is_terminal"]


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
        # Imported on use: logs, pipes and --quiet never load the live view.
        from ..dashboard import Dashboard

        # A console of its own: unlike stdout_console it wraps and crops to the terminal's width.
        return Dashboard(Console(highlight=False), redirect_stderr=sys.stderr.isatty())
    return PlainProgressSink(
        sys.stderr, interval_s=interval_s, quiet=quiet, on_output_error=on_output_error
    )
