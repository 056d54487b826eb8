"""Names from a hostile manifest or server are shown as text: Rich markup (``[/x]`` used to
crash ``plan`` and ``download``, ``[link=...]`` made a hyperlink), emoji codes, ESC sequences,
newlines and bidi overrides never reach the terminal as such. Names holding control
characters are malformed rows; the others are downloaded.

A release of such names is seeded into the sandbox and planned and downloaded through the
CLI, in a pipe and in a real terminal (tmux), besides unit tests of ``text.safe`` and of each
renderer on a console that has markup and emoji switched on.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from ego4d_dl.dashboard import Dashboard
from ego4d_dl.events import (
    FileFailed,
    FileOutcome,
    FileStarted,
    FileStatus,
    RangeRetried,
    RunStarted,
    RunSummary,
)
from ego4d_dl.manifest import MalformedRow, ManifestRow, parse_manifest
from ego4d_dl.render import render_datasets, render_summary
from ego4d_dl.sandbox import CONSORTIUM_BUCKET, Sandbox, SeededRelease, fake_bytes
from ego4d_dl.sinks import PlainProgressSink
from ego4d_dl.text import safe
from tests.support.cli import cli, cli_env, cli_process

DATASET = "hostile_names_test"
PREFIX = f"public/v2/{DATASET}"
ESC_RED = "\x1b[31m"
OSC8_LINK = "\x1b]8;;mailto:x@evil.example\x1b\\"
LINK_MARKUP = "[link=https://evil.example/]click me[/link]"


# --- text.safe --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain [/x] [link=https://e.example]x[/link] :cross_mark:", None),
        ("red\x1b[31mtext", "red\\x1b[31mtext"),
        ("two\nlines\r\tand a tab", "two\\nlines\\r\\tand a tab"),
        ("\u202eevil.exe", "\\u202eevil.exe"),
        ("c1 \x9b csi and \x7f del", "c1 \\x9b csi and \\x7f del"),
        ("bell\x07 nul\x00", "bell\\x07 nul\\x00"),
        ("line\u2028separator", "line\\u2028separator"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("tag \U000e0041", "tag \\U000e0041"),
        ("surrogate \udcff from a file name", "surrogate \\udcff from a file name"),
        ("日本語 é ß, non-breaking\u00a0space", None),
    ],
)
def test_safe_escapes_control_characters_visibly(raw: str, shown: str | None) -> None:
    assert safe(raw) == (raw if shown is None else shown)


_UNSAFE = {"Cc", "Cf", "Cs", "Zl", "Zp"}


@given(st.text())
def test_safe_output_has_no_control_characters_and_is_stable(text: str) -> None:
    out = safe(text)
    assert not [c for c in out if unicodedata.category(c) in _UNSAFE]
    assert safe(out) == out
    if not any(unicodedata.category(c) in _UNSAFE for c in text):
        assert out == text


# --- renderers, on a console that would interpret markup and emoji ---------------------------


def _console() -> Console:
    return Console(record=True, width=300, force_terminal=True, color_system="truecolor")


def _assert_shown_as_text(console: Console, *names: str) -> str:
    text = console.export_text()
    ansi = console.export_text(styles=True)
    for name in names:
        assert safe(name) in text, (name, text)
    assert "\x1b]8;" not in ansi  # no hyperlink was made
    assert ESC_RED not in text and "\u202e" not in text
    return text


HOSTILE = [
    "[/x]",
    LINK_MARKUP,
    "[bold]loud[/bold] :cross_mark:",
    f"esc{ESC_RED}red",
    "new\nline",
    "\u202eevil",
]


def _summary() -> RunSummary:
    problems = tuple(
        FileOutcome(
            dataset=DATASET,
            uid=name,
            key=f"{PREFIX}/{name}.json",
            dest=Path("/data") / f"{i}.json",
            status=FileStatus.MISSING,
            reason=f"s3://{CONSORTIUM_BUCKET}/{PREFIX}/{name}.json: no such object (404)",
        )
        for i, name in enumerate(HOSTILE)
    )
    return RunSummary(
        files=len(problems),
        verified=0,
        skipped=0,
        failed=0,
        missing=len(problems),
        denied=0,
        bytes_fetched=0,
        size_bytes=0,
        elapsed_s=1.0,
        retries=0,
        restarts=0,
        levels={},
        problems=problems,
    )


def test_the_summary_shows_hostile_names_as_text() -> None:
    console = _console()
    render_summary(console, _summary())
    text = _assert_shown_as_text(console, *HOSTILE)
    assert "[bold]loud[/bold] :cross_mark:" in text  # neither markup nor an emoji


def test_the_datasets_table_shows_hostile_cells_as_text() -> None:
    console = _console()
    render_datasets(console, "v2_1", [(name, f"about {name}") for name in HOSTILE])
    _assert_shown_as_text(console, *HOSTILE)


def test_plain_lines_and_the_dashboard_escape_hostile_names() -> None:
    key = f"{PREFIX}/new\nline{ESC_RED}{OSC8_LINK}[x].json"
    out = io.StringIO()
    sink = PlainProgressSink(out, ticking=False)
    sink(
        RangeRetried(
            dataset=DATASET,
            key=key,
            start=0,
            stop=10,
            attempt=1,
            delay_s=0.5,
            reason=f"s3://{CONSORTIUM_BUCKET}/{key}: server said {ESC_RED}500\nforged line",
        )
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines  # a newline in a key forges no log line
    assert "\x1b" not in lines[0], lines[0]
    assert "new\\nline\\x1b[31m\\x1b]8;;mailto:x@evil.example\\x1b\\[x].json" in lines[0]

    console = _console()
    board = Dashboard(console, live=False, clock=lambda: 10.0)
    board(
        RunStarted(
            files=1, size_bytes=10, present_bytes=0, fetch_bytes=10, skipped_files=0, concurrency=1
        )
    )
    board(FileStarted(dataset=DATASET, key=key, dest=Path("/d/x"), size_bytes=10, present_bytes=0))
    board(
        FileFailed(
            dataset=DATASET, key=key, dest=Path("/d/x"), status=FileStatus.FAILED, reason="[/x]"
        )
    )
    console.print(board.render())
    frame = console.export_text()
    assert "\x1b" not in frame and "new\\nline" in frame and "[/x]" in frame


def test_manifest_rows_with_control_characters_are_malformed() -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file_uid", "s3_path"])
    good = ["[/x]", f"s3://{CONSORTIUM_BUCKET}/{PREFIX}/[/x]/closing.json"]
    writer.writerows(
        [
            good,
            [f"esc{ESC_RED}", f"s3://{CONSORTIUM_BUCKET}/{PREFIX}/a.json"],
            ["newline", f"s3://{CONSORTIUM_BUCKET}/{PREFIX}/new\nline.json"],
            ["bidi", f"s3://{CONSORTIUM_BUCKET}/{PREFIX}/\u202egnp.exe"],
            ["dir", f"s3://{CONSORTIUM_BUCKET}/{PREFIX}/{OSC8_LINK}/x.json"],
        ]
    )
    _, rows = parse_manifest(io.StringIO(out.getvalue(), newline=""), source="test")
    parsed = list(rows)
    assert isinstance(parsed[0], ManifestRow) and parsed[0].filename == "closing.json"
    assert all(isinstance(r, MalformedRow) for r in parsed[1:]), parsed
    assert all("control characters" in r.reason for r in parsed[1:] if isinstance(r, MalformedRow))


def test_error_lines_quote_hostile_input_as_text(tmp_path: Path) -> None:
    ran = cli("plan", "-o", tmp_path, "--datasets", "[/x]")
    assert ran.code == 2
    assert "[/x]" in ran.error_line()  # it used to crash the error line itself
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"datasets": [f"esc{ESC_RED}[/x]"]}), encoding="utf-8")
    ran = cli("plan", "-o", tmp_path, "--config", config)
    assert ran.code == 2 and "\x1b" not in ran.stderr, ran.stderr
    assert "esc\\x1b[31m[/x]" in ran.error_line()


# --- a hostile release in the sandbox ---------------------------------------------------------


@dataclass(frozen=True)
class HostileRelease:
    downloaded: dict[str, str]  # relative path -> md5 of the files that must land
    missing_uids: tuple[str, ...]
    malformed: int


# (uid, key basename or path below PREFIX, uploaded)
_ROWS = [
    ("[/x]", "[/x]/closing-tag.json", True),
    (LINK_MARKUP, "[link=mailto:x@evil.example]click.json", True),
    ("emoji", ":cross_mark:[bold]loud.json", True),
    (f"esc{ESC_RED}red", "esc.json", True),
    ("newline", "new\nline.json", False),
    ("bidi", "\u202egnp.json", False),
    ("osc8", f"{OSC8_LINK}dir/plain.json", False),
    ("gone [/x]", "[/x]/gone.json", False),
    (LINK_MARKUP + " gone", "[link=mailto:x@evil.example]gone.json", False),
]


@pytest.fixture(scope="module")
def hostile(sandbox: Sandbox, release: SeededRelease) -> HostileRelease:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file_uid", "s3_path", "type"])
    downloaded = {}
    for uid, name, upload in _ROWS:
        key = f"{PREFIX}/{name}"
        writer.writerow([uid, f"s3://{CONSORTIUM_BUCKET}/{key}", "file"])
        if upload:
            data = fake_bytes(key, 4096)
            sandbox.put_object(CONSORTIUM_BUCKET, key, data)
            if safe(uid) == uid:
                downloaded[f"v2/{DATASET}/{name.rsplit('/', 1)[-1]}"] = hashlib.md5(
                    data
                ).hexdigest()
    sandbox.put_object(
        CONSORTIUM_BUCKET, f"public/v2_1/{DATASET}/manifest.csv", out.getvalue().encode()
    )
    return HostileRelease(
        downloaded=downloaded,
        missing_uids=("gone [/x]", LINK_MARKUP + " gone"),
        malformed=4,
    )


def _landed(out: Path, hostile: HostileRelease) -> dict[str, str]:
    return {
        rel: hashlib.md5((out / rel).read_bytes()).hexdigest()
        for rel in hostile.downloaded
        if (out / rel).is_file()
    }


def test_a_hostile_release_plans_without_a_crash(
    sandbox: Sandbox, hostile: HostileRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    ran = cli("plan", "-o", tmp_path, "--datasets", DATASET, "--endpoint-url", sandbox.endpoint_url)
    assert ran.code == 0, ran.stderr
    both = ran.stdout + ran.stderr
    assert "\x1b" not in both and "\u202e" not in both, both
    assert f"{hostile.malformed} malformed manifest rows skipped" in ran.stderr
    assert "esc\\x1b[31mred" in ran.stderr  # the first malformed row, escaped
    for uid in hostile.missing_uids:
        assert f"missing: {DATASET}/{uid}: " in ran.stdout, ran.stdout


def test_a_hostile_release_downloads_in_a_pipe(
    sandbox: Sandbox, hostile: HostileRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    # fmt: off
    args = [
        "download", "-o", str(tmp_path), "--datasets", DATASET, "--no-metadata",
        "--endpoint-url", sandbox.endpoint_url, "--yes",
    ]
    # fmt: on
    done = cli_process(*args)
    assert done.code == 1, done.stderr  # missing files and malformed rows
    assert "Traceback" not in done.stderr
    both = done.stdout + done.stderr
    assert "\x1b" not in both and "\u202e" not in both, both
    assert "3 downloaded and verified" in done.stdout
    for uid in hostile.missing_uids:
        assert f"missing: {DATASET}/{uid} (" in done.stdout
    assert _landed(tmp_path, hostile) == hostile.downloaded

    json_run = cli_process(*args, "--json")
    assert json_run.code == 1, json_run.stderr
    docs = [json.loads(line) for line in json_run.stdout.splitlines()]
    assert "\x1b" not in json_run.stdout  # JSON escapes control characters itself
    skipped = {d["key"] for d in docs if d["event"] == "FileSkipped"}
    assert f"{PREFIX}/[link=mailto:x@evil.example]click.json" in skipped


_EXIT = re.compile(r"^EXIT_CODE:\d+$", re.MULTILINE)


class _Pane:
    """A tmux server of our own, one window of ``width`` x ``height`` running bash."""

    def __init__(self, width: int = 160, height: int = 50) -> None:
        tmux = shutil.which("tmux")
        assert tmux is not None
        self._dir = Path(tempfile.mkdtemp(prefix="e4tmux-"))
        self._base = [tmux, "-S", str(self._dir / "sock")]
        subprocess.run(
            [*self._base, "new-session", "-d", "-x", str(width), "-y", str(height), "bash"],
            env=cli_env(),
            check=True,
            timeout=30,
        )

    def run(self, command: str) -> None:
        subprocess.run(
            [*self._base, "send-keys", f"clear; {command}; echo EXIT_CODE:$?", "Enter"],
            check=True,
            timeout=30,
        )

    def text(self) -> str:
        done = subprocess.run(
            [*self._base, "capture-pane", "-p", "-J", "-S", "-300"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return done.stdout

    def wait_exit(self, timeout_s: float = 120) -> str:
        deadline = time.monotonic() + timeout_s
        while not _EXIT.search(text := self.text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return text

    def close(self) -> None:
        subprocess.run([*self._base, "kill-server"], check=False, timeout=30)
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def pane() -> Iterator[_Pane]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    running = _Pane()
    try:
        yield running
    finally:
        running.close()


def test_a_hostile_release_in_a_terminal_shows_names_escaped(
    sandbox: Sandbox, hostile: HostileRelease, aws_env: dict[str, str], tmp_path: Path, pane: _Pane
) -> None:
    # fmt: off
    pane.run(shlex.join([
        sys.executable, "-m", "ego4d_dl", "download", "-o", str(tmp_path), "--datasets",
        DATASET, "--no-metadata", "--endpoint-url", sandbox.endpoint_url, "--yes",
    ]))
    # fmt: on
    text = pane.wait_exit()
    assert re.search(r"^EXIT_CODE:1$", text, re.MULTILINE), text
    assert "Traceback" not in text
    assert "finished with problems" in text  # the dashboard's last frame
    assert "3 downloaded and verified" in text
    # Markup shown as the characters it is made of, not obeyed:
    assert f"missing: {DATASET}/gone [/x] ({PREFIX}/[/x]/gone.json)" in text
    assert f"missing: {DATASET}/{LINK_MARKUP} gone (" in text
    # An ESC from the manifest shown as \x1b, not obeyed by the terminal:
    assert "esc\\x1b[31mred" in text
    assert _landed(tmp_path, hostile) == hostile.downloaded
