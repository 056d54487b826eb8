"""What S3's answers mean, decided once for both GET paths: (status, code) to our errors, a
ranged answer checked against what was asked. Pure: no server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ego4d_dl.errors import (
    AccessDeniedError,
    CredentialsError,
    ObjectNotFoundError,
    RemoteChangedError,
    TransientError,
)
from ego4d_dl.store import RangeResponse
from ego4d_dl.store.answers import check_range, error_for, parse_content_range, reroutes

ETAG = "0123456789abcdef0123456789abcdef-3"
WHERE = "s3://b/k"


class _NoBody:
    async def readchunk(self) -> tuple[bytes, bool]:
        raise AssertionError("a check never reads the body")

    async def read(self, n: int = -1) -> bytes:
        raise AssertionError("a check never reads the body")


def _answer(
    status: int, *, etag: str = ETAG, length: int = -1, content_range: str = ""
) -> RangeResponse:
    return RangeResponse(
        status=status,
        etag=etag,
        content_length=length,
        content_range=content_range,
        body=_NoBody(),
        release=lambda: None,
    )


def _check(answer: RangeResponse, start: int, stop: int, size: int = 1000) -> None:
    check_range(answer, key="k", where=WHERE, start=start, stop=stop, size_bytes=size, etag=ETAG)


@pytest.mark.parametrize(
    ("status", "code", "kind", "said"),
    [
        (404, "NoSuchKey", ObjectNotFoundError, "s3://b/k: no such object (404)"),
        (404, "", ObjectNotFoundError, "s3://b/k: no such object (404)"),
        (404, "NoSuchBucket", ObjectNotFoundError, "s3://b/k: bucket does not exist (404)"),
        (412, "PreconditionFailed", RemoteChangedError, "s3://b/k: changed on the server (412)"),
        (403, "AccessDenied", AccessDeniedError, "s3://b/k: access denied (403 AccessDenied)"),
        (403, "", AccessDeniedError, "s3://b/k: access denied (403)"),
        (403, "403", AccessDeniedError, "s3://b/k: access denied (403)"),
        (403, "ExpiredToken", CredentialsError, "ExpiredToken: the token expired"),
        (400, "InvalidAccessKeyId", CredentialsError, "InvalidAccessKeyId: the token expired"),
        (503, "SlowDown", TransientError, "s3://b/k: server said SlowDown"),
        (500, "", TransientError, "s3://b/k: server said 500"),
        (400, "RequestTimeout", TransientError, "s3://b/k: server said RequestTimeout"),
        (
            405,
            "MethodNotAllowed",
            TransientError,
            "s3://b/k: unexpected answer 405 MethodNotAllowed",
        ),
    ],
)
def test_every_error_answer_has_one_meaning(status, code, kind, said) -> None:
    error = error_for(status, code, "the token expired", bucket="b", key="k")
    assert type(error) is kind
    assert str(error) == said


@pytest.mark.parametrize(
    ("status", "code", "throttled"),
    [
        (503, "SlowDown", True),
        (503, "", True),
        (429, "", True),
        (400, "Throttling", True),
        (500, "InternalError", False),
        (502, "", False),
        (400, "RequestTimeout", False),
    ],
)
def test_throttling_is_told_from_other_transient_answers(status, code, throttled) -> None:
    error = error_for(status, code, bucket="b", key="k")
    assert isinstance(error, TransientError) and error.throttled is throttled


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (301, "PermanentRedirect", True),
        (307, "", True),
        (400, "AuthorizationHeaderMalformed", True),
        (400, "IncorrectEndpoint", True),
        (400, "ExpiredToken", False),  # the keys, wherever the request went
        (400, "RequestTimeout", False),  # transient: ask the same place again
        (403, "AccessDenied", False),
        (404, "NoSuchKey", False),  # a 404 says nothing about routing
        (412, "PreconditionFailed", False),
        (503, "SlowDown", False),
    ],
)
def test_only_redirects_and_region_errors_reroute(status, code, expected) -> None:
    assert reroutes(status, code) is expected


def test_content_ranges_are_parsed_exactly() -> None:
    assert parse_content_range("bytes 0-9/100") == (0, 10, 100)
    assert parse_content_range(" bytes 5-5/* ") == (5, 6, None)
    for bad in ("", "bytes 0-9", "bytes=0-9/100", "items 0-9/100", "bytes -1-9/100"):
        assert parse_content_range(bad) is None


def test_the_exact_range_of_the_version_passes() -> None:
    _check(_answer(206, content_range="bytes 100-199/1000"), 100, 200)
    _check(_answer(206, content_range="bytes 0-999/1000"), 0, 1000)  # a whole 206 is fine
    _check(_answer(200, length=1000), 0, 1000)
    _check(_answer(206, etag="", content_range="bytes 100-199/1000"), 100, 200)  # none named


def test_another_etag_is_another_version() -> None:
    with pytest.raises(RemoteChangedError, match="ETag is now ffff, not"):
        _check(_answer(206, etag="ffff", content_range="bytes 100-199/1000"), 100, 200)


def test_a_whole_read_of_another_size_is_another_version() -> None:
    with pytest.raises(RemoteChangedError, match="size is now 1001, expected 1000"):
        _check(_answer(200, length=1001), 0, 1000)


@pytest.mark.parametrize(
    ("status", "content_range", "shown"),
    [
        (200, "", "got HTTP 200 without Content-Range"),  # the whole object to a range
        (206, "", "got HTTP 206 without Content-Range"),
        (206, "bytes 100-200/1000", "got HTTP 206 bytes 100-200/1000"),
        (206, "bytes 100-199/*", "got HTTP 206 bytes 100-199/*"),
        (206, "bytes 100-199/1001", "got HTTP 206 bytes 100-199/1001"),
        (204, "bytes 100-199/1000", "got HTTP 204 bytes 100-199/1000"),
    ],
)
def test_any_other_range_or_status_is_refused(status, content_range, shown) -> None:
    with pytest.raises(TransientError, match=f"asked for bytes 100-199, {shown}"):
        _check(_answer(status, length=100, content_range=content_range), 100, 200)


@given(
    size=st.integers(1, 10**12),
    data=st.data(),
)
def test_only_the_range_asked_passes(size: int, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, size - 1))
    stop = data.draw(st.integers(start + 1, size))
    if data.draw(st.booleans()):
        first, last = start, stop - 1
    else:
        first = data.draw(st.integers(0, size - 1))
        last = data.draw(st.integers(first, size - 1))
    answer = _answer(206, content_range=f"bytes {first}-{last}/{size}")
    if (first, last + 1) == (start, stop):
        _check(answer, start, stop, size)
    else:
        with pytest.raises(TransientError):
            _check(answer, start, stop, size)
