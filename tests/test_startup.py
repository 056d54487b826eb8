"""Start-up: what the light commands load (timings live in benchmarks/startup.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from ego4d_dl import __version__

# Modules whose import costs tenths of a second; a command that does not use them must not
# load them (issue 16's start-up target rests on this, the benchmark measures the time).
HEAVY = ("aioboto3", "aiobotocore", "botocore", "aiohttp", "rich", "ego4d_dl.engine", "pydantic")


class Ran(NamedTuple):
    code: int
    out: str
    err: str
    loaded: set[str]


def _loaded_after(argv: list[str]) -> Ran:
    """Run the entry point in a fresh interpreter; return its exit code, stdout and which
    heavy modules it had loaded when it finished."""
    probe = (
        "import sys, atexit, os\n"
        "from ego4d_dl import cli\n"
        f"sys.argv = ['ego4d-dl', *{argv!r}]\n"
        "def report(code):\n"
        f"    heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "    sys.stderr.write('LOADED:' + ','.join(heavy) + '\\n'); sys.stderr.flush()\n"
        "    real_exit(code)\n"
        "real_exit = os._exit\n"
        "os._exit = report\n"
        "cli.main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("LOADED:"))
    loaded = {m for m in line.removeprefix("LOADED:").split(",") if m}
    return Ran(done.returncode, done.stdout, done.stderr, loaded)


def test_bare_version_prints_the_tools_version_without_loading_typer() -> None:
    code, out, _, loaded = _loaded_after(["--version"])
    assert code == 0
    assert out == f"ego4d-dl {__version__}\n"
    assert not loaded


@pytest.mark.parametrize("argv", [["--help"], ["-h"], []])
def test_main_help_loads_no_command(argv: list[str]) -> None:
    code, out, err, loaded = _loaded_after(argv)
    if not argv:  # bare ``ego4d-dl`` shows the help on stderr, exit 2, as Click does
        assert (code, out) == (2, "")
        out = err
    else:
        assert code == 0
    assert "Commands:" in out
    for name in ("plan", "download", "verify", "status", "doctor", "datasets", "demo"):
        assert f"\n  {name} " in out
    assert not loaded


def test_version_with_a_value_is_still_the_original_release_flag() -> None:
    # ``--version v2`` is the original CLI's release; it must reach the download command,
    # which (without an output directory) stops with a usage error, not a version line.
    code, out, _, _ = _loaded_after(["--version", "v2"])
    assert code == 2
    assert __version__ not in out


def test_options_are_read_without_pydantic(tmp_path: Path) -> None:
    # Typer 0.2x would build a pydantic TypeAdapter for each option: ~0.1 s of every run.
    # Every option is read (the output directory is checked after them all).
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    argv = ["download", "-o", str(not_a_dir), "--concurrency", "8", "--stall-timeout", "5"]
    code, _, err, loaded = _loaded_after([*argv, "--datasets", "a", "b", "--yes"])
    assert code == 2
    assert "is a file, not a directory" in err
    assert "pydantic" not in loaded


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--concurrency", "Input should be a valid integer, unable to parse string as an integer"),
        ("--stall-timeout", "Input should be a valid number, unable to parse string as a number"),
    ],
)
def test_a_bad_number_is_still_a_usage_error_with_typers_message(flag: str, message: str) -> None:
    code, _, err, _ = _loaded_after(["download", "-o", "out", flag, "many"])
    assert code == 2
    assert f"Invalid value for '{flag}': {message}" in err


_TLS_PROBE = """
import asyncio, json, ssl
from ego4d_dl.config import Credentials
from ego4d_dl.credentials import make_session

make_session(Credentials())  # the first import of the stack in this interpreter
import aiobotocore.httpsession as hs
import aiohttp.connector as c

async def https_context():
    async with hs.AIOHTTPSession() as session:
        return session._create_connector(None)._ssl

ours = asyncio.run(https_context())
print(json.dumps({
    "aiohttp_default": c._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"],
    "aiohttp_default_verifies": c._SSL_CONTEXT_VERIFIED.verify_mode == ssl.CERT_REQUIRED,
    "fresh_default": ssl.create_default_context().cert_store_stats()["x509_ca"],
    "https_client": ours.cert_store_stats()["x509_ca"],
    "https_client_verifies": ours.verify_mode == ssl.CERT_REQUIRED,
}))
"""


def test_aiohttp_import_time_tls_contexts_load_no_cas_and_https_clients_still_do() -> None:
    """The first import of the stack skips the CAs of aiohttp's two import-time contexts
    (unused by us; ~55 ms): they stay verifying, so a use would fail closed. Contexts made
    afterwards, and the ones aiobotocore gives its HTTPS connectors, load CAs as ever."""
    import json

    ran = subprocess.run(
        [sys.executable, "-c", _TLS_PROBE], capture_output=True, text=True, check=False
    )
    assert ran.returncode == 0, ran.stderr
    found = json.loads(ran.stdout)
    assert found["aiohttp_default"] == 0 and found["aiohttp_default_verifies"]
    assert found["https_client"] > 0 and found["https_client_verifies"]
    # ssl itself is left as it was: a context made now loads the system's CAs again (where
    # the system has any; certifi's are what the HTTPS client above loaded).
    assert found["fresh_default"] == _system_cas()


def _system_cas() -> int:
    import ssl

    return int(ssl.create_default_context().cert_store_stats()["x509_ca"])
