"""S3 access behind a small Protocol; the one place botocore and aiohttp errors become ours.

``S3Store`` wraps aioboto3 clients: HEAD (optionally of one upload part), ListObjectsV2 pages,
small whole-object reads (manifests) and ranged GETs that carry ``If-Match`` and are checked
against the Content-Range the server sends (signed by ``signing`` and sent through the client's
own HTTP session, botocore's pipeline being the costly part). Each bucket's region is resolved
once (HeadBucket's ``x-amz-bucket-region``) and served by a client of that region; proxies come
from HTTPS_PROXY / HTTP_PROXY / NO_PROXY as botocore reads them. No request follows a redirect:
a 3xx or a region error goes to botocore's own region handling, and hand-signed GETs go where
botocore's last successful GET of the bucket went. Nothing above this module sees botocore.
Imports ``config``, ``signing``, ``integrity`` and ``errors`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import hashlib
import os
import re
import urllib.parse
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

import aioboto3
import aiohttp
import botocore.exceptions
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.response import StreamingBody
from botocore.awsrequest import AWSPreparedRequest
from botocore.httpsession import mask_proxy_url
from botocore.utils import get_environ_proxies

from .config import Credentials, Endpoint
from .errors import (
    AccessDeniedError,
    ConfigError,
    CredentialsError,
    Ego4dDLError,
    NetworkError,
    ObjectNotFoundError,
    RemoteChangedError,
    TransientError,
)
from .etags import VerifyLevel, etag_kind
from .signing import amz_date, sign_get

__all__ = [
    "CREDENTIAL_CODES",
    "BucketProbe",
    "KeyInfo",
    "ListPage",
    "ListedObject",
    "ObjectHead",
    "ObjectStore",
    "RangeBody",
    "S3Store",
    "normalise_etag",
    "proxy_for",
    "region_from_headers",
    "resolve_keys",
    "usable_region",
]

# Codes that mean the keys themselves are bad, as opposed to one object being off limits.
CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidToken",
        "InvalidClientTokenId",
        "AccountProblem",
        "RequestTimeTooSkewed",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
        "502",
        "504",
        "BadGateway",
        "GatewayTimeout",
    }
)
_THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "503"})
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_CHECKSUM_FIELDS = ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1")
_CHECKSUM_FIELDS_ALL = (*_CHECKSUM_FIELDS, "ChecksumSHA256")


def normalise_etag(raw: str) -> str:
    """An ETag as we store and compare it: no quotes, no weak ``W/`` prefix, lower case."""
    etag = raw.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"').lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectHead:
    """What a HEAD tells about an object (or, with a part number, about one upload part)."""

    bucket: str
    key: str
    size_bytes: int
    etag: str
    parts_count: int | None = None
    # With a part number: the byte range [start, stop) of that part.
    part_range: tuple[int, int] | None = None
    checksums: Mapping[str, str] = field(default_factory=dict)
    # x-amz-version-id: None for an object of a bucket that never had versioning.
    version_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ListedObject:
    """One entry of a ListObjectsV2 page."""

    key: str
    size_bytes: int
    etag: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ListPage:
    """One ListObjectsV2 page and the token of the next (``None`` on the last page)."""

    items: tuple[ListedObject, ...]
    next_token: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BucketProbe:
    """What one HeadBucket said about a bucket."""

    bucket: str
    status: int  # HTTP status: 200, 403 (no ListBucket permission), 404, 301, ...
    code: str  # the error code of a failed answer, "" on success
    region: str | None  # x-amz-bucket-region, when the server names it
    server_date: float | None  # the server's Date header as a Unix time


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyInfo:
    """The keys the AWS credential chain found (never the secret) and where it found them."""

    access_key_id: str
    method: str  # botocore's name for the source: env, shared-credentials-file, ...
    has_session_token: bool
    profile_region: str | None  # the region configured for the profile, as written


class RangeBody(Protocol):
    """A response body being streamed; ``read`` returns ``b""`` at the end."""

    async def read(self, max_bytes: int) -> bytes: ...


class ObjectStore(Protocol):
    """What the planner and the engine need from S3; ``S3Store`` is the real one."""

    async def head(
        self, bucket: str, key: str, *, part_number: int | None = None, checksums: bool = False
    ) -> ObjectHead: ...

    async def list_page(
        self, bucket: str, *, prefix: str, start_after: str = "", token: str | None = None
    ) -> ListPage: ...

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        """A whole small object; bytes that contradict an MD5 ETag are a ``TransientError``."""
        ...

    async def list_folders(self, bucket: str, *, prefix: str) -> tuple[str, ...]: ...

    def get_range(
        self, bucket: str, key: str, *, start: int, stop: int, size_bytes: int, etag: str
    ) -> contextlib.AbstractAsyncContextManager[RangeBody]: ...


def _error_code(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    err = exc.response.get("Error", {})
    meta = exc.response.get("ResponseMetadata", {})
    return str(err.get("Code", "")), int(meta.get("HTTPStatusCode", 0) or 0)


def _where(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


# What botocore raises when a credential provider cannot produce keys: a credential_process
# that fails, an SSO token that expired or cannot be loaded, an assume-role refresh that
# needs MFA, the instance metadata service... (SSOError covers SSOTokenLoadError and
# UnauthorizedSSOTokenError).
_CREDENTIAL_EXCEPTIONS: tuple[type[BaseException], ...] = (
    botocore.exceptions.CredentialRetrievalError,
    botocore.exceptions.TokenRetrievalError,
    botocore.exceptions.NoAuthTokenError,
    botocore.exceptions.RefreshWithMFAUnsupportedError,
    botocore.exceptions.SSOError,
    botocore.exceptions.UnknownCredentialError,
    botocore.exceptions.MetadataRetrievalError,
)
# Operations credential providers call (STS for assume-role, SSO portal and OIDC); an error
# answer to one of them is about the keys, never about an object.
_CREDENTIAL_OPERATIONS = frozenset(
    {
        "AssumeRole",
        "AssumeRoleWithSAML",
        "AssumeRoleWithWebIdentity",
        "GetSessionToken",
        "GetFederationToken",
        "GetRoleCredentials",
        "CreateToken",
    }
)
# Where refreshing happens: whatever escapes from these (a RuntimeError "refreshed
# credentials are still expired", a credential_process printing no JSON) is a credentials
# failure, whatever its type.
_CREDENTIAL_MODULES = frozenset(
    {"botocore.credentials", "aiobotocore.credentials", "botocore.tokens", "aiobotocore.tokens"}
)


def _credential_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) comes from obtaining or refreshing credentials."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, _CREDENTIAL_EXCEPTIONS):
            return True
        if (
            isinstance(current, botocore.exceptions.ClientError)
            and getattr(current, "operation_name", None) in _CREDENTIAL_OPERATIONS
        ):
            return True
        tb = current.__traceback__
        while tb is not None:
            if tb.tb_frame.f_globals.get("__name__") in _CREDENTIAL_MODULES:
                return True
            tb = tb.tb_next
        current = current.__cause__ or current.__context__
        seen += 1
    return False


@contextlib.contextmanager
def _credential_errors() -> Iterator[None]:
    """Credential providers' failures, of any type, as one ``CredentialsError``."""
    try:
        yield
    except Ego4dDLError:
        raise
    except Exception as exc:
        if not _credential_failure(exc):
            raise
        detail = str(exc).strip() or type(exc).__name__
        raise CredentialsError(
            f"the AWS credentials could not be obtained or refreshed: {detail}",
            code="CredentialRefresh",
        ) from exc


