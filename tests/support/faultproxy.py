"""A fault-injecting HTTP/1.1 proxy for tests: ego4d-dl talks to it, it talks to the sandbox.

``FaultProxy`` listens on a loopback port of its own and relays every request byte for byte
(Host header included: SigV4 signs it, so nothing signed is ever rewritten) to the real S3
server, then applies scripted faults to the answer: reset the connection after N body bytes,
stall the body, answer an S3 error (503 SlowDown, 500 InternalError, 400 RequestTimeout, 403
ExpiredToken) with a proper XML body, end the body early, flip bytes, delay the answer or slow
the link, answer as a misbehaving server would (``Respond``: a reply the test writes, such as
a 200 with the whole object to a ranged GET), or hold requests until enough of them are in
flight together (``Gate``, a barrier). Faults are targeted by ``Match`` (method, bucket, key
pattern, ranged or not, signing access key; "the k-th such request") or drawn at random with
a seed (``RandomFaults``). The proxy can also go down (refuse connections, drop live ones) and
come back on the same port.

It runs its own event loop in a thread, so a test may drive the CLI as a subprocess or the
engine in-process on the main thread's loop. It records every request it served (``Seen``),
the most requests it had in flight at once and the body bytes it delivered, which is how the
tests measure what the tool really fetched. Test support only: imports nothing from ego4d_dl.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self, TypeVar

__all__ = [
    "Corrupt",
    "Delay",
    "ErrorReply",
    "Fault",
    "FaultProxy",
    "Gate",
    "Match",
    "RandomFaults",
    "Reply",
    "Request",
    "Reset",
    "Respond",
    "Rule",
    "Seen",
    "Stall",
    "Throttle",
    "Truncate",
]

_HOST = "127.0.0.1"
_RELAY_CHUNK_BYTES = 64 * 1024
_HEAD_LIMIT_BYTES = 256 * 1024
_CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/")


# --- faults ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Reset:
    """Send the headers and ``after_bytes`` of the body, then reset the connection (RST).

    A RST makes the receiver drop whatever it has not read yet, so the reset waits
    ``pause_s`` first: the bytes sent are then really received (0 for a blunter reset).
    """

    after_bytes: int = 0
    pause_s: float = 0.2


@dataclass(frozen=True, slots=True, kw_only=True)
class Stall:
    """Send ``after_bytes`` of the body, then nothing for ``seconds``, then the rest."""

    after_bytes: int = 0
    seconds: float = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Truncate:
    """Send ``after_bytes`` of the body, then close cleanly (FIN) short of Content-Length."""

    after_bytes: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Corrupt:
    """Flip every bit of ``count`` body bytes starting at body offset ``at_byte``."""

    at_byte: int = 0
    count: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Throttle:
    """Deliver the body at no more than ``rate_bytes_s``."""

    rate_bytes_s: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Delay:
    """Hold the request ``seconds`` before forwarding it (latency; the server sees it late)."""

    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReply:
    """Answer with an S3 error document instead of forwarding the request."""

    status: int
    reason: str
    code: str
    message: str

    @classmethod
    def slow_down(cls) -> ErrorReply:
        """503 SlowDown: S3's throttling answer."""
        return cls(
            status=503,
            reason="Slow Down",
            code="SlowDown",
            message="Please reduce your request rate.",
        )

    @classmethod
    def internal_error(cls) -> ErrorReply:
        """500 InternalError."""
        return cls(
            status=500,
            reason="Internal Server Error",
            code="InternalError",
            message="We encountered an internal error. Please try again.",
        )

    @classmethod
    def request_timeout(cls) -> ErrorReply:
        """400 RequestTimeout."""
        return cls(
            status=400,
            reason="Bad Request",
            code="RequestTimeout",
            message="Your socket connection to the server was not read from or written to "
            "within the timeout period.",
        )

    @classmethod
    def expired_token(cls) -> ErrorReply:
        """403 ExpiredToken: the keys' session has expired."""
        return cls(
            status=403,
            reason="Forbidden",
            code="ExpiredToken",
            message="The provided token has expired.",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """A whole HTTP answer: status line, headers (Content-Length is added) and body."""

    status: int
    reason: str = "OK"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Content-Length to announce, when it must not be the body's length (``None``: its length).
    content_length: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Respond:
    """Answer with ``answer(request)`` instead of forwarding: a server that misbehaves in a
    way no real one can be made to (ignores Range or If-Match, lies in Content-Range). The
    request never reaches the real server; ``answer`` runs on the proxy's thread."""

    answer: Callable[[Request], Reply]


@dataclass(slots=True, kw_only=True)
class Gate:
    """A barrier: hold each request until ``count`` are held at once, then release them all.

    It proves ``count`` requests were in flight together whatever the machine's speed; after
    ``timeout_s`` they go anyway, with ``opened`` left ``False``. One ``Gate`` is shared by the
    requests it holds, so give it to a rule with ``times=count``.
    """

    count: int
    timeout_s: float = 60.0
    held: int = 0
    opened: bool = False
    _event: asyncio.Event | None = field(default=None, init=False, repr=False)

    async def wait(self) -> None:
        """Called on the proxy's loop for each request the gate holds."""
        if self._event is None:
            self._event = asyncio.Event()
        self.held += 1
        if self.held >= self.count:
            self.opened = True
            self._event.set()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout_s):
                await self._event.wait()


