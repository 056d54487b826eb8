"""``S3Store``: the real ``ObjectStore``, over aiobotocore clients (one per bucket region).

HEAD (optionally of one upload part), ListObjectsV2 pages, small whole-object reads and ranged
GETs carrying ``If-Match`` whose answers are checked (``answers.check_range``). No request
follows a redirect. aiobotocore, botocore and aiohttp are imported when a store first connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import urllib.parse
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ..config import Credentials, Endpoint
from ..credentials import credential_errors, make_session, profile_errors, session_region
from ..errors import (
    AccessDeniedError,
    Ego4dDLError,
    NetworkError,
    ObjectNotFoundError,
    TransientError,
)
from ..regions import region_from_headers, usable_region
from .answers import check_range, etag_is_md5, parse_content_range, where
from .fastget import Route, SignedGets, watch_gets
from .translate import translated
from .values import (
    BucketProbe,
    ListedObject,
    ListPage,
    ObjectHead,
    RangeBody,
    RangeResponse,
    normalise_etag,
)

if TYPE_CHECKING:
    from aiobotocore.config import AioConfig

__all__ = ["S3Store", "proxy_for"]

_CHECKSUM_FIELDS = (
    "ChecksumCRC32",
    "ChecksumCRC32C",
    "ChecksumCRC64NVME",
    "ChecksumSHA1",
    "ChecksumSHA256",
)


class S3Store:
    """The real ``ObjectStore``: one aiobotocore client whose pool is sized to the concurrency."""

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
        self._aws_session: Any = None
        self._default_region = "us-east-1"
        # Region of each bucket once resolved, and one client per region other than the default.
        self._bucket_regions: dict[str, str] = {}
        self._regional: dict[str, Any] = {}
        self._region_locks: dict[str, asyncio.Lock] = {}
        self._client_lock = asyncio.Lock()
        self._creds: Any = None
        self._signed = SignedGets()

    @property
    def endpoint_label(self) -> str:
        """Where requests go, for messages."""
        return self._endpoint.url or "AWS S3"

    @property
    def _routes(self) -> dict[str, Route | None]:
        """Where each bucket's hand-signed GETs go (``None``: botocore's path only)."""
        return self._signed.routes

    def _config(self) -> AioConfig:
        from aiobotocore.config import AioConfig

        from .adapter import NoRedirectSession

        return AioConfig(
            max_pool_connections=self._max_connections,
            connect_timeout=self._connect_timeout_s,
            # Our own per-read watchdog fires first; this is the backstop.
            read_timeout=self._stall_timeout_s * 2 + 5,
            # Retries are ours (retry.py): botocore's would hide them from the journal and UI.
            retries={"total_max_attempts": 1},
            s3={"addressing_style": "path" if self._endpoint.url else "auto"},
            signature_version="s3v4",
            http_session_cls=NoRedirectSession,
            # ChecksumMode is asked explicitly where wanted; do not validate behind our back.
            response_checksum_validation="when_required",
            request_checksum_calculation="when_required",
        )

    async def _new_client(self, session: Any, region: str) -> Any:
        """A client of ``region`` from ``session``, closed with the store."""
        with credential_errors():  # a new client reads the credentials
            client = await self._stack.enter_async_context(
                session.create_client(
                    "s3",
                    endpoint_url=self._endpoint.url,
                    region_name=region,
                    config=self._config(),
                    verify=False if self._plain_http() else None,
                )
            )
        watch_gets(client)
        return client

    def _plain_http(self) -> bool:
        """Whether no request of this store can use TLS: an ``http://`` endpoint reached
        without a proxy (no request follows a redirect, every client and hand-signed GET goes
        to that endpoint). Its clients then load no certificates: a TLS context with the
        system's and certifi's CAs costs 30-80 ms of CPU per client, unused."""
        url = self._endpoint.url
        return url is not None and url.lower().startswith("http://") and proxy_for(url) is None

    async def _connect(self) -> tuple[Any, tuple[str, str, str | None] | None, Any]:
        """A new client from freshly read credentials, those credentials and their source."""
        with profile_errors(self._credentials.profile), credential_errors():
            session = make_session(self._credentials)
            _skip_timestamp_parsing(session)
            region = self._endpoint.region or usable_region(session_region(session)) or "us-east-1"
            client = await self._new_client(session, region)
            # Clients of other regions are made again, lazily, from the fresh session.
            self._aws_session, self._default_region, self._regional = session, region, {}
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
        from botocore.exceptions import ClientError

        try:
            with translated(bucket, "", self.endpoint_label):
                try:
                    resp = await self._client.head_bucket(Bucket=bucket)
                except ClientError as exc:
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
                client = self._regional[region] = await self._new_client(self._aws_session, region)
        return client

    # --- objects -----------------------------------------------------------------------------

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
            with translated(bucket, key, self.endpoint_label):
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
            parsed = parse_content_range(str(resp.get("ContentRange", "")))
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
            checksums={f: str(resp[f]) for f in _CHECKSUM_FIELDS if resp.get(f)},
            version_id=str(resp["VersionId"]) if resp.get("VersionId") else None,
        )

    async def _explain_forbidden(self, bucket: str, key: str) -> None:
        """Raise ``CredentialsError`` if a 403 was really about the keys; else return."""
        with (
            contextlib.suppress(AccessDeniedError, ObjectNotFoundError, TransientError),
            translated(bucket, key, self.endpoint_label),
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
        with translated(bucket, prefix, self.endpoint_label):
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
        with translated(bucket, prefix, self.endpoint_label):
            while True:
                resp = await client.list_objects_v2(**kwargs)
                found.extend(str(p["Prefix"]) for p in resp.get("CommonPrefixes", ()))
                token = resp.get("NextContinuationToken") if resp.get("IsTruncated") else None
                if not token:
                    return tuple(found)
                kwargs["ContinuationToken"] = token

    async def get_bytes(self, bucket: str, key: str, *, cached: bytes | None = None) -> bytes:
        """A whole small object (manifests, metadata) in memory, checked against its ETag
        when that is the MD5 of the bytes (a mismatch is a ``TransientError``: worth asking
        again). With ``cached``, a conditional GET (``If-None-Match``: its MD5): the server
        answers 304 only when the object's ETag is that MD5, and ``cached`` is returned."""
        from botocore.exceptions import ClientError

        client = await self._client_for(bucket)
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if cached is not None:
            kwargs["IfNoneMatch"] = f'"{hashlib.md5(cached).hexdigest()}"'
        with translated(bucket, key, self.endpoint_label):
            try:
                resp = await client.get_object(**kwargs)
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if cached is not None and status == 304:
                    return cached
                raise
            async with resp["Body"] as stream:
                data: bytes = await stream.read()
        etag = normalise_etag(str(resp.get("ETag", "")))
        if etag_is_md5(etag, resp) and hashlib.md5(data).hexdigest() != etag:
            raise TransientError(
                key,
                f"{where(bucket, key)}: the {len(data):,} bytes received do not match the "
                f"object's ETag {etag}",
            )
        return data

    @contextlib.asynccontextmanager
    async def get_range(
        self, bucket: str, key: str, *, start: int, stop: int, size_bytes: int, etag: str
    ) -> AsyncIterator[RangeBody]:
        """Stream bytes [start, stop) of the object version whose ETag is ``etag``.

        The answer must carry exactly that range of that version (``answers.check_range``);
        anything else raises, so no byte of another version or offset is ever written.
        Leaving the block early drops the connection instead of draining it.
        """
        from .body import BodyReader

        at = where(bucket, key)
        headers = {"If-Match": f'"{etag}"'}
        if not (start == 0 and stop == size_bytes):
            headers["Range"] = f"bytes={start}-{stop - 1}"
        client = await self._client_for(bucket)
        # The watchdog covers the wait for the answer's headers too: a server that takes the
        # request and sends nothing is a stall like any other, not one for the HTTP client's
        # backstop read timeout (2 x stall + 5 s) to end.
        try:
            async with asyncio.timeout(self._stall_timeout_s):
                with translated(bucket, key, self.endpoint_label):
                    answer = await self._answer(client, bucket, key, headers)
        except TimeoutError:
            raise TransientError(
                key, f"{at}: stalled, no answer for {self._stall_timeout_s:g}s", stalled=True
            ) from None
        try:
            check_range(
                answer, key=key, where=at, start=start, stop=stop, size_bytes=size_bytes, etag=etag
            )
            yield BodyReader(
                answer.body, expected=stop - start, key=key, where=at, stall_s=self._stall_timeout_s
            )
        finally:
            # Drops the connection if the body was not read to the end, which is what a
            # stalled or abandoned request needs; a fully read one returns to the pool.
            answer.release()

    async def _answer(
        self, client: Any, bucket: str, key: str, headers: dict[str, str]
    ) -> RangeResponse:
        """The answer to a ranged GET: hand-signed where the bucket's route is known, else
        (``Handoff``) through botocore, whose success teaches the route."""
        from .adapter import http_session_of, range_response_of_get_object

        answer = await self._signed.get(
            http_session_of(client), self._creds, bucket=bucket, key=key, headers=headers
        )
        if isinstance(answer, RangeResponse):
            return answer
        kwargs = {"Bucket": bucket, "Key": key, "IfMatch": headers["If-Match"]}
        if "Range" in headers:
            kwargs["Range"] = headers["Range"]
        with self._signed.learning(bucket, key):
            resp = await client.get_object(**kwargs)
        return range_response_of_get_object(resp)


def _skip_timestamp_parsing(session: Any) -> None:
    """botocore parses every LastModified with dateutil: half a millisecond per listed
    object, most of the time of planning 10,000 objects. We never read it."""
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)


def _http_date(text: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(text).timestamp() if text else None
    except (TypeError, ValueError):
        return None


def proxy_for(url: str) -> str | None:
    """The proxy botocore will use for requests to ``url`` (password masked), or ``None``.

    botocore reads HTTPS_PROXY / HTTP_PROXY (either case) by the URL's scheme and skips hosts
    listed in NO_PROXY; aiobotocore passes the result to every aiohttp request.
    """
    from botocore.httpsession import mask_proxy_url
    from botocore.utils import get_environ_proxies

    proxy = get_environ_proxies(url).get(urllib.parse.urlsplit(url).scheme)
    return str(mask_proxy_url(proxy)) if proxy else None