@contextlib.contextmanager
def _translated(bucket: str, key: str, endpoint: str) -> Iterator[None]:
    """Map botocore/aiohttp failures to the ego4d-dl error tree, in exactly one place."""
    with _s3_errors(bucket, key, endpoint), _credential_errors():
        yield


@contextlib.contextmanager
def _s3_errors(bucket: str, key: str, endpoint: str) -> Iterator[None]:
    where = _where(bucket, key)
    try:
        yield
    except Ego4dDLError:
        raise
    except botocore.exceptions.ClientError as exc:
        code, status = _error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", "") or code)
        if code in CREDENTIAL_CODES:
            raise CredentialsError(f"{code}: {message}", code=code) from exc
        if status == 404 or code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound"):
            what = "bucket does not exist" if code == "NoSuchBucket" else "no such object"
            raise ObjectNotFoundError(key, f"{where}: {what} (404)") from exc
        if status == 412 or code == "PreconditionFailed":
            raise RemoteChangedError(key, f"{where}: changed on the server (412)") from exc
        if status == 403 or code in ("AccessDenied", "403", "Forbidden"):
            detail = "" if code.isdigit() else f" {code}"
            raise AccessDeniedError(key, f"{where}: access denied (403{detail})") from exc
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            raise TransientError(
                key,
                f"{where}: server said {code or status}",
                throttled=code in _THROTTLE_CODES or status in (429, 503),
            ) from exc
        raise TransientError(key, f"{where}: unexpected answer {status} {code}") from exc
    except botocore.exceptions.NoCredentialsError as exc:
        raise CredentialsError(
            "no AWS credentials found (environment, AWS_PROFILE, ~/.aws/credentials)",
            code="NoCredentials",
        ) from exc
    except botocore.exceptions.PartialCredentialsError as exc:
        raise CredentialsError(f"incomplete AWS credentials: {exc}", code="Partial") from exc
    except botocore.exceptions.ProxyConnectionError as exc:
        raise NetworkError(
            f"cannot reach {endpoint} through the proxy {exc.kwargs.get('proxy_url', '')} "
            "(from HTTPS_PROXY / HTTP_PROXY; NO_PROXY lists hosts to reach directly)"
        ) from exc
    except botocore.exceptions.SSLError as exc:
        raise NetworkError(f"TLS with {endpoint} failed: {exc}") from exc
    except (
        botocore.exceptions.EndpointConnectionError,
        botocore.exceptions.ConnectTimeoutError,
        aiohttp.ClientConnectorError,
    ) as exc:
        raise NetworkError(f"cannot reach {endpoint}: {exc}") from exc
    except (
        botocore.exceptions.ReadTimeoutError,
        botocore.exceptions.ConnectionClosedError,
        botocore.exceptions.ResponseStreamingError,
        botocore.exceptions.IncompleteReadError,
        botocore.exceptions.HTTPClientError,
        aiohttp.ClientError,
        TimeoutError,
        ConnectionError,
    ) as exc:
        raise TransientError(key, f"{where}: {type(exc).__name__}: {exc}") from exc


