"""Helpers for driving the command line in tests: in-process (CliRunner) or as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from ego4d_dl.cli import app
from ego4d_dl.sandbox import CONSORTIUM_BUCKET, Sandbox

__all__ = ["Ran", "cli", "cli_subprocess", "plan_json", "put_manifest"]


@dataclass(frozen=True)
class Ran:
    """What a command printed and returned."""

    code: int
    stdout: str
    stderr: str

    @property
    def error_line(self) -> str:
        """The one ``error:`` line on stderr (asserting there is exactly one)."""
        lines = [line for line in self.stderr.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, self.stderr
        return lines[0]


def cli(*args: str | Path) -> Ran:
    """Run ``ego4d-dl args`` in-process, as a user would type it."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)


def cli_subprocess(
    *args: str | Path, env: dict[str, str], timeout_s: float = 120, stdin: str | None = None
) -> Ran:
    """Run ``python -m ego4d_dl args`` in a child process (for signals and real stdio)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ego4d_dl", *(str(a) for a in args)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        input=stdin,
        check=False,
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def plan_json(sandbox: Sandbox, out: Path, *args: str | Path) -> dict[str, Any]:
    """``ego4d-dl plan --json`` against the sandbox, parsed."""
    ran = cli("plan", "--json", "-o", out, "--endpoint-url", sandbox.endpoint_url, *args)
    assert ran.code == 0, ran.stderr
    doc: dict[str, Any] = json.loads(ran.stdout)
    return doc


def put_manifest(
    sandbox: Sandbox, dataset: str, header: str, rows: Sequence[str], version: str = "v2_1"
) -> None:
    """Publish a manifest for ``dataset`` in the sandbox's consortium bucket."""
    body = "\n".join([header, *rows]) + "\n"
    sandbox.create_bucket(CONSORTIUM_BUCKET)
    sandbox.put_object(CONSORTIUM_BUCKET, f"public/{version}/{dataset}/manifest.csv", body.encode())
