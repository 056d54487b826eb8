"""Exit codes: pure functions of an error or of a command's result (unit-tested without Typer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError, CredentialsError, Ego4dDLError, ManifestError, PlanError
from ..events import StopKind
from ..results import Blame, Diagnosis, VerifyResult

if TYPE_CHECKING:
    from ..downloading import DownloadResult

__all__ = [
    "EXIT_CREDENTIALS",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "doctor_exit_code",
    "download_exit_code",
    "exit_code_for",
    "verify_exit_code",
]


EXIT_OK = 0

EXIT_FAILED = 1

EXIT_USAGE = 2

EXIT_CREDENTIALS = 3

EXIT_INTERRUPTED = 130


def exit_code_for(exc: Ego4dDLError) -> int:
    """The exit code an error maps to (the table in this module's docstring)."""
    if isinstance(exc, CredentialsError):
        return EXIT_CREDENTIALS
    if isinstance(exc, ConfigError | ManifestError | PlanError):
        return EXIT_USAGE
    return EXIT_FAILED


def download_exit_code(result: DownloadResult) -> int:
    summary = result.summary
    if summary is None:
        return EXIT_OK
    if summary.stop_kind is StopKind.CREDENTIALS:
        return EXIT_CREDENTIALS
    if summary.stop_kind is StopKind.INTERRUPTED:
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_FAILED


def doctor_exit_code(diagnosis: Diagnosis) -> int:
    blame = diagnosis.blame
    if blame is Blame.NONE:
        return EXIT_OK
    if blame is Blame.CREDENTIALS:
        return EXIT_CREDENTIALS
    if blame is Blame.CONFIG:
        return EXIT_USAGE
    return EXIT_FAILED


def verify_exit_code(result: VerifyResult) -> int:
    """0 only when every file is good (or was repaired); a repair run stopped by keys or a
    signal says so."""
    repair = result.repair
    if repair is not None and repair.stop_kind is StopKind.CREDENTIALS:
        return EXIT_CREDENTIALS
    if repair is not None and repair.stop_kind is StopKind.INTERRUPTED:
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_FAILED