def _etag_is_md5(etag: str, resp: Mapping[str, Any]) -> bool:
    """Whether ``etag`` is the MD5 of the object's bytes: a plain MD5 ETag of an object
    stored unencrypted or with SSE-S3 (SSE-KMS and SSE-C ETags look the same but are not)."""
    return (
        etag_kind(etag) is VerifyLevel.MD5
        and resp.get("ServerSideEncryption") in (None, "", "AES256")
        and not resp.get("SSECustomerAlgorithm")
    )


def _parse_content_range(text: str) -> tuple[int, int, int | None] | None:
    match = _CONTENT_RANGE_RE.match(text.strip())
    if match is None:
        return None
    total = None if match[3] == "*" else int(match[3])
    return int(match[1]), int(match[2]) + 1, total


# asyncio reads a socket at most 256 KiB at a time (``_SelectorSocketTransport.max_size``), and
# each read is a trip through aiohttp's parser, its StreamReader and our loop, all on the one
# event-loop thread that bounds a fast download. 1 MiB per read measured on ``large``: client
# user CPU 2.9 -> 2.4 s, system 2.0 -> 1.4 s, wall 6.3 -> 5.5-5.9 s; 4 MiB cost more system
# time (fresh mappings per read) and RSS.
_SOCKET_READ_BYTES = 1 << 20


def _widen_reads(response: aiohttp.ClientResponse) -> None:
    """Let the connection under ``response`` read up to ``_SOCKET_READ_BYTES`` at a time.

    Only where the transport is asyncio's plain socket transport with an integer
    ``max_size`` (TLS and other event loops read their own way and are left alone).
    """
    connection = response.connection
    transport = connection.transport if connection is not None else None
    current = getattr(transport, "max_size", None)
    if type(current) is int and current < _SOCKET_READ_BYTES:
        transport.max_size = _SOCKET_READ_BYTES  # type: ignore[union-attr]


async def _next_chunk(stream: aiohttp.StreamReader) -> bytes:
    """The next buffer as aiohttp received it; ``b""`` at the end of the body.

    Not ``readany``: when the event loop falls behind, several buffers wait, and ``readany``
    joins them, a copy of every byte on the busiest thread (py-spy: ~10 % of the event loop
    on ``large``). ``pwritev`` and MD5 take the buffers one by one anyway.
    """
    while True:
        data, end_of_http_chunk = await stream.readchunk()
        # (b"", True) only marks a chunk boundary of a chunked body; (b"", False) is the end.
        if data or not end_of_http_chunk:
            return data