Fault = Reset | Stall | Truncate | Corrupt | Throttle | Delay | ErrorReply | Respond | Gate


# --- targeting ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """What the proxy understood of one request."""

    method: str
    bucket: str
    key: str  # "" for bucket-level requests (listings)
    query: str
    range: str | None
    access_key: str | None
    if_match: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Match:
    """Which requests a rule concerns; ``None`` fields match anything.

    ``key`` is an ``fnmatch`` pattern over the object key; ``ranged`` selects requests with
    (or without) a Range header, ``range`` those asking exactly ``bytes=first-last``;
    ``access_key`` the key id the request was signed with.
    """

    method: str | None = None
    bucket: str | None = None
    key: str | None = None
    ranged: bool | None = None
    range: tuple[int, int] | None = None
    access_key: str | None = None

    def __call__(self, request: Request) -> bool:
        return (
            (self.method is None or request.method == self.method)
            and (self.bucket is None or request.bucket == self.bucket)
            and (self.key is None or fnmatch.fnmatchcase(request.key, self.key))
            and (self.ranged is None or (request.range is not None) == self.ranged)
            and (self.range is None or request.range == "bytes={}-{}".format(*self.range))
            and (self.access_key is None or request.access_key == self.access_key)
        )


@dataclass(slots=True, kw_only=True)
class Rule:
    """Apply ``fault`` to matching requests: skip the first ``after`` (whatever other rules
    did to them), then fire ``times`` times (``None``: forever). ``on_fire`` runs in a
    worker thread when the fault takes effect, before it does (e.g. to replace the object
    on the server mid-download)."""

    match: Match
    fault: Fault
    after: int = 0
    times: int | None = 1
    on_fire: Callable[[], None] | None = None
    matched: int = 0
    fired: int = 0

    def take(self, request: Request, *, available: bool) -> bool:
        """Count ``request`` if it matches; fire if it is ``available`` (no earlier rule
        fired for it), past the first ``after`` matches and not yet fired ``times`` times."""
        if not self.match(request):
            return False
        self.matched += 1
        if not available or self.matched <= self.after:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        self.fired += 1
        return True


@dataclass(slots=True, kw_only=True)
class RandomFaults:
    """Each matching request gets one of ``faults`` with ``probability``, drawn from a seeded
    generator (the draws repeat; which request gets which draw depends on timing)."""

    match: Match
    faults: Sequence[Fault]
    probability: float
    seed: int
    limit: int | None = None
    fired: int = 0
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self, request: Request) -> Fault | None:
        """The fault for ``request``, if any."""
        if not self.match(request) or (self.limit is not None and self.fired >= self.limit):
            return None
        if self._rng.random() >= self.probability:
            return None
        self.fired += 1
        return self._rng.choice(list(self.faults))


@dataclass(frozen=True, slots=True, kw_only=True)
class Seen:
    """One request the proxy served and what became of it."""

    method: str
    bucket: str
    key: str
    range: str | None
    access_key: str | None
    status: int | None  # None: no answer reached the client (the server was unreachable)
    body_bytes: int  # response body bytes delivered to the client
    fault: str | None  # the fault applied, by class name
    started: float  # time.monotonic() when the request arrived
    finished: float  # ... and when its answer ended (or broke off)


# --- the proxy ------------------------------------------------------------------------------

_R = TypeVar("_R", Rule, RandomFaults)


class _Abort(Exception):
    """The client connection must be dropped (a fault did it, or the client went away)."""


