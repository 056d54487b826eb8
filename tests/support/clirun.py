"""Helpers for tests that run ego4d-dl (and the original CLI) as real processes."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from ego4d_dl.cli import app
from ego4d_dl.journal import JOURNAL_DIR

__all__ = [
    "ORIGINAL_PYTHON",
    "Ran",
    "ego4d_dl",
    "invoke",
    "json_lines",
    "original_cli_installed",
    "tree_md5",
]

# The original CLI (PyPI ego4d==1.7.3) is in the ``test`` extra, so the interpreter running the
# tests has it; tests that adopt its downloads run it with this Python.
ORIGINAL_PYTHON = Path(sys.executable)


def original_cli_installed() -> bool:
    """Whether the original ``ego4d`` package is importable here (the ``test`` extra)."""
    return importlib.util.find_spec("ego4d") is not None


def ego4d_dl(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ego4d_dl`` with the test's environment (see the ``aws_env`` fixture)."""
    return subprocess.run(
        [sys.executable, "-m", "ego4d_dl", *args],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


class Ran:
    """What an in-process run of the CLI printed and returned."""

    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = code, stdout, stderr


def invoke(*args: str) -> Ran:
    """Run the CLI in this process (no interpreter start-up; same code path as the command)."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON documents of ``--json`` progress output, one per line."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def tree_md5(root: Path) -> dict[str, str]:
    """``{relative path: md5}`` of every file under ``root`` except ego4d-dl's own journals."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and rel.parts[0] != JOURNAL_DIR:
            out[str(rel)] = hashlib.md5(path.read_bytes()).hexdigest()
    return out