class _Body:
    """Reads an aiohttp stream with a per-read stall timeout and an exact length check."""

    __slots__ = ("_expected", "_key", "_received", "_stall_timeout_s", "_stream", "_where")

    def __init__(
        self, stream: aiohttp.StreamReader, *, expected: int, key: str, where: str, stall_s: float
    ) -> None:
        self._stream = stream
        self._expected = expected
        self._received = 0
        self._key = key
        self._where = where
        self._stall_timeout_s = stall_s

    async def read(self, max_bytes: int) -> bytes:
        remaining = self._expected - self._received
        if remaining <= 0:
            return b""
        try:
            async with asyncio.timeout(self._stall_timeout_s):
                if max_bytes >= remaining:
                    chunk = await _next_chunk(self._stream)
                else:
                    chunk = await self._stream.read(max_bytes)
        except TimeoutError:
            raise TransientError(
                self._key,
                f"{self._where}: stalled, no bytes for {self._stall_timeout_s:g}s",
                stalled=True,
            ) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise TransientError(self._key, f"{self._where}: {type(exc).__name__}: {exc}") from exc
        if not chunk:
            raise TransientError(
                self._key,
                f"{self._where}: body ended after {self._received} of {self._expected} bytes",
            )
        if len(chunk) > remaining:
            raise TransientError(
                self._key, f"{self._where}: body is longer than the {self._expected} bytes asked"
            )
        self._received += len(chunk)
        return chunk


