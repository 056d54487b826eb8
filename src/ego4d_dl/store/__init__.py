"""S3 behind a small Protocol: the one place botocore and aiohttp are spoken to.

``values`` (what it answers) and ``answers`` (what S3's answers mean, pure) under ``client``
(``S3Store``), ``fastget`` (the hand-signed GET), ``translate`` (exceptions as our errors)
and ``adapter`` (the only reach into private aiobotocore, aiohttp and asyncio surfaces).
Importing it loads none of aioboto3, aiobotocore, botocore or aiohttp.
"""

from __future__ import annotations

from .answers import CREDENTIAL_CODES
from .client import S3Store, proxy_for
from .values import (
    BucketProbe,
    ListedObject,
    ListPage,
    ObjectHead,
    ObjectStore,
    RangeBody,
    RangeResponse,
    normalise_etag,
)

__all__ = [
    "CREDENTIAL_CODES",
    "BucketProbe",
    "ListPage",
    "ListedObject",
    "ObjectHead",
    "ObjectStore",
    "RangeBody",
    "RangeResponse",
    "S3Store",
    "normalise_etag",
    "proxy_for",
]
