"""The confirmation question, answered at a terminal or through a pipe, as the original's was."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import stat
import sys
from typing import TextIO

from rich.text import Text

from ..downloading import free_bytes
from ..errors import NoAnswerError
from ..planned import Plan
from ..render import confirmation_text
from .console import stderr_console

__all__ = ["LineReader", "ask_yes_no"]


class LineReader:
    """Whole lines from a file descriptor, read without blocking the event loop.

    A terminal or a pipe is waited on by the event loop (a Ctrl-C stops the wait at once); a
    regular file or ``/dev/null`` cannot be polled but never blocks, so it is read directly.
    Bytes after the first line are kept for the next question.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self._eof = False

    async def readline(self) -> str | None:
        """The next line without its newline, or ``None`` at end of input."""
        while b"\n" not in self._buffer and not self._eof:
            chunk = await self._read()
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True
        if not self._buffer:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")

    async def _read(self) -> bytes:
        if not _pollable(self._fd):
            return os.read(self._fd, 4096)
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[bytes] = loop.create_future()

        def readable() -> None:
            if not ready.done():
                try:
                    ready.set_result(os.read(self._fd, 4096))
                except OSError as exc:
                    ready.set_exception(exc)

        loop.add_reader(self._fd, readable)
        try:
            return await ready
        finally:
            loop.remove_reader(self._fd)


def _pollable(fd: int) -> bool:
    """Whether epoll can wait on ``fd``: terminals, pipes and sockets, not files or /dev/null."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return True
    return stat.S_ISCHR(mode) and os.isatty(fd)


class _TextReader:
    """Lines from a text stream that has no file descriptor (tests' captured stdin)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    async def readline(self) -> str | None:
        line = self._stream.readline()
        return line.rstrip("\n") if line else None


def _reader_for(stream: TextIO | None) -> LineReader | _TextReader | None:
    if stream is None:
        return None
    with contextlib.suppress(io.UnsupportedOperation, ValueError, AttributeError):
        return LineReader(stream.fileno())
    return _TextReader(stream)


async def ask_yes_no(question: str, *, stdin: TextIO | None = None) -> bool:
    """Ask until the answer is yes (``y``, ``yes`` or just Enter) or no (``n``, ``no``).

    Raises ``NoAnswerError`` at end of input. ``stdin`` defaults to ``sys.stdin``.
    """
    reader = _reader_for(sys.stdin if stdin is None else stdin)
    while True:
        sys.stderr.write(question)
        sys.stderr.flush()
        answer = await reader.readline() if reader is not None else None
        if answer is None:
            sys.stderr.write("\n")
            raise NoAnswerError
        answer = answer.strip().lower()
        if answer in ("", "y", "yes"):
            return True
        if answer in ("n", "no"):
            return False


async def confirm_download(plan: Plan, *, assume_yes: bool, quiet: bool) -> bool:
    """Show what will happen (size, file count, free space, what resumes); ask unless --yes.

    The answer may come from a terminal or a pipe (``yes | ego4d-dl ...``), as with the
    original CLI; end of input is ``NoAnswerError`` (exit 1).
    """
    text = confirmation_text(plan, free_bytes=free_bytes(plan.output_directory))
    if assume_yes:
        if not quiet:
            stderr_console.print(Text(text + "\nStarting (--yes)."))
        return True
    return await ask_yes_no(text + "\nStart the download? [Y/n] ")
