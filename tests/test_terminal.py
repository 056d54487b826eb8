"""The live dashboard in a real terminal: ego4d-dl runs in a tmux pane, and the pane is read
while it runs (the dashboard appears and updates), after Ctrl-C (the interrupted frame and
message, then a resumed run through the prompt) and at the end (the summary); ``demo`` too."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ego4d_dl.sandbox import Sandbox, SeededRelease
from tests.support.cli import cli_env
from tests.support.seed import MIB, Dataset, blobs, check_download, seed_dataset
from tests.support.slowlink import ThrottledProxy

_EXIT = re.compile(r"^EXIT_CODE:(\d+)$", re.MULTILINE)
_OVERALL = re.compile(r"([\d.]+)%\s+\S+ \S+ / \S+ \S+\s+\S+ \S+/s\s+ETA")


class Pane:
    """A tmux server of our own (its own socket) with one window running bash."""

    def __init__(self, width: int, height: int) -> None:
        tmux = shutil.which("tmux")
        assert tmux is not None, "the terminal tests need tmux"
        self._dir = Path(tempfile.mkdtemp(prefix="e4tmux-"))  # short: a socket path
        self._base = [tmux, "-S", str(self._dir / "sock")]
        size = ["-x", str(width), "-y", str(height)]
        subprocess.run(
            [*self._base, "new-session", "-d", *size, "bash --norc --noprofile"],
            env=cli_env(),
            check=True,
            timeout=30,
        )

    def run(self, command: str) -> None:
        """Type ``command`` and Enter; the pane then shows ``EXIT_CODE:<n>`` at its end."""
        self.keys(f"clear; {command}; echo EXIT_CODE:$?", "Enter")

    def keys(self, *keys: str) -> None:
        subprocess.run([*self._base, "send-keys", *keys], check=True, timeout=30)

    def text(self) -> str:
        """The screen and its scrollback, lines wrapped by the terminal joined again."""
        done = subprocess.run(
            [*self._base, "capture-pane", "-p", "-J", "-S", "-300"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return done.stdout

    def wait(self, until: Callable[[str], bool], timeout_s: float = 120) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.text()
            if until(text) or time.monotonic() > deadline:
                return text
            time.sleep(0.1)

    def exit_code(self, timeout_s: float = 120) -> tuple[int, str]:
        text = self.wait(lambda t: _EXIT.search(t) is not None, timeout_s)
        found = _EXIT.search(text)
        assert found is not None, f"no exit in time:\n{text}"
        return int(found.group(1)), text

    def close(self) -> None:
        subprocess.run([*self._base, "kill-server"], check=False, timeout=30)
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def pane() -> Iterator[Pane]:
    if shutil.which("tmux") is None:
        # CI installs tmux (.ci/run) and sets this, so there a missing tmux fails, never skips.
        if os.environ.get("EGO4D_DL_REQUIRE_TMUX"):
            pytest.fail("tmux is not installed, and EGO4D_DL_REQUIRE_TMUX says it must be")
        pytest.skip("tmux is not installed: the terminal tests need it (apt-get install tmux)")
    running = Pane(120, 40)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def watched(sandbox: Sandbox, release: SeededRelease) -> Dataset:
    """About 28 MiB: some 5 s through a 6 MiB/s link."""
    return seed_dataset(
        sandbox,
        "terminal_test",
        blobs("terminal_test", [12 * MIB, 8 * MIB, 6 * MIB, 2 * MIB, 300_000]),
    )


@pytest.fixture
def proxy(sandbox: Sandbox) -> Iterator[ThrottledProxy]:
    with ThrottledProxy(sandbox.endpoint_url, rate_bytes_s=6 * MIB) as running:
        yield running


def _download(out: Path, dataset: Dataset, endpoint: str, *extra: str) -> str:
    # fmt: off
    return shlex.join([
        sys.executable, "-m", "ego4d_dl", "download", "-o", str(out), "--datasets",
        dataset.name, "--endpoint-url", endpoint, *extra,
    ])
    # fmt: on


def _percent(text: str) -> float | None:
    found = _OVERALL.findall(text)
    return float(found[-1]) if found else None


def test_the_dashboard_appears_updates_and_ends_with_the_summary(
    aws_env: dict[str, str],
    watched: Dataset,
    proxy: ThrottledProxy,
    pane: Pane,
    tmp_path: Path,
) -> None:
    pane.run(_download(tmp_path, watched, proxy.url, "--yes"))
    frames: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = pane.text()
        if _EXIT.search(text):
            break
        if "downloading" in text and _percent(text) is not None:
            frames.append(text)
        time.sleep(0.2)
    percents = sorted({p for p in map(_percent, frames) if p is not None})
    assert len(percents) >= 3, frames[-1:]  # it redraws as bytes arrive
    assert percents[0] < 50.0
    live = frames[len(frames) // 2]
    assert "━" in live
    assert "transfers in flight" in live
    assert re.search(r"terminal_test/blob-0\d\.bin .*\d+\.\d%", live)
    assert re.search(r"terminal_test\s+━*.*\d+/5 files", live)
    assert "files " in live and " verified" in live
    assert "concurrency 16" in live

    code, final = pane.exit_code()
    assert code == 0, final
    assert "finished" in final
    assert "terminal_test" in final
    assert "6 downloaded and verified, 0 already complete, 0 failed" in final
    assert check_download(tmp_path, watched) == []


def test_ctrl_c_in_a_terminal_then_the_prompt_resumes(
    aws_env: dict[str, str],
    watched: Dataset,
    proxy: ThrottledProxy,
    tmp_path: Path,
) -> None:
    narrow = Pane(80, 40)
    try:
        command = _download(tmp_path, watched, proxy.url)
        narrow.run(command + " --yes")
        narrow.wait(lambda t: (_percent(t) or 0.0) >= 15.0)
        narrow.keys("C-c")
        code, text = narrow.exit_code()
        assert code == 130, text
        assert "stopping: cancelling requests in flight and saving progress" in text
        assert "interrupted" in text
        assert "transfers cut short (they resume next time)" in text
        done = re.search(r"interrupted: (\d+) files complete, resume with the same command", text)
        assert done is not None, text

        narrow.run(command)  # the same command, answering the prompt this time
        text = narrow.wait(lambda t: "Start the download? [Y/n]" in t)
        assert f"already complete, skipped: {done.group(1)} file" in text
        narrow.keys("Enter")
        code, text = narrow.exit_code()
        assert code == 0, text
        assert f"{done.group(1)} already complete, 0 failed" in text
        assert check_download(tmp_path, watched) == []
    finally:
        narrow.close()


@pytest.mark.slow
@pytest.mark.sandbox  # the demo starts a sandbox of its own
def test_demo_in_a_terminal(pane: Pane, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    pane.run(shlex.join([sys.executable, "-m", "ego4d_dl", "demo", "-o", str(out)]))
    code, text = pane.exit_code(timeout_s=240)
    assert code == 0, text
    assert "Ego4D v2_1 -> " in text  # the plan, then the dashboard's final frame
    assert "finished" in text
    assert re.search(r"full_scale\s+━+\s+100\.0%", text)
    assert "20 downloaded and verified" in text
    assert f"all 20 files are byte-identical to the sandbox's source; they are in {out}" in text
    assert "sandbox stopped" in text
    # The sandbox is really gone: nothing listens where it served.
    found = re.search(r"sandbox at http://127\.0\.0\.1:(\d+)", text)
    assert found is not None
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", int(found[1])), 2):
        pass
