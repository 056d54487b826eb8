"""Running ego4d-dl in tests, one way: ``cli`` in this process (Typer's CliRunner: no
interpreter start-up, the code path of the command) or ``cli_process`` as a child process (for
signals, real stdio and pipes); both return a ``Ran``. The original ``ego4d`` CLI runs with
``ORIGINAL_PYTHON``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from ego4d_dl.cli import app
from ego4d_dl.sandbox import Sandbox

__all__ = [
    "COMMAND",
    "ORIGINAL_PYTHON",
    "Ran",
    "cli",
    "cli_env",
    "cli_process",
    "json_lines",
    "original_cli_installed",
    "plan_json",
]

# ``python -m ego4d_dl``: the command line of a child process, before its arguments.
COMMAND = (sys.executable, "-m", "ego4d_dl")

# The original CLI (PyPI ego4d==1.7.3) is in the ``test`` extra, so the interpreter running the
# tests has it; tests that adopt its downloads run it with this Python.
ORIGINAL_PYTHON = Path(sys.executable)

# Variables that would make Rich colour a pipe or size its output: a test of what users get by
# default must not inherit them from the developer's shell or CI.
_DISPLAY_VARIABLES = ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")
# What a ``clean_env`` child keeps of this process's environment.
_CLEAN_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH")


@dataclass(frozen=True, slots=True)
class Ran:
    """What a command printed and returned."""

    code: int
    stdout: str
    stderr: str

    def error_line(self) -> str:
        """The one ``error:`` line on stderr (asserting there is exactly one and no traceback)."""
        assert "Traceback" not in self.stderr + self.stdout, self.stderr
        errors = [line for line in self.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, f"expected one error line, got:\n{self.stderr}"
        return errors[0]

    @property
    def events(self) -> list[dict[str, Any]]:
        """The ``--json`` event lines of stdout."""
        return json_lines(self.stdout)

    @property
    def summary(self) -> dict[str, Any]:
        """The run summary of a ``--json`` run."""
        finished = [e for e in self.events if e["event"] == "RunFinished"]
        assert finished, f"no RunFinished event; stderr:\n{self.stderr}"
        summary: dict[str, Any] = finished[-1]["summary"]
        return summary


def cli(
    *args: str | Path, env: Mapping[str, str | None] | None = None, input: str | None = None
) -> Ran:
    """Run ``ego4d-dl args`` in this process, as a user would type it; ``env`` is laid over
    the environment for the run (``None`` removes a variable). An exception other than the
    command's own exit is a bug and is raised."""
    result = CliRunner().invoke(app, [str(a) for a in args], env=env, input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def cli_env(**extra: str) -> dict[str, str]:
    """The current environment (with the sandbox's AWS variables) minus display overrides."""
    env = {k: v for k, v in os.environ.items() if k not in _DISPLAY_VARIABLES}
    env.update(extra)
    return env


def cli_process(
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    clean_env: bool = False,
    stdin: str | None = None,
    timeout_s: float = 120,
) -> Ran:
    """Run ``python -m ego4d_dl args`` in a child process to its end.

    Its environment is ``cli_env()`` with ``env`` over it; with ``clean_env``, only the
    basics of this one (PATH, HOME, locale, TMPDIR, PYTHONPATH; 200 columns) under ``env``.
    ``stdin`` is piped in; without it stdin is empty (``/dev/null``).
    """
    if clean_env:
        base = {k: v for k, v in os.environ.items() if k in _CLEAN_KEEP} | {"COLUMNS": "200"}
    else:
        base = cli_env()
    proc = subprocess.run(
        [*COMMAND, *(str(a) for a in args)],
        env={**base, **(env or {})},
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON documents of ``--json`` progress output, one per line."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def original_cli_installed() -> bool:
    """Whether the original ``ego4d`` package is importable here (the ``test`` extra)."""
    return importlib.util.find_spec("ego4d") is not None


def plan_json(sandbox: Sandbox, out: Path, *args: str | Path) -> dict[str, Any]:
    """``ego4d-dl plan --json`` against the sandbox, parsed."""
    ran = cli("plan", "--json", "-o", out, "--endpoint-url", sandbox.endpoint_url, *args)
    assert ran.code == 0, ran.stderr
    doc: dict[str, Any] = json.loads(ran.stdout)
    return doc
