"""AWS regions as configured and as servers name them: placeholders refused. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["region_from_headers", "usable_region"]

_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


def usable_region(region: str | None) -> str | None:
    """A configured region, or ``None`` for a placeholder such as ``none`` or ``""``
    (the original CLI would call ``s3.none.amazonaws.com``)."""
    if not region:
        return None
    region = region.strip()
    if region.lower() in ("none", "null", "") or not _REGION_RE.match(region):
        return None
    return region


def region_from_headers(headers: Mapping[str, str]) -> str | None:
    """The ``x-amz-bucket-region`` of an answer (lower-case header names), if plausible."""
    return usable_region(headers.get("x-amz-bucket-region"))