class S3Store:
    """The real ``ObjectStore``: one aioboto3 client whose pool is sized to the concurrency."""

    def __init__(
        self,
        *,
        credentials: Credentials,
        endpoint: Endpoint,
        max_connections: int,
        stall_timeout_s: float,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._credentials = credentials
        self._endpoint = endpoint
        self._max_connections = max_connections
        self._stall_timeout_s = stall_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._keys: tuple[str, str, str | None] | None = None
        self._session: Any = None
        self._default_region = "us-east-1"
        # Region of each bucket once resolved, and one client per region other than the default.
        self._bucket_regions: dict[str, str] = {}
        self._regional: dict[str, Any] = {}
        self._region_locks: dict[str, asyncio.Lock] = {}
        self._client_lock = asyncio.Lock()
        self._creds: Any = None
        # Per bucket: where hand-signed GETs go (learnt from botocore's last successful GET of
        # it), or None where only botocore's path is used; absent: not known (yet, or again).
        self._routes: dict[str, _Route | None] = {}
        # Per bucket: the route hand-signed GETs last failed on with a 3xx or a 400.
        self._failed_routes: dict[str, _Route] = {}

    @property
    def endpoint_label(self) -> str:
        """Where requests go, for messages."""
        return self._endpoint.url or "AWS S3"

    def _config(self) -> AioConfig:
        return AioConfig(
            max_pool_connections=self._max_connections,
            connect_timeout=self._connect_timeout_s,
            # Our own per-read watchdog fires first; this is the backstop.
            read_timeout=self._stall_timeout_s * 2 + 5,
            # Retries are ours (retry.py): botocore's would hide them from the journal and UI.
            retries={"total_max_attempts": 1},
            s3={"addressing_style": "path" if self._endpoint.url else "auto"},
            signature_version="s3v4",
            http_session_cls=_NoRedirectSession,
            # ChecksumMode is asked explicitly where wanted; do not validate behind our back.
            response_checksum_validation="when_required",
            request_checksum_calculation="when_required",
        )

    async def _connect(self) -> tuple[Any, tuple[str, str, str | None] | None, Any]:
        """A new client from freshly read credentials, those credentials and their source."""
        try:
            with _credential_errors():
                return await self._connect_unchecked()
        except botocore.exceptions.ProfileNotFound as exc:
            raise ConfigError(_profile_message(self._credentials.profile)) from exc

    async def _connect_unchecked(self) -> tuple[Any, tuple[str, str, str | None] | None, Any]:
        session = _make_session(self._credentials)
        # botocore parses every LastModified with dateutil: half a millisecond per listed
        # object, most of the time of planning 10,000 objects. We never read it.
        session._session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=str
        )
        region = self._endpoint.region or _usable_region(session.region_name) or "us-east-1"
        client = await self._stack.enter_async_context(
            session.client(
                "s3", endpoint_url=self._endpoint.url, region_name=region, config=self._config()
            )
        )
        _watch_gets(client)
        # Clients of other regions are made again, lazily, from the fresh session.
        self._session, self._default_region, self._regional = session, region, {}
        creds = await session.get_credentials()
        if creds is None:
            return client, None, None
        frozen = await creds.get_frozen_credentials()
        return client, (frozen.access_key, frozen.secret_key, frozen.token), creds

    async def __aenter__(self) -> Self:
        self._client, self._keys, self._creds = await self._connect()
        return self

    async def reload_credentials(self) -> bool:
        """Re-read the keys (a user renewed them mid-run); ``True`` if they changed.

        The old client stays open for requests still using it and closes with the store.
        """
        client, keys, creds = await self._connect()
        if keys == self._keys:
            return False
        self._client, self._keys, self._creds = client, keys, creds
        return True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()
        self._client = None

    # --- regions -----------------------------------------------------------------------------

    async def probe_bucket(self, bucket: str) -> BucketProbe:
        """One signed HeadBucket: the status, the bucket's region if named, the server's clock.

        Error answers (403 without ListBucket permission, 404, a 301 to another region) are
        results here, not exceptions; only an unreachable endpoint raises ``NetworkError``.
        """
        try:
            with _translated(bucket, "", self.endpoint_label):
                try:
                    resp = await self._client.head_bucket(Bucket=bucket)
                except botocore.exceptions.ClientError as exc:
                    resp = exc.response
        except TransientError as exc:
            raise NetworkError(f"cannot reach {self.endpoint_label}: {exc}") from exc
        meta = resp.get("ResponseMetadata", {})
        headers = {str(k).lower(): str(v) for k, v in meta.get("HTTPHeaders", {}).items()}
        return BucketProbe(
            bucket=bucket,
            status=int(meta.get("HTTPStatusCode", 0) or 0),
            code=str(resp.get("Error", {}).get("Code", "")),
            region=region_from_headers(headers),
            server_date=_http_date(headers.get("date", "")),
        )

    async def bucket_region(self, bucket: str) -> str:
        """The region requests for ``bucket`` are signed for and sent to (resolved once)."""
        region = self._bucket_regions.get(bucket)
        if region is not None:
            return region
        async with self._region_locks.setdefault(bucket, asyncio.Lock()):
            region = self._bucket_regions.get(bucket)
            if region is None:
                try:
                    region = (await self.probe_bucket(bucket)).region
                except Ego4dDLError:
                    region = None  # the request itself will then report what is wrong
                region = region or self._default_region
                self._bucket_regions[bucket] = region
        return region

    async def _client_for(self, bucket: str) -> Any:
        region = await self.bucket_region(bucket)
        if region == self._default_region:
            return self._client
        client = self._regional.get(region)
        if client is not None:
            return client
        async with self._client_lock:
            client = self._regional.get(region)
            if client is None:
                with _credential_errors():  # a new client reads the credentials
                    client = await self._stack.enter_async_context(
                        self._session.client(
                            "s3",
                            endpoint_url=self._endpoint.url,
                            region_name=region,
                            config=self._config(),
                        )
                    )
                _watch_gets(client)
                self._regional[region] = client
        return client

    async def head(
        self, bucket: str, key: str, *, part_number: int | None = None, checksums: bool = False
    ) -> ObjectHead:
        """HEAD an object; with ``part_number``, learn that part's byte range too."""
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if part_number is not None:
            kwargs["PartNumber"] = part_number
        if checksums:
            kwargs["ChecksumMode"] = "ENABLED"
        try:
            client = await self._client_for(bucket)
            with _translated(bucket, key, self.endpoint_label):
                resp = await client.head_object(**kwargs)
        except AccessDeniedError:
            # A HEAD error has no body, so a bare 403 could be expired keys as well as a
            # forbidden object; a one-byte GET carries the error code that tells them apart.
            await self._explain_forbidden(bucket, key)
            raise
        size = int(resp.get("ContentLength", 0))
        part_range = None
        total = size
        if part_number is not None:
            parsed = _parse_content_range(str(resp.get("ContentRange", "")))
            if parsed is not None:
                start, stop, whole = parsed
                part_range = (start, stop)
                total = whole if whole is not None else size
            else:
                part_range = (0, size)
        parts_count = resp.get("PartsCount")
        return ObjectHead(
            bucket=bucket,
            key=key,
            size_bytes=total,
            etag=normalise_etag(str(resp.get("ETag", ""))),
            parts_count=int(parts_count) if parts_count else None,
            part_range=part_range,
            checksums={f: str(resp[f]) for f in _CHECKSUM_FIELDS_ALL if resp.get(f)},
            version_id=str(resp["VersionId"]) if resp.get("VersionId") else None,
        )

    async def _explain_forbidden(self, bucket: str, key: str) -> None:
        """Raise ``CredentialsError`` if a 403 was really about the keys; else return."""
        with (
            contextlib.suppress(AccessDeniedError, ObjectNotFoundError, TransientError),
            _translated(bucket, key, self.endpoint_label),
        ):
            client = await self._client_for(bucket)
            resp = await client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")
            resp["Body"].close()

    async def list_page(
        self, bucket: str, *, prefix: str, start_after: str = "", token: str | None = None
    ) -> ListPage:
        """One ListObjectsV2 page under ``prefix``, after ``start_after`` or from ``token``."""
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
        if token:
            kwargs["ContinuationToken"] = token
        elif start_after:
            kwargs["StartAfter"] = start_after
        client = await self._client_for(bucket)
        with _translated(bucket, prefix, self.endpoint_label):
            resp = await client.list_objects_v2(**kwargs)
        items = tuple(
            ListedObject(
                key=str(item["Key"]),
                size_bytes=int(item.get("Size", 0)),
                etag=normalise_etag(str(item.get("ETag", ""))),
            )
            for item in resp.get("Contents", ())
        )
        next_token = resp.get("NextContinuationToken") if resp.get("IsTruncated") else None
        return ListPage(items=items, next_token=str(next_token) if next_token else None)

    async def list_folders(self, bucket: str, *, prefix: str) -> tuple[str, ...]:
        """The "folders" just under ``prefix`` (common prefixes, e.g. ``public/v2_1/``)."""
        client = await self._client_for(bucket)
        found: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
        with _translated(bucket, prefix, self.endpoint_label):
            while True:
                resp = await client.list_objects_v2(**kwargs)
                found.extend(str(p["Prefix"]) for p in resp.get("CommonPrefixes", ()))
                token = resp.get("NextContinuationToken") if resp.get("IsTruncated") else None
                if not token:
                    return tuple(found)
                kwargs["ContinuationToken"] = token

    async def get_bytes(self, bucket: str, key: str) -> bytes:
        """A whole small object (manifests, metadata) in memory, checked against its ETag
        when that is the MD5 of the bytes (a mismatch is a ``TransientError``: worth asking
        again)."""
        client = await self._client_for(bucket)
        with _translated(bucket, key, self.endpoint_label):
            resp = await client.get_object(Bucket=bucket, Key=key)
            async with resp["Body"] as stream:
                data: bytes = await stream.read()
        etag = normalise_etag(str(resp.get("ETag", "")))
        if _etag_is_md5(etag, resp) and hashlib.md5(data).hexdigest() != etag:
            raise TransientError(
                key,
                f"{_where(bucket, key)}: the {len(data):,} bytes received do not match the "
                f"object's ETag {etag}",
            )
        return data

    @contextlib.asynccontextmanager
    async def get_range(
        self, bucket: str, key: str, *, start: int, stop: int, size_bytes: int, etag: str
    ) -> AsyncIterator[RangeBody]:
        """Stream bytes [start, stop) of the object version whose ETag is ``etag``.

        The server must answer 206 with exactly that Content-Range (or 200 for a whole-object
        read); anything else is a ``TransientError`` so no byte of another version or offset
        is ever written. Leaving the block early drops the connection instead of draining it.
        """
        where = _where(bucket, key)
        whole = start == 0 and stop == size_bytes
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "IfMatch": f'"{etag}"'}
        if not whole:
            kwargs["Range"] = f"bytes={start}-{stop - 1}"
        client = await self._client_for(bucket)
        # The watchdog covers the wait for the answer's headers too: a server that takes the
        # request and sends nothing is a stall like any other, not one for the HTTP client's
        # backstop read timeout (2 x stall + 5 s) to end.
        try:
            async with asyncio.timeout(self._stall_timeout_s):
                with _translated(bucket, key, self.endpoint_label):
                    resp = await self._signed_get(
                        client, bucket, key, kwargs, size_bytes=size_bytes
                    )
                    if resp is None:
                        sent: list[tuple[str, str]] = []
                        watching = _SENT_GETS.set(sent)
                        try:
                            resp = await client.get_object(**kwargs)
                        finally:
                            _SENT_GETS.reset(watching)
                        self._learn_route(bucket, key, sent)
        except TimeoutError:
            raise TransientError(
                key,
                f"{where}: stalled, no answer for {self._stall_timeout_s:g}s",
                stalled=True,
            ) from None
        raw = resp["Body"]
        try:
            status = int(resp["ResponseMetadata"]["HTTPStatusCode"])
            got_etag = normalise_etag(str(resp.get("ETag", "")))
            if got_etag and got_etag != etag:
                raise RemoteChangedError(key, f"{where}: ETag is now {got_etag}, not {etag}")
            length = int(resp.get("ContentLength", -1))
            if whole and status == 200:
                if length != size_bytes:
                    raise RemoteChangedError(
                        key, f"{where}: size is now {length}, expected {size_bytes}"
                    )
            else:
                parsed = _parse_content_range(str(resp.get("ContentRange", "")))
                if status != 206 or parsed != (start, stop, size_bytes):
                    raise TransientError(
                        key,
                        f"{where}: asked for bytes {start}-{stop - 1}, got HTTP {status} "
                        f"{resp.get('ContentRange', 'without Content-Range')}",
                    )
            _widen_reads(raw.__wrapped__)
            yield _Body(
                raw.__wrapped__.content,
                expected=stop - start,
                key=key,
                where=where,
                stall_s=self._stall_timeout_s,
            )
        finally:
            # close() drops the connection if the body was not read to the end, which is
            # what a stalled or abandoned request needs; a fully read one returns to the pool.
            raw.close()

    # --- the hand-signed GET ------------------------------------------------------------------
    # botocore spends ~3.5 ms of CPU per get_object (endpoint rules, hooks, parsing); a GET
    # signed here and sent through the client's own aiohttp session costs ~0.2 ms (see
    # BENCHMARKS.md). Only success and the answers that need no error body are handled here:
    # anything else is asked again through botocore, whose errors _translated knows.

    async def _signed_get(
        self, client: Any, bucket: str, key: str, kwargs: Mapping[str, Any], *, size_bytes: int
    ) -> dict[str, Any] | None:
        """``get_object``'s answer for ``kwargs`` (Bucket, Key, IfMatch, Range), made without
        botocore's request pipeline; ``None`` when botocore must make it."""
        # The client's own HTTP session: same pool, TLS, proxy and timeout settings.
        session = getattr(getattr(client, "_endpoint", None), "http_session", None)
        if session is None or self._creds is None:
            return None
        route = self._routes.get(bucket)
        if route is None:
            return None
        frozen = await self._creds.get_frozen_credentials()
        path = route.prefix + urllib.parse.quote(key, safe="/~")
        headers = {"If-Match": kwargs["IfMatch"]}
        if "Range" in kwargs:
            headers["Range"] = kwargs["Range"]
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
        request = AWSPreparedRequest("GET", route.origin + path, signed, None, stream_output=True)
        answer = await session.send(request)
        status = int(answer.status_code)
        if status in (200, 206):
            resp: dict[str, Any] = {
                "ResponseMetadata": {"HTTPStatusCode": status},
                "ETag": answer.headers.get("etag", ""),
                "ContentLength": int(answer.headers.get("content-length", -1)),
                "Body": StreamingBody(answer.raw, size_bytes),
            }
            if "content-range" in answer.headers:
                resp["ContentRange"] = answer.headers["content-range"]
            return resp
        code = await _error_code_of(answer.raw) if status >= 400 else ""
        answer.raw.close()
        where = _where(bucket, key)
        if status == 412:
            raise RemoteChangedError(key, f"{where}: changed on the server (412)")
        if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
            raise TransientError(
                key,
                f"{where}: server said {status} {code}".rstrip(),
                throttled=status in (429, 503) or code in _THROTTLE_CODES,
            )
        if 300 <= status < 400 or (status == 400 and code not in CREDENTIAL_CODES):
            # A redirect (never followed: its target would get the session token and its
            # answer would be read as data) or a 400 such as AuthorizationHeaderMalformed or
            # IncorrectEndpoint (the bucket is in another region): botocore's region handling
            # asks again, and the route is learnt afresh from where its GET then succeeds.
            self._failed_routes[bucket] = route
            self._routes.pop(bucket, None)
        return None

    def _learn_route(self, bucket: str, key: str, sent: list[tuple[str, str]]) -> None:
        """After botocore's GET of ``key`` succeeded: hand-signed GETs of ``bucket`` go where
        it went (its last request, after any region redirect), signed for its region."""
        if bucket in self._routes or not sent:
            return
        url, authorization = sent[-1]
        route = _route_from_request(url, authorization, key)
        if route is not None and route == self._failed_routes.get(bucket):
            # botocore succeeded where the hand-signed GET failed, at the same place: the
            # difference is in the request itself, so this bucket stays with botocore.
            route = None
        self._routes[bucket] = route


