"""The ``ego4d-dl`` command line: Typer front end, seed-compatible flags, exit codes.

The only package that imports typer and the only one that exits; ``ls`` is its map:
``app`` (parsing, errors to exit codes), ``options`` (flags, config file, validation),
``transfer`` (plan, download, datasets, demo), ``scale`` (verify, status, doctor).

It accepts the original ``ego4d`` CLI's flags in both spellings (``--output_directory`` and
``--output-directory``), its list form (``--datasets full_scale annotations``) and its JSON
``--config`` files; every ``Ego4dDLError`` becomes one line on stderr and an exit code:

    0 all requested files complete and verified     2 usage or configuration error
    1 some files failed, or the network is down     3 credentials rejected or expired
    130 interrupted
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn

from . import scale, transfer  # noqa: F401  (importing them registers their commands)
from .app import app

__all__ = ["app", "main"]


def main() -> NoReturn:
    """Console-script entry point (also ``python -m ego4d_dl``)."""
    try:
        app(prog_name="ego4d-dl")
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    _leave(code)


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
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nobody is reading
            stream.flush()
    os._exit(status)
