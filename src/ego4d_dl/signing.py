"""AWS Signature Version 4 for the one request the transfer path repeats: an S3 GET; pure."""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = ["EMPTY_SHA256", "amz_date", "sign_get"]

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_ALGORITHM = "AWS4-HMAC-SHA256"


def amz_date(epoch_s: float | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ`` in UTC, as ``x-amz-date`` wants it."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch_s))


@functools.lru_cache(maxsize=16)
def _signing_key(secret_key: str, date: str, region: str) -> bytes:
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign_get(
    *,
    host: str,
    path: str,
    headers: Mapping[str, str],
    region: str,
    access_key: str,
    secret_key: str,
    session_token: str | None,
    date: str,
) -> dict[str, str]:
    """The headers to send with ``GET path`` (already URI-encoded, no query): ``headers``
    plus ``x-amz-date``, ``x-amz-content-sha256``, the session token if any, and
    ``Authorization``. ``host`` is the Host header as sent (port included unless default).
    """
    out = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    out["host"] = host
    out["x-amz-date"] = date
    out["x-amz-content-sha256"] = EMPTY_SHA256
    if session_token:
        out["x-amz-security-token"] = session_token
    names = sorted(out)
    signed = ";".join(names)
    canonical = "\n".join(
        [
            "GET",
            path,
            "",
            "".join(f"{name}:{out[name]}\n" for name in names),
            signed,
            EMPTY_SHA256,
        ]
    )
    scope = f"{date[:8]}/{region}/s3/aws4_request"
    to_sign = f"{_ALGORITHM}\n{date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(
        _signing_key(secret_key, date[:8], region), to_sign.encode(), hashlib.sha256
    ).hexdigest()
    out["authorization"] = (
        f"{_ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )
    return out
