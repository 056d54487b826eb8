"""botocore's and aiohttp's exceptions as the ego4d-dl error tree, in exactly one place
(error answers through ``answers.error_for``). Loads botocore only when something failed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..credentials import credential_errors
from ..errors import CredentialsError, Ego4dDLError, NetworkError, TransientError
from .answers import error_for, where

__all__ = ["translated"]


@contextlib.contextmanager
def translated(bucket: str, key: str, endpoint: str) -> Iterator[None]:
    """Map botocore/aiohttp failures of a request for ``bucket``/``key`` to our errors."""
    with _s3_errors(bucket, key, endpoint), credential_errors():
        yield


@contextlib.contextmanager
def _s3_errors(bucket: str, key: str, endpoint: str) -> Iterator[None]:
    try:
        yield
    except Ego4dDLError:
        raise
    except Exception as exc:
        ours = _translate(exc, bucket=bucket, key=key, endpoint=endpoint)
        if ours is None:
            raise
        raise ours from exc


def _translate(exc: Exception, *, bucket: str, key: str, endpoint: str) -> Ego4dDLError | None:
    """Our error for ``exc``, or ``None`` for one that is not a request's failure (a bug)."""
    import aiohttp
    import botocore.exceptions as bx

    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        code = str(err.get("Code", ""))
        status = int(meta.get("HTTPStatusCode", 0) or 0)
        message = str(err.get("Message", "") or code)
        return error_for(status, code, message, bucket=bucket, key=key)
    if isinstance(exc, bx.NoCredentialsError):
        return CredentialsError(
            "no AWS credentials found (environment, AWS_PROFILE, ~/.aws/credentials)",
            code="NoCredentials",
        )
    if isinstance(exc, bx.PartialCredentialsError):
        return CredentialsError(f"incomplete AWS credentials: {exc}", code="Partial")
    if isinstance(exc, bx.ProxyConnectionError):
        return NetworkError(
            f"cannot reach {endpoint} through the proxy {exc.kwargs.get('proxy_url', '')} "
            "(from HTTPS_PROXY / HTTP_PROXY; NO_PROXY lists hosts to reach directly)"
        )
    if isinstance(exc, bx.SSLError):
        return NetworkError(f"TLS with {endpoint} failed: {exc}")
    if isinstance(
        exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, aiohttp.ClientConnectorError)
    ):
        return NetworkError(f"cannot reach {endpoint}: {exc}")
    if isinstance(
        exc,
        (
            bx.ReadTimeoutError,
            bx.ConnectionClosedError,
            bx.ResponseStreamingError,
            bx.IncompleteReadError,
            bx.HTTPClientError,
            aiohttp.ClientError,
            TimeoutError,
            ConnectionError,
        ),
    ):
        return TransientError(key, f"{where(bucket, key)}: {type(exc).__name__}: {exc}")
    return None
