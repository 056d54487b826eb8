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

from . import scale, transfer  # noqa: F401  (importing them registers their commands)
from .app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point (also ``python -m ego4d_dl``)."""
    app(prog_name="ego4d-dl")
