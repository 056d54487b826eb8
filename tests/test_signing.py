"""The hand-made SigV4 GET signature is botocore's, header for header."""

from __future__ import annotations

import datetime
import hashlib
import urllib.parse

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given
from hypothesis import strategies as st

from ego4d_dl.signing import EMPTY_SHA256, amz_date, sign_get

DATE = "20240602T101112Z"


def _botocore_authorization(
    url: str, headers: dict[str, str], region: str, token: str | None, monkeypatch
) -> str:
    monkeypatch.setattr(
        "botocore.auth.get_current_datetime",
        lambda remove_tzinfo=True: datetime.datetime(2024, 6, 2, 10, 11, 12),
    )
    request = AWSRequest(method="GET", url=url, headers=dict(headers))
    request.headers["X-Amz-Content-SHA256"] = EMPTY_SHA256
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    S3SigV4Auth(creds, "s3", region).add_auth(request)
    return str(request.headers["Authorization"])


def _ours(url: str, headers: dict[str, str], region: str, token: str | None) -> str:
    split = urllib.parse.urlsplit(url)
    signed = sign_get(
        host=split.netloc,
        path=split.path,
        headers=headers,
        region=region,
        access_key="AKIDEXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token=token,
        date=DATE,
    )
    assert signed["x-amz-date"] == DATE
    return signed["authorization"]


def test_empty_payload_hash_is_the_sha256_of_nothing():
    assert hashlib.sha256(b"").hexdigest() == EMPTY_SHA256


def test_amz_date_format():
    assert amz_date(0) == "19700101T000000Z"


@pytest.mark.parametrize(
    ("url", "headers", "region", "token"),
    [
        (
            "http://127.0.0.1:8333/ego4d-consortium-sharing/public/v2/full_scale/a.mp4",
            {"Range": "bytes=0-8388607", "If-Match": '"0123abcd-32"'},
            "us-east-1",
            None,
        ),
        (
            "https://ego4d-cmu.s3.us-east-2.amazonaws.com/public/v2/clips/x%20y%2Bz~.mp4",
            {"If-Match": '"d41d8cd98f00b204e9800998ecf8427e"'},
            "us-east-2",
            "FwoGZXIvYXdzEXAMPLETOKEN//+=",
        ),
    ],
)
def test_signature_matches_botocore(url, headers, region, token, monkeypatch):
    expected = _botocore_authorization(url, headers, region, token, monkeypatch)
    assert _ours(url, headers, region, token) == expected


@given(
    key=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40),
    start=st.integers(min_value=0, max_value=1 << 40),
    length=st.integers(min_value=1, max_value=1 << 30),
)
def test_signature_matches_botocore_for_any_key_and_range(key, start, length):
    path = "/bucket/" + urllib.parse.quote(key, safe="/~")
    url = "http://localhost:9000" + path
    headers = {"Range": f"bytes={start}-{start + length - 1}", "If-Match": '"abc-2"'}
    with pytest.MonkeyPatch.context() as monkeypatch:
        expected = _botocore_authorization(url, headers, "eu-west-1", None, monkeypatch)
    assert _ours(url, headers, "eu-west-1", None) == expected