_CODE_RE = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")


async def _error_code_of(raw: aiohttp.ClientResponse) -> str:
    """The ``<Code>`` of an S3 error body (a few hundred bytes of XML), or ``""``."""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        async with asyncio.timeout(5):
            body = await raw.content.read(64 * 1024)
        match = _CODE_RE.search(body)
        if match:
            return match[1].decode("ascii")
    return ""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Route:
    """Where the GETs of one bucket go: ``origin + prefix + quoted key``, signed for ``region``."""

    origin: str
    host: str
    prefix: str
    region: str


_SCOPE_RE = re.compile(r"^AWS4-HMAC-SHA256 Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/s3/aws4_request,")


def _route_from_request(url: str, authorization: str, key: str) -> _Route | None:
    """The route a GET of ``key`` that botocore sent implies (its URL, and the region in its
    SigV4 credential scope), or ``None`` if it is not a plain SigV4 GET of that key."""
    split = urllib.parse.urlsplit(url)
    quoted = urllib.parse.quote(key, safe="/~")
    scope = _SCOPE_RE.match(authorization)
    if not split.path.endswith(quoted) or scope is None:
        return None
    return _Route(
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


def _record_get(request: AWSPreparedRequest, **_: Any) -> None:
    sent = _SENT_GETS.get()
    if sent is not None:
        auth = request.headers.get("Authorization", b"")
        sent.append((str(request.url), auth.decode() if isinstance(auth, bytes) else str(auth)))


def _watch_gets(client: Any) -> None:
    """Have ``client`` tell ``_SENT_GETS`` where each GetObject request goes."""
    client.meta.events.register("before-send.s3.GetObject", _record_get)


class _NoRedirectSession(AIOHTTPSession):  # type: ignore[misc]
    """aiobotocore's HTTP session, except that no request follows a redirect.

    aiohttp follows 301/302/303/307/308 by default, and aiobotocore does not say otherwise:
    a 307 to another origin would get the ``x-amz-security-token`` header (aiohttp drops
    only Authorization) and its answer would be taken for the object's bytes. botocore
    expects to see the 3xx itself: its region redirector re-resolves the endpoint.
    """

    async def _get_session(self, proxy_url: str | None) -> Any:
        return _WithoutRedirects(await super()._get_session(proxy_url))


class _WithoutRedirects:
    """An ``aiohttp.ClientSession`` whose ``request`` never follows redirects."""

    __slots__ = ("_session",)

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        return self._session.request(method, url, allow_redirects=False, **kwargs)


def _usable_region(region: str | None) -> str | None:
    """A profile's region, unless it is a placeholder like ``none`` (``s3.none.amazonaws.com``)."""
    if (
        not region
        or region.strip().lower() in ("none", "null", "")
        or not re.match(r"^[a-z]{2}(-[a-z]+)+-\d+$", region.strip())
    ):
        return None
    return region.strip()


def _make_session(credentials: Credentials) -> Any:
    """An aioboto3 session for the profile (or the default chain), profile errors translated."""
    try:
        if credentials.access_key_id and credentials.secret_access_key:
            return aioboto3.Session(
                aws_access_key_id=credentials.access_key_id,
                aws_secret_access_key=credentials.secret_access_key,
                aws_session_token=credentials.session_token,
            )
        return aioboto3.Session(profile_name=credentials.profile)
    except botocore.exceptions.ProfileNotFound as exc:
        raise ConfigError(_profile_message(credentials.profile)) from exc


def _profile_message(profile: str | None) -> str:
    name = profile or os.environ.get("AWS_PROFILE") or "default"
    credentials = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
    config = os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config"
    return (
        f"AWS profile {name!r} not found in {credentials} or {config}; add your "
        f"Ego4D keys with: aws configure --profile {name}"
    )


def usable_region(region: str | None) -> str | None:
    """A configured region, or ``None`` for a placeholder such as ``none`` or ``""``."""
    return _usable_region(region)


def region_from_headers(headers: Mapping[str, str]) -> str | None:
    """The ``x-amz-bucket-region`` of an answer (lower-case header names), if plausible."""
    return _usable_region(headers.get("x-amz-bucket-region"))


def _http_date(text: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(text).timestamp() if text else None
    except (TypeError, ValueError):
        return None


async def resolve_keys(credentials: Credentials) -> KeyInfo | None:
    """Run the AWS credential chain as a download would; ``None`` when it finds no keys.

    A missing profile is a ``ConfigError``; half-configured keys a ``CredentialsError``.
    """
    session = _make_session(credentials)
    try:
        with _credential_errors():
            found = await session.get_credentials()
            if found is None:
                return None
            frozen = await found.get_frozen_credentials()
    except botocore.exceptions.ProfileNotFound as exc:
        raise ConfigError(_profile_message(credentials.profile)) from exc
    except botocore.exceptions.PartialCredentialsError as exc:
        raise CredentialsError(f"incomplete AWS credentials: {exc}", code="Partial") from exc
    return KeyInfo(
        access_key_id=str(frozen.access_key),
        method=str(getattr(found, "method", "") or "unknown"),
        has_session_token=bool(frozen.token),
        profile_region=session.region_name,
    )


def proxy_for(url: str) -> str | None:
    """The proxy botocore will use for requests to ``url`` (password masked), or ``None``.

    botocore reads HTTPS_PROXY / HTTP_PROXY (either case) by the URL's scheme and skips hosts
    listed in NO_PROXY; aiobotocore passes the result to every aiohttp request.
    """
    proxy = get_environ_proxies(url).get(urllib.parse.urlsplit(url).scheme)
    return str(mask_proxy_url(proxy)) if proxy else None