class FaultProxy:
    """A fault-injecting proxy in front of ``upstream_url``; use as a context manager."""

    def __init__(self, upstream_url: str) -> None:
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.hostname is None or parsed.port is None:
            raise ValueError(f"upstream needs host and port: {upstream_url!r}")
        self._upstream = (parsed.hostname, parsed.port)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._random: list[RandomFaults] = []
        self._seen: list[Seen] = []
        # Answers going on now, and their bytes so far.
        self._serving: dict[int, tuple[Request, _Progress]] = {}
        self._in_flight = 0
        self._max_in_flight = 0
        self._relayed = 0
        self._fired = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._down = False

    # --- life cycle ---

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the loop thread and listen on a free loopback port."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        """Stop listening, drop every connection, end the thread (safe to call twice)."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._close_all(final=True), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _call(self, coro: object) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, _HOST, self._port, reuse_address=True, backlog=1024
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def _close_all(self, *, final: bool = False) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        if final:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        """The endpoint URL to give ego4d-dl."""
        return f"http://{_HOST}:{self._port}"

    def go_down(self) -> None:
        """The server goes away: refuse new connections, reset the open ones."""
        self._down = True
        self._call(self._close_all())

    def come_back(self) -> None:
        """The server is back, on the same port."""
        self._down = False
        self._call(self._listen())

    # --- scripting and observations ---

    def add(self, rule: _R) -> _R:
        """Add a rule (checked in the order added; the first that fires wins)."""
        with self._lock:
            if isinstance(rule, Rule):
                self._rules.append(rule)
            else:
                self._random.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule (the observations stay)."""
        with self._lock:
            self._rules.clear()
            self._random.clear()

    def reset_observations(self) -> None:
        """Forget what was seen so far."""
        with self._lock:
            self._seen.clear()
            self._max_in_flight = self._in_flight

    @property
    def seen(self) -> list[Seen]:
        """Every finished request, in the order they finished."""
        with self._lock:
            return list(self._seen)

    @property
    def max_in_flight(self) -> int:
        """The most requests being served at once since the last ``reset_observations``."""
        with self._lock:
            return self._max_in_flight

    @property
    def bytes_relayed(self) -> int:
        """Response body bytes delivered so far, answers still in progress included."""
        with self._lock:
            return self._relayed

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Block until no request is being served (a killed client's requests included);
        ``False`` on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self._in_flight == 0:
                    return True
            time.sleep(0.01)
        return False

    def body_bytes(
        self, key_pattern: str = "*", method: str = "GET", *, in_progress: bool = False
    ) -> int:
        """Response body bytes delivered for requests whose key matches ``key_pattern``;
        with ``in_progress``, those of answers still going on (or held) count too."""
        with self._lock:
            served = [(s.method, s.key, s.body_bytes) for s in self._seen]
            if in_progress:
                served += [(r.method, r.key, p.sent) for r, p in self._serving.values()]
        return sum(
            n
            for m, key, n in served
            if m == method and key and fnmatch.fnmatchcase(key, key_pattern)
        )

    def wait_fired(self, rule: Rule, count: int = 1, timeout_s: float = 30.0) -> bool:
        """Block until ``rule`` fired ``count`` times; ``False`` on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._fired:
            while rule.fired < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._fired.wait(left)
            return True

    def _choose(self, request: Request) -> tuple[Fault | None, Rule | None]:
        with self._lock:
            chosen: Rule | None = None
            for rule in self._rules:
                if rule.take(request, available=chosen is None):
                    chosen = rule
            if chosen is not None:
                self._fired.notify_all()
                return chosen.fault, chosen
            for chooser in self._random:
                fault = chooser.draw(request)
                if fault is not None:
                    return fault, None
        return None, None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def _relay(self, n: int) -> None:
        with self._lock:
            self._relayed += n

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    # --- serving one client connection ---

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._down:
            writer.transport.abort()
            writer.close()
            return
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        upstream = _Upstream(self._upstream)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                body = await _read_request_body(reader, head)
                self._enter()
                try:
                    keep = await self._exchange(head, body, reader, writer, upstream)
                finally:
                    self._leave()
                if not keep:
                    return
        except (_Abort, ConnectionError, asyncio.IncompleteReadError):
            writer.transport.abort()
        except asyncio.CancelledError:
            # Only ``stop`` cancels; ending quietly keeps asyncio's stream callback from
            # logging the cancellation as an error.
            writer.transport.abort()
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            upstream.drop()
            writer.close()

    async def _exchange(
        self,
        head: bytes,
        body: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: _Upstream,
    ) -> bool:
        """One request and its answer; returns whether the client connection stays open."""
        request = _parse_request(head)
        fault, rule = self._choose(request)
        name = type(fault).__name__ if fault is not None else None
        status: int | None = None
        progress = _Progress()
        started = time.monotonic()
        with self._lock:
            self._serving[id(progress)] = (request, progress)

        def record() -> None:
            with self._lock:
                self._serving.pop(id(progress), None)
            self._record(
                Seen(
                    method=request.method,
                    bucket=request.bucket,
                    key=request.key,
                    range=request.range,
                    access_key=request.access_key,
                    status=status,
                    body_bytes=progress.sent,
                    fault=name,
                    started=started,
                    finished=time.monotonic(),
                )
            )

        async def fire() -> None:
            if rule is not None and rule.on_fire is not None:
                await asyncio.get_running_loop().run_in_executor(None, rule.on_fire)

        try:
            if isinstance(fault, ErrorReply):
                await fire()
                status = fault.status
                writer.write(_error_document(fault, request))
                await writer.drain()
                return True
            if isinstance(fault, Respond):
                await fire()
                reply = fault.answer(request)
                status = reply.status
                writer.write(_reply_head(reply, request))
                if request.method != "HEAD":
                    writer.write(reply.body)
                    progress.sent = len(reply.body)
                await writer.drain()
                # A body longer than announced leaves bytes no answer owns: close after it.
                return len(reply.body) == _announced_length(reply)
            if isinstance(fault, Delay):
                await fire()
                await _hold(fault.seconds, reader)
            if isinstance(fault, Gate):
                await fire()
                await _hold_until(fault.wait(), reader)
            up_reader, up_writer = await upstream.connect()
            up_writer.write(head + body)
            await up_writer.drain()
            status_line, headers, raw_head = await _read_response_head(up_reader)
            status = int(status_line.split()[1])
            writer.write(raw_head)
            framing = _framing(request.method, status, headers)
            reusable = "close" not in headers.get("connection", "").lower()
            if framing == "none":
                await writer.drain()
            elif framing == "chunked":
                await _relay_chunked(up_reader, writer, progress)
            else:
                length = int(framing) if framing != "eof" else None
                body_fault = fault if not isinstance(fault, Delay | Gate) else None
                complete = await self._relay_body(
                    up_reader, reader, writer, length, body_fault, fire, progress
                )
                if not complete:
                    raise _Abort
                reusable = reusable and length is not None
            if not reusable:
                upstream.drop()
            return framing != "eof"
        finally:
            record()

    async def _relay_body(
        self,
        up_reader: asyncio.StreamReader,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        length: int | None,
        fault: Fault | None,
        fire: Callable[[], object],
        progress: _Progress,
    ) -> bool:
        """Relay a body of ``length`` bytes (``None``: until EOF) applying ``fault``, counting
        delivered bytes in ``progress``; return whether the body went out whole."""
        sent = 0
        cut = fault.after_bytes if isinstance(fault, Reset | Stall | Truncate) else None
        stalled = False
        chunk_bytes = _RELAY_CHUNK_BYTES
        if isinstance(fault, Throttle):
            chunk_bytes = max(1, min(chunk_bytes, fault.rate_bytes_s // 20))
            await _maybe_await(fire())
        started = time.monotonic()
        while length is None or sent < length:
            want = chunk_bytes if length is None else min(chunk_bytes, length - sent)
            if cut is not None and sent < cut:
                want = min(want, cut - sent)
            if cut is not None and sent == cut and not stalled:
                await _maybe_await(fire())
                if isinstance(fault, Reset):
                    await writer.drain()
                    await asyncio.sleep(fault.pause_s)
                    _reset(writer)
                    return False
                if isinstance(fault, Truncate):
                    await writer.drain()
                    writer.close()
                    return False
                assert isinstance(fault, Stall)
                await writer.drain()
                stalled = True
                await _hold(fault.seconds, reader)
                if writer.transport.is_closing():
                    return False
            data = await up_reader.read(want)
            if not data:
                return length is None
            if isinstance(fault, Corrupt):
                data = _flip(data, sent, fault)
                if sent <= fault.at_byte < sent + len(data):
                    await _maybe_await(fire())
            writer.write(data)
            await writer.drain()
            sent += len(data)
            progress.sent = sent
            self._relay(len(data))
            if isinstance(fault, Throttle):
                ahead = sent / fault.rate_bytes_s - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        return True


@dataclass(slots=True)
class _Progress:
    """Body bytes delivered so far for one answer (kept when the connection breaks)."""

    sent: int = 0


class _Upstream:
    """The connection to the real server that serves one client connection's requests."""

    def __init__(self, address: tuple[str, int]) -> None:
        self._address = address
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The open connection, or a new one if there is none or the server closed it."""
        if self._conn is not None and self._conn[0].at_eof():
            self.drop()
        if self._conn is None:
            try:
                self._conn = await asyncio.open_connection(*self._address)
            except OSError:
                raise _Abort from None
        return self._conn

    def drop(self) -> None:
        """Close the connection without reading what is left of an answer."""
        if self._conn is not None:
            self._conn[1].transport.abort()
            self._conn[1].close()
            self._conn = None


async def _hold_until(done: Awaitable[object], reader: asyncio.StreamReader) -> None:
    """Await ``done`` while the client waits; if it hangs up first (a killed process, an
    abandoned request), drop the request then, rather than still serving it long after."""
    waiting = asyncio.ensure_future(done)
    try:
        while not waiting.done():
            if reader.at_eof():
                raise _Abort
            await asyncio.wait({waiting}, timeout=0.05)
    finally:
        waiting.cancel()


async def _hold(seconds: float, reader: asyncio.StreamReader) -> None:
    """Send nothing for ``seconds`` (see ``_hold_until``)."""
    await _hold_until(asyncio.sleep(seconds), reader)


async def _maybe_await(value: object) -> None:
    if asyncio.iscoroutine(value):
        await value


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN (SO_LINGER 0), as a dropped connection looks."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _flip(data: bytes, offset: int, fault: Corrupt) -> bytes:
    lo = max(fault.at_byte, offset)
    hi = min(fault.at_byte + fault.count, offset + len(data))
    if lo >= hi:
        return data
    out = bytearray(data)
    for i in range(lo - offset, hi - offset):
        out[i] ^= 0xFF
    return bytes(out)


def _parse_request(head: bytes) -> Request:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = _headers(lines[1:])
    path, _, query = target.partition("?")
    parts = urllib.parse.unquote(path).lstrip("/").split("/", 1)
    credential = _CREDENTIAL_RE.search(headers.get("authorization", ""))
    return Request(
        method=method,
        bucket=parts[0],
        key=parts[1] if len(parts) > 1 else "",
        query=query,
        range=headers.get("range"),
        access_key=credential[1] if credential else None,
        if_match=headers.get("if-match"),
    )


def _headers(lines: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        if not line:
            continue
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    return out


async def _read_request_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    headers = _headers(head.decode("latin-1").split("\r\n")[1:])
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = bytearray()
        while True:
            line = await reader.readuntil(b"\r\n")
            out += line
            size = int(line.split(b";")[0].strip(), 16)
            out += await reader.readexactly(size + 2)
            if size == 0:
                return bytes(out)
    length = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(length) if length else b""


async def _read_response_head(
    reader: asyncio.StreamReader,
) -> tuple[str, dict[str, str], bytes]:
    raw = await reader.readuntil(b"\r\n\r\n")
    if len(raw) > _HEAD_LIMIT_BYTES:
        raise _Abort
    lines = raw.decode("latin-1").split("\r\n")
    return lines[0], _headers(lines[1:]), raw


def _framing(method: str, status: int, headers: dict[str, str]) -> str:
    """``none``, ``chunked``, ``eof`` or the Content-Length, as a string."""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return "none"
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return "chunked"
    if "content-length" in headers:
        return headers["content-length"]
    return "eof"


async def _relay_chunked(
    up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, progress: _Progress
) -> None:
    while True:
        line = await up_reader.readuntil(b"\r\n")
        size = int(line.split(b";")[0].strip(), 16)
        data = await up_reader.readexactly(size + 2)
        writer.write(line + data)
        await writer.drain()
        progress.sent += size
        if size == 0:
            return


def _error_document(fault: ErrorReply, request: Request) -> bytes:
    request_id = uuid.uuid4().hex[:16].upper()
    resource = f"/{request.bucket}/{request.key}" if request.key else f"/{request.bucket}"
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{fault.code}</Code><Message>{fault.message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()
    body = b"" if request.method == "HEAD" else xml
    head = (
        f"HTTP/1.1 {fault.status} {fault.reason}\r\n"
        "Content-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"x-amz-request-id: {request_id}\r\n"
        "Server: FaultProxy\r\n"
        "\r\n"
    ).encode()
    return head + body


def _announced_length(reply: Reply) -> int:
    return len(reply.body) if reply.content_length is None else reply.content_length


def _reply_head(reply: Reply, request: Request) -> bytes:
    lines = [f"HTTP/1.1 {reply.status} {reply.reason}"]
    lines += [f"{name}: {value}" for name, value in reply.headers.items()]
    lines.append(f"Content-Length: {_announced_length(reply)}")
    lines.append(f"x-amz-request-id: {uuid.uuid4().hex[:16].upper()}")
    lines.append("Server: FaultProxy")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
