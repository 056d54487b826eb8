"""A second Ctrl-C in ``demo`` leaves at once, and takes the sandbox with it: no server left
listening, no ``ego4d-dl-sandbox-*`` folder left in the temporary directory.

The demo's own download is too quick to interrupt on purpose (112 MiB from loopback in about
a second), so the test runs what ``demo`` sets up: its sandbox (``demo_release``) and the
signal handlers it installs, whose second signal stops that sandbox before ``os._exit``.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import cli_env

# The demo starts a sandbox of its own in the child process.
pytestmark = [pytest.mark.slow, pytest.mark.sandbox]


def _leftovers(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("ego4d-dl-sandbox-"))


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


@contextlib.contextmanager
def _started(args: list[str], tmp: Path) -> Iterator[subprocess.Popen[str]]:
    """``args`` running with TMPDIR=``tmp`` and stderr piped; killed if still running."""
    with subprocess.Popen(
        args,
        env=cli_env(TMPDIR=str(tmp)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _read_until(proc: subprocess.Popen[str], pattern: str, seen: list[str]) -> re.Match[str]:
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found
    raise AssertionError(f"no {pattern!r} before the end:\n{''.join(seen)}")


def test_the_second_signal_handler_stops_the_demo_sandbox(tmp_path: Path) -> None:
    """The handler a demo installs: the second SIGINT runs ``before_exit`` (the sandbox's
    stop) before ``os._exit``, which no ``finally`` would survive."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from ego4d_dl.cli.signals import on_signals
        from ego4d_dl.demo import demo_release

        async def main():
            with demo_release(Path({str(tmp_path / "out")!r}), concurrency=1) as demo:
                on_signals(lambda: None, "stopping", lambda m: print(m, file=sys.stderr,
                           flush=True), before_exit=demo.stop)
                print("sandbox at " + demo.endpoint_url, file=sys.stderr, flush=True)
                await asyncio.sleep(120)

        asyncio.run(main())
        """
    )
    seen: list[str] = []
    with _started([sys.executable, "-c", script], tmp) as proc:
        port = int(_read_until(proc, r"sandbox at http://127\.0\.0\.1:(\d+)", seen)[1])
        assert _leftovers(tmp), "the sandbox's folder should exist while it runs"
        proc.send_signal(signal.SIGINT)
        _read_until(proc, r"^stopping", seen)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    assert _leftovers(tmp) == []
    assert _refused(port)
