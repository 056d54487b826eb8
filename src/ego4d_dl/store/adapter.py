"""The one place that reaches into private aiobotocore, aiohttp and asyncio surfaces.

Each is listed by ``missing_surfaces``; tests/test_store_adapter.py runs it, so an upgrade
that moves one fails loudly there instead of quietly slowing or breaking downloads.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypeAlias

import aiohttp
from aiobotocore.awsrequest import AioAWSResponse
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.response import StreamingBody
from botocore.awsrequest import AWSPreparedRequest

from .values import RangeResponse, normalise_etag

__all__ = [
    "HttpSession",
    "NoRedirectSession",
    "client_surfaces_missing",
    "http_session_of",
    "missing_surfaces",
    "range_response",
    "range_response_of_get_object",
    "send_get",
]

# asyncio reads a socket at most 256 KiB at a time (``_SelectorSocketTransport.max_size``), and
# each read is a trip through aiohttp's parser, its StreamReader and our loop, all on the one
# event-loop thread that bounds a fast download. 1 MiB per read measured on ``large``: client
# user CPU 2.9 -> 2.4 s, system 2.0 -> 1.4 s, wall 6.3 -> 5.5-5.9 s; 4 MiB cost more system
# time (fresh mappings per read) and RSS.
_SOCKET_READ_BYTES = 1 << 20

# The S3 client's HTTP session, through which hand-signed GETs are sent too.
HttpSession: TypeAlias = AIOHTTPSession


def http_session_of(client: Any) -> HttpSession | None:
    """The client's own HTTP session (same pool, TLS, proxy and timeouts), if reachable."""
    # Private: botocore's client keeps its endpoint as ``_endpoint``.
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    return session if isinstance(session, AIOHTTPSession) else None


class NoRedirectSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's HTTP session, except that no request follows a redirect.

    aiohttp follows 301/302/303/307/308 by default, and aiobotocore does not say otherwise:
    a 307 to another origin would get the ``x-amz-security-token`` header (aiohttp drops
    only Authorization) and its answer would be taken for the object's bytes. botocore
    expects to see the 3xx itself: its region redirector re-resolves the endpoint.
    """

    # Private: ``send`` gets its aiohttp session from ``_get_session(proxy_url)``.
    async def _get_session(self, proxy_url: str | None) -> Any:
        return _WithoutRedirects(await super()._get_session(proxy_url))


class _WithoutRedirects:
    """An ``aiohttp.ClientSession`` whose ``request`` never follows redirects."""

    __slots__ = ("_session",)

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        return self._session.request(method, url, allow_redirects=False, **kwargs)


def _widen_reads(response: aiohttp.ClientResponse) -> None:
    """Let the connection under ``response`` read up to ``_SOCKET_READ_BYTES`` at a time.

    Only where the transport is asyncio's plain socket transport with an integer
    ``max_size`` (TLS and other event loops read their own way and are left alone).
    """
    connection = response.connection
    transport = connection.transport if connection is not None else None
    # Private: asyncio's ``_SelectorSocketTransport.max_size``, the size of each recv().
    current = getattr(transport, "max_size", None)
    if type(current) is int and current < _SOCKET_READ_BYTES:
        transport.max_size = _SOCKET_READ_BYTES  # type: ignore[union-attr]


def range_response(
    raw: aiohttp.ClientResponse, *, status: int, etag: str, content_length: int, content_range: str
) -> RangeResponse:
    """Our value for an aiohttp answer to a ranged GET, its connection set to read widely."""
    _widen_reads(raw)
    return RangeResponse(
        status=status,
        etag=normalise_etag(etag),
        content_length=content_length,
        content_range=content_range,
        body=raw.content,
        release=raw.close,
    )


def range_response_of_get_object(resp: Mapping[str, Any]) -> RangeResponse:
    """Our value for botocore's ``get_object`` answer."""
    # Private: aiobotocore's StreamingBody is a proxy of the aiohttp answer, ``__wrapped__``.
    raw: aiohttp.ClientResponse = resp["Body"].__wrapped__
    return range_response(
        raw,
        status=int(resp["ResponseMetadata"]["HTTPStatusCode"]),
        etag=str(resp.get("ETag", "")),
        content_length=int(resp.get("ContentLength", -1)),
        content_range=str(resp.get("ContentRange", "")),
    )


async def send_get(
    session: HttpSession, url: str, headers: Mapping[str, str]
) -> tuple[int, Mapping[str, str], aiohttp.ClientResponse]:
    """Send a signed GET through ``session``: its status, headers (lower-case names) and
    the aiohttp answer whose body is still to be read."""
    request = AWSPreparedRequest("GET", url, headers, None, stream_output=True)
    answer = await session.send(request)
    return int(answer.status_code), answer.headers, answer.raw


def missing_surfaces() -> list[str]:
    """The private surfaces this module uses that the installed versions do not offer."""
    from asyncio import selector_events

    missing: list[str] = []
    get_session = getattr(AIOHTTPSession, "_get_session", None)
    if not (
        inspect.iscoroutinefunction(get_session)
        and list(inspect.signature(get_session).parameters) == ["self", "proxy_url"]
        and "self._get_session(proxy_url)" in inspect.getsource(AIOHTTPSession.send)
    ):
        missing.append("aiobotocore AIOHTTPSession.send calling self._get_session(proxy_url)")
    marker = object()
    if getattr(StreamingBody(marker, "0"), "__wrapped__", None) is not marker:
        missing.append("aiobotocore StreamingBody(raw).__wrapped__ is raw")
    if list(inspect.signature(AioAWSResponse.__init__).parameters)[1:] != [
        "url",
        "status_code",
        "headers",
        "raw",
    ]:
        missing.append("aiobotocore AioAWSResponse(url, status_code, headers, raw)")
    transport_cls = getattr(selector_events, "_SelectorSocketTransport", None)
    if type(getattr(transport_cls, "max_size", None)) is not int:
        missing.append("asyncio _SelectorSocketTransport.max_size (an int)")
    if not inspect.iscoroutinefunction(getattr(aiohttp.StreamReader, "readchunk", None)):
        missing.append("aiohttp StreamReader.readchunk")
    return missing


def client_surfaces_missing(client: Any) -> list[str]:
    """Those of an S3 client made with ``http_session_cls=NoRedirectSession``."""
    session = http_session_of(client)
    if session is None:
        return ["botocore client._endpoint.http_session (an aiobotocore AIOHTTPSession)"]
    if not isinstance(session, NoRedirectSession):
        return ["AioConfig(http_session_cls=...) no longer builds the client's HTTP session"]
    return []
