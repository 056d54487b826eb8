"""What an S3 answer means, decided once for every path: an error answer's (status, code) as
our error, and a ranged GET's answer checked against what was asked. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import (
    AccessDeniedError,
    CredentialsError,
    Ego4dDLError,
    ObjectNotFoundError,
    RemoteChangedError,
    TransientError,
)
from ..etags import VerifyLevel, etag_kind
from .values import RangeResponse

__all__ = [
    "CREDENTIAL_CODES",
    "check_range",
    "error_for",
    "etag_is_md5",
    "parse_content_range",
    "reroutes",
    "where",
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
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})
_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden"})
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def where(bucket: str, key: str) -> str:
    """``s3://bucket/key`` (or ``s3://bucket``), for messages."""
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


def error_for(status: int, code: str, message: str = "", *, bucket: str, key: str) -> Ego4dDLError:
    """The error an S3 error answer (HTTP ``status``, S3 error ``code``, its ``message``)
    means, whichever path received it."""
    at = where(bucket, key)
    if code in CREDENTIAL_CODES:
        return CredentialsError(f"{code}: {message or code}", code=code)
    if status == 404 or code in _NOT_FOUND_CODES:
        what = "bucket does not exist" if code == "NoSuchBucket" else "no such object"
        return ObjectNotFoundError(key, f"{at}: {what} (404)")
    if status == 412 or code == "PreconditionFailed":
        return RemoteChangedError(key, f"{at}: changed on the server (412)")
    if status == 403 or code in _DENIED_CODES:
        detail = "" if not code or code.isdigit() else f" {code}"
        return AccessDeniedError(key, f"{at}: access denied (403{detail})")
    if code in _TRANSIENT_CODES or status >= 500 or status == 429:
        return TransientError(
            key,
            f"{at}: server said {code or status}",
            throttled=code in _THROTTLE_CODES or status in (429, 503),
        )
    return TransientError(key, f"{at}: unexpected answer {status} {code}".rstrip())


def reroutes(status: int, code: str) -> bool:
    """Whether a hand-signed GET's answer says the request went to the wrong place: a
    redirect (never followed: its target would get the session token and its answer would be
    read as data) or a 400 such as AuthorizationHeaderMalformed or IncorrectEndpoint (the
    bucket is in another region). botocore's region handling then asks again."""
    if 300 <= status < 400:
        return True
    return status == 400 and code not in CREDENTIAL_CODES and code not in _TRANSIENT_CODES


def parse_content_range(text: str) -> tuple[int, int, int | None] | None:
    """``bytes a-b/n`` as ``(a, b + 1, n)`` (``n`` ``None`` for ``*``); ``None`` if malformed."""
    match = _CONTENT_RANGE_RE.match(text.strip())
    if match is None:
        return None
    total = None if match[3] == "*" else int(match[3])
    return int(match[1]), int(match[2]) + 1, total


def check_range(
    answer: RangeResponse,
    *,
    key: str,
    where: str,
    start: int,
    stop: int,
    size_bytes: int,
    etag: str,
) -> None:
    """Raise unless ``answer`` carries bytes [start, stop) of the version whose ETag is ``etag``.

    A whole-object read may be answered 200 with exactly ``size_bytes`` bytes; anything else
    must be a 206 whose Content-Range is exactly the range asked (the body's length is then
    checked as it is read). Another ETag or size is a ``RemoteChangedError``; another range
    or status a ``TransientError``, so no byte of another version or offset is ever written.
    """
    if answer.etag and answer.etag != etag:
        raise RemoteChangedError(key, f"{where}: ETag is now {answer.etag}, not {etag}")
    if start == 0 and stop == size_bytes and answer.status == 200:
        if answer.content_length != size_bytes:
            raise RemoteChangedError(
                key, f"{where}: size is now {answer.content_length}, expected {size_bytes}"
            )
        return
    parsed = parse_content_range(answer.content_range)
    if answer.status != 206 or parsed != (start, stop, size_bytes):
        raise TransientError(
            key,
            f"{where}: asked for bytes {start}-{stop - 1}, got HTTP {answer.status} "
            f"{answer.content_range or 'without Content-Range'}",
        )


def etag_is_md5(etag: str, resp: Mapping[str, Any]) -> bool:
    """Whether ``etag`` is the MD5 of the object's bytes: a plain MD5 ETag of an object
    stored unencrypted or with SSE-S3 (SSE-KMS and SSE-C ETags look the same but are not)."""
    return (
        etag_kind(etag) is VerifyLevel.MD5
        and resp.get("ServerSideEncryption") in (None, "", "AES256")
        and not resp.get("SSECustomerAlgorithm")
    )
