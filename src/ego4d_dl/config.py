"""Frozen run options and the checks that turn user input into them.

Everything a user types (flags, a JSON config file, a uid file, an endpoint URL) is validated
here and becomes a frozen value or a one-line ``ConfigError``. Imports ``errors`` only.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ConfigError

__all__ = [
    "CONFIG_KEYS",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_STALL_TIMEOUT_S",
    "Credentials",
    "Endpoint",
    "Options",
    "VerifyMode",
    "load_config_file",
    "parse_endpoint",
    "read_uid_file",
]

# Requests in flight when --concurrency is not given: adaptive (concurrency.py), starting at
# DEFAULT_CONCURRENCY (16 saturate a 2-core client on loopback: see BENCHMARKS.md) and never
# above DEFAULT_MAX_CONCURRENCY (far links want 50-150; the pool holds this many connections).
DEFAULT_CONCURRENCY = 16
DEFAULT_MAX_CONCURRENCY = 256
DEFAULT_STALL_TIMEOUT_S = 60.0

VerifyMode = Literal["etag", "size"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """Where keys come from: explicit keys, a named profile, or (both ``None``) the AWS chain."""

    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    @property
    def label(self) -> str:
        """How to name these credentials in a message."""
        if self.profile:
            return f"profile {self.profile!r}"
        if os.environ.get("AWS_PROFILE"):
            return f"profile {os.environ['AWS_PROFILE']!r} (from AWS_PROFILE)"
        if os.environ.get("AWS_ACCESS_KEY_ID"):
            return "the keys in AWS_ACCESS_KEY_ID"
        return "the default AWS profile"


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where S3 requests go: AWS itself (``url`` is ``None``) or a compatible mirror."""

    url: str | None = None
    region: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """One run's choices, after validation. Paths are absolute; names canonical."""

    output_directory: Path
    version: str
    datasets: tuple[str, ...]
    benchmarks: frozenset[str] = frozenset()
    universities: frozenset[str] = frozenset()
    video_uids: frozenset[str] = frozenset()
    credentials: Credentials = Credentials()
    endpoint: Endpoint = Endpoint()
    concurrency: int = DEFAULT_CONCURRENCY
    # None: exactly ``concurrency`` requests in flight (--concurrency N); otherwise adaptive,
    # from ``concurrency`` up to this.
    max_concurrency: int | None = None
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    manifest_only: bool = False
    metadata: bool = True
    assume_yes: bool = False
    verify: VerifyMode = "etag"
    # This process's share of the plan, (K, N) for --shard K/N; None: all of it.
    shard: tuple[int, int] | None = None
    # --max-bandwidth, shared by every connection of the run; None: no cap.
    max_bandwidth_bytes_s: float | None = None


# The options a JSON config file may set, with the JSON type each must have. Names are the
# original CLI's (underscores); dashes are accepted too.
CONFIG_KEYS: dict[str, type] = {
    "output_directory": str,
    "datasets": list,
    "benchmarks": list,
    "universities": list,
    "video_uids": list,
    "video_uid_file": str,
    "version": str,
    "aws_profile_name": str,
    "endpoint_url": str,
    "concurrency": int,
    "stall_timeout": float,
    "manifest": bool,
    "metadata": bool,
    "yes": bool,
    "assume_yes": bool,
    "verify": str,
    "max_bandwidth": str,
}


def _check_type(name: str, value: object, want: type) -> object:
    if want is list:
        if isinstance(value, str):
            return value.split()
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise ConfigError(f"config key {name!r} must be a list of strings, not {value!r}")
    if want is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif want is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, want):
        return value
    what = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[want]
    raise ConfigError(f"config key {name!r} must be {what}, not {value!r}")


def load_config_file(path: Path) -> dict[str, object]:
    """Read a JSON config of the original CLI's shape into ``{canonical key: value}``."""
    path = path.expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a JSON object of option names")
    out: dict[str, object] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key == "assume_yes":
            key = "yes"
        if key not in CONFIG_KEYS:
            known = ", ".join(sorted(k for k in CONFIG_KEYS if k != "assume_yes"))
            raise ConfigError(f"config file {path}: unknown option {raw_key!r} (known: {known})")
        if value is None:
            continue
        out[key] = _check_type(str(raw_key), value, CONFIG_KEYS[key])
    return out


def read_uid_file(path: Path) -> frozenset[str]:
    """UIDs from a whitespace-delimited file; a missing or empty file is a ``ConfigError``."""
    path = path.expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"uid file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read uid file {path}: {exc}") from None
    uids = frozenset(text.split())
    if not uids:
        raise ConfigError(f"uid file {path} contains no UIDs")
    return uids


_HOST_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]+$")


def parse_endpoint(url: str | None, region: str | None = None) -> Endpoint:
    """Validate ``--endpoint-url`` (``http(s)://host[:port]``) and pick a usable region.

    A profile region of ``none`` or an empty one is ignored (users hit
    ``s3.none.amazonaws.com``); the bucket's own region is resolved later.
    """
    clean_region = region.strip() if region else None
    if clean_region is not None and (
        clean_region.lower() in ("", "none", "null") or not re.match(r"^[a-z0-9-]+$", clean_region)
    ):
        clean_region = None
    if url is None:
        return Endpoint(url=None, region=clean_region)
    parsed = urllib.parse.urlsplit(url.strip())
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if (
        parsed.scheme not in ("http", "https")
        or not parsed.hostname
        or not _HOST_RE.match(parsed.netloc.rsplit("@", 1)[-1])
        or port == -1
        or parsed.query
        or parsed.fragment
    ):
        raise ConfigError(
            f"invalid --endpoint-url {url!r}; expected http(s)://host[:port], "
            "e.g. http://127.0.0.1:8333"
        )
    return Endpoint(url=url.strip().rstrip("/"), region=clean_region or "us-east-1")
