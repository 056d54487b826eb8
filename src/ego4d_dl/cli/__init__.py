"""The ``ego4d-dl`` command line: Typer front end, seed-compatible flags, exit codes.

The only package that imports typer and the only one that exits; ``ls`` is its map: ``root``
(the Typer application and the table of commands, loaded on use), one module per command
(``download`` holds ``plan`` too), ``options`` (flag declarations), ``coerce`` (their values
read without pydantic), ``seed`` (the original CLI's argparse habits), ``console``,
``display``, ``prompt`` and ``signals`` (what a run shows and asks), ``outcome`` (exit codes);
``egoexo``, ``egoexo_options`` and ``egoexo_commands`` are the ``egoexo-dl`` command line (the
original ``egoexo`` downloader's flags, the same commands).

It accepts the original ``ego4d`` CLI's flags in both spellings (``--output_directory`` and
``--output-directory``), its list form (``--datasets full_scale annotations``) and its JSON
``--config`` files; every ``Ego4dDLError`` becomes one line on stderr and an exit code:

    0 all requested files complete and verified     2 usage or configuration error
    1 some files failed, or the network is down     3 credentials rejected or expired
    130 interrupted
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from .root import app

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    # Typer is imported on first use, so that ``ego4d-dl --version`` answers without it.
    if name == "app":
        from .root import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> NoReturn:
    """Console-script entry point (also ``python -m ego4d_dl``)."""
    if sys.argv[1:] == ["--version"]:
        # Alone, --version asks for this tool's version; with other flags it is the original
        # CLI's release (``--version v2``) and goes to the download command.
        from .. import __version__

        sys.stdout.write(f"ego4d-dl {__version__}\n")
        _leave(0)
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            # Started with that descriptor closed (``>&-``): Python leaves None there. A
            # closed stream instead makes every write fail as a closed stream does, which
            # the command reports (exit 1) instead of crashing on None.
            setattr(sys, name, _ClosedStream(name))
    from .root import app

    try:
        app(prog_name="ego4d-dl")
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    _leave(code)


class _ClosedStream(io.StringIO):
    """A text stream that is closed from the start, with a name for messages."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = f"<{name}>"
        self.close()

    def isatty(self) -> bool:
        return False  # asked before anything is written; only writes should fail


def _leave(code: object) -> NoReturn:
    """Exit with ``code`` without the interpreter's teardown.

    By now the command has closed everything it opened (journal, files, sockets, the sandbox)
    and its event loop has joined its threads; what teardown would add is freeing every module
    that botocore, aiohttp and rich loaded: 0.15-0.3 s of every run, measured. Only an orderly
    end takes this way: an exception still unwinds through Python's own exit.
    """
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"), as Python prints it
        sys.stderr.write(f"{code}\n")
        status = 1
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        # What was printed last never got out: the command must not claim success.
        if status == 0:
            status = 1
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write("error: cannot write to stdout\n")
    with contextlib.suppress(OSError, ValueError):  # nobody is reading stderr any more
        sys.stderr.flush()
    os._exit(status)
