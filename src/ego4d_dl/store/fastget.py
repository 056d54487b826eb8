"""The hand-signed ranged GET: signed here (``signing``) and sent through the S3 client's own
HTTP session, to where botocore's last successful GET of the bucket went.

botocore spends ~3.5 ms of CPU per get_object (endpoint rules, hooks, parsing); this costs
~0.2 ms (see BENCHMARKS.md). It answers with the same ``RangeResponse`` botocore's path gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import html
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..signing import amz_date, sign_get
from .answers import error_for, reroutes
from .values import RangeResponse

if TYPE_CHECKING:
    import aiohttp

    from .adapter import HttpSession

__all__ = ["Handoff", "Route", "SignedGets", "route_from_request", "watch_gets"]


class Handoff(enum.Enum):
    """Why a ranged GET is made by botocore instead: one request there either way."""

    # Where the bucket's GETs go is not known (yet, or again), or the bucket stays with
    # botocore: its GET is the first request for this range.
    NO_ROUTE = "no route"
    # The route answered a redirect or a region error (``answers.reroutes``): botocore's
    # region handling asks again, and the route is learnt afresh from where it succeeds.
    REROUTED = "rerouted"


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Where the GETs of one bucket go: ``origin + prefix + quoted key``, signed for ``region``."""

    origin: str
    host: str
    prefix: str
    region: str


_SCOPE_RE = re.compile(r"^AWS4-HMAC-SHA256 Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/s3/aws4_request,")
_CODE_RE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")
_MESSAGE_RE = re.compile(rb"<Message>([^<]{0,512})</Message>")


def _quoted(key: str) -> str:
    return urllib.parse.quote(key, safe="/~")


def route_from_request(url: str, authorization: str, key: str) -> Route | None:
    """The route a GET of ``key`` that botocore sent implies (its URL, and the region in its
    SigV4 credential scope), or ``None`` if it is not a plain SigV4 GET of that key."""
    split = urllib.parse.urlsplit(url)
    quoted = _quoted(key)
    scope = _SCOPE_RE.match(authorization)
    if not split.path.endswith(quoted) or scope is None:
        return None
    return Route(
        origin=f"{split.scheme}://{split.netloc}",
        host=split.netloc,
        prefix=split.path[: len(split.path) - len(quoted)],
        region=scope[1],
    )


# The GETs botocore sends while one get_object call runs in this task: (URL, Authorization),
# the last one being where it succeeded (after any region redirect).
_SENT_GETS: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "ego4d_dl_sent_gets", default=None
)


def _record_get(request: Any, **_: Any) -> None:
    sent = _SENT_GETS.get()
    if sent is not None:
        auth = request.headers.get("Authorization", b"")
        sent.append((str(request.url), auth.decode() if isinstance(auth, bytes) else str(auth)))


def watch_gets(client: Any) -> None:
    """Have ``client`` tell ``SignedGets.learning`` where each GetObject request goes."""
    client.meta.events.register("before-send.s3.GetObject", _record_get)


async def _error_of(raw: aiohttp.ClientResponse) -> tuple[str, str]:
    """The ``<Code>`` and ``<Message>`` of an S3 error body (a few hundred bytes of XML)."""
    import aiohttp

    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        async with asyncio.timeout(5):
            body = await raw.content.read(64 * 1024)
        code = _CODE_RE.search(body)
        message = _MESSAGE_RE.search(body)
        return (
            code[1].decode("ascii") if code else "",
            html.unescape(message[1].decode("utf-8", "replace")) if message else "",
        )
    return "", ""


class SignedGets:
    """The hand-signed GETs of one store, and where each bucket's go."""

    __slots__ = ("_failed", "routes")

    def __init__(self) -> None:
        # Per bucket: where hand-signed GETs go (learnt from botocore's last successful GET
        # of it), or None where only botocore's path is used; absent: not known (yet, or again).
        self.routes: dict[str, Route | None] = {}
        # Per bucket: the route hand-signed GETs last failed on with a 3xx or a 400.
        self._failed: dict[str, Route] = {}

    async def get(
        self,
        session: HttpSession | None,
        credentials: Any,
        *,
        bucket: str,
        key: str,
        headers: Mapping[str, str],
    ) -> RangeResponse | Handoff:
        """The answer to a GET of ``key`` with ``headers`` (If-Match, Range), or why botocore
        must make it. An error answer raises its error (``answers.error_for``) at once."""
        route = self.routes.get(bucket)
        if session is None or credentials is None or route is None:
            return Handoff.NO_ROUTE
        from . import adapter

        frozen = await credentials.get_frozen_credentials()
        path = route.prefix + _quoted(key)
        signed = sign_get(
            host=route.host,
            path=path,
            headers=headers,
            region=route.region,
            access_key=frozen.access_key,
            secret_key=frozen.secret_key,
            session_token=frozen.token,
            date=amz_date(),
        )
        status, answered, raw = await adapter.send_get(session, route.origin + path, signed)
        if status in (200, 206):
            return adapter.range_response(
                raw,
                status=status,
                etag=answered.get("etag", ""),
                content_length=int(answered.get("content-length", -1)),
                content_range=answered.get("content-range", ""),
            )
        try:
            code, message = await _error_of(raw) if status >= 400 else ("", "")
        finally:
            raw.close()
        if reroutes(status, code):
            self._failed[bucket] = route
            self.routes.pop(bucket, None)
            return Handoff.REROUTED
        raise error_for(status, code, message, bucket=bucket, key=key)

    @contextlib.contextmanager
    def learning(self, bucket: str, key: str) -> Iterator[None]:
        """Around botocore's GET of ``key``: once it succeeded, hand-signed GETs of ``bucket``
        go where it went (its last request, after any region redirect), signed for its region."""
        sent: list[tuple[str, str]] = []
        watching = _SENT_GETS.set(sent)
        try:
            yield
        finally:
            _SENT_GETS.reset(watching)
        if bucket in self.routes or not sent:
            return
        url, authorization = sent[-1]
        route = route_from_request(url, authorization, key)
        if route is not None and route == self._failed.get(bucket):
            # botocore succeeded where the hand-signed GET failed, at the same place: the
            # difference is in the request itself, so this bucket stays with botocore.
            route = None
        self.routes[bucket] = route
