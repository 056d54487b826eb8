"""Ctrl-C and SIGTERM: the first stops the current phase cleanly, a second leaves at once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable

from ..processes import Stoppable
from ..sinks import Display
from .outcome import EXIT_INTERRUPTED

__all__ = ["on_signals", "stop_engine_on_signals", "stop_planning_on_signals"]


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
) -> Callable[[Stoppable], None]:
    """For ``run_download``'s ``on_engine``: the first Ctrl-C or SIGTERM stops scheduling,
    cancels requests in flight and flushes the journal (then the summary); a second leaves
    at once (after ``before_exit``)."""

    def install(engine: Stoppable) -> None:
        on_signals(
            engine.stop,
            "stopping: cancelling requests in flight and saving progress "
            "(Ctrl-C again to quit at once)",
            display.note,
            before_exit=before_exit,
        )

    return install
