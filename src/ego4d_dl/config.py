"""Frozen run options and the checks that turn user input into them.

Everything a user types (flags, a JSON config file, a uid file, an endpoint URL) is validated
here and becomes a frozen value or a one-line ``ConfigError`` (``build_options``). Imports
``catalog``, ``bandwidth``, ``shard`` and ``errors``.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .bandwidth import parse_bandwidth
from .catalog import (
    DEFAULT_DATASETS,
    DEFAULT_VERSION,
    UNIVERSITY_TO_BUCKET,
    normalise_dataset,
    normalise_university,
    normalise_version,
)
from .errors import ConfigError
from .shard import parse_shard

__all__ = [
    "CONFIG_KEYS",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_STALL_TIMEOUT_S",
    "MAX_PROCESSES",
    "Credentials",
    "EgoExoChoice",
    "Endpoint",
    "Options",
    "VerifyMode",
    "build_options",
    "check_output_directory",
    "load_config_file",
    "parse_endpoint",
    "profile_key_id",
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
    """Where keys come from: explicit keys, a named profile, or (both ``None``) the AWS chain.

    The secret and the session token stay out of ``repr`` (tracebacks, logs, test reports).
    """

    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

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
class EgoExoChoice:
    """An Ego-Exo4D run's own choices (``egoexo-dl``): where the release's manifests are and
    the original ``egoexo`` downloader's filters; ``None`` is "flag not given"."""

    manifest_bucket: str
    manifest_prefix: str  # the release folder, ending in "/": egoexo-public/v2/
    uids: frozenset[str] | None = None
    benchmarks: frozenset[str] | None = None
    splits: frozenset[str] | None = None
    views: frozenset[str] | None = None
    universities: frozenset[str] | None = None


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
    # --manifest: also keep the release's full_scale manifest as <out>/manifest.csv.
    release_manifest: bool = False
    # --manifest-override-path: a local manifest read instead of the release's (one dataset).
    manifest_override: Path | None = None
    metadata: bool = True
    assume_yes: bool = False
    verify: VerifyMode = "etag"
    # This process's share of the plan, (K, N) for --shard K/N; None: all of it.
    shard: tuple[int, int] | None = None
    # --max-bandwidth, shared by every connection of the run; None: no cap.
    max_bandwidth_bytes_s: float | None = None
    # --processes N: worker processes over disjoint parts of the plan; None: automatic.
    processes: int | None = None
    # Set for an Ego-Exo4D run (``datasets`` are then its parts, ``version`` its release).
    egoexo: EgoExoChoice | None = None


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
    "processes": int,
    # The original's own keys (its argparse dests), accepted as its config files hold them.
    "bypass_existing": bool,
    "bypass_version_check": bool,
    "skip_s3_checks": bool,
    "manifest_override_path": str,
    "list_datasets": bool,
}
# Other names for an option: the original's dest on the left, our parameter on the right.
_CONFIG_ALIASES = {"assume_yes": "yes", "bypass_version_check": "bypass_existing"}
# The original's "annotations" (nargs="*", "currently unsupported"): read and ignored there,
# so here too; any of its shapes is accepted.
_IGNORED_KEYS = frozenset({"annotations"})


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


def _read_text(path: Path, what: str) -> str:
    """The UTF-8 text of a file the user named, or a ``ConfigError`` that says why not."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None


def load_config_file(path: Path) -> dict[str, object]:
    """Read a JSON config of the original CLI's shape into ``{canonical key: value}``."""
    path = path.expanduser()
    text = _read_text(path, "config file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a JSON object of option names")
    out: dict[str, object] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key in _IGNORED_KEYS:
            continue
        if key not in CONFIG_KEYS:
            known = ", ".join(sorted(k for k in CONFIG_KEYS if k not in _CONFIG_ALIASES))
            raise ConfigError(f"config file {path}: unknown option {raw_key!r} (known: {known})")
        if value is None:
            continue
        out[_CONFIG_ALIASES.get(key, key)] = _check_type(str(raw_key), value, CONFIG_KEYS[key])
    return out


def read_uid_file(path: Path) -> frozenset[str]:
    """UIDs from a whitespace-delimited file; a missing or empty file is a ``ConfigError``."""
    path = path.expanduser()
    text = _read_text(path, "uid file")
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


def profile_key_id(profile: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The ``aws_access_key_id`` a profile holds in the shared credentials or config file.

    ``None`` when neither file names one (no such profile, unreadable files, or keys that come
    from elsewhere: SSO, a role). Reads the files only; never the network.
    """
    env = os.environ if environ is None else environ
    places = (
        (env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials", profile),
        (
            env.get("AWS_CONFIG_FILE") or "~/.aws/config",
            profile if profile == "default" else f"profile {profile}",
        ),
    )
    for file, section in places:
        parser = configparser.RawConfigParser()
        try:
            parser.read(Path(file).expanduser(), encoding="utf-8")
            key_id = parser.get(section, "aws_access_key_id", fallback=None)
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        if key_id and key_id.strip():
            return key_id.strip()
    return None


def check_output_directory(path: Path, *, create: bool) -> None:
    """Refuse an output directory that is a file or that we could not write into."""
    probe = path
    while not probe.exists():
        if probe == probe.parent:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"output directory {path}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory {path}: no permission to write in {probe}")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create output directory {path}: {exc.strerror}") from None


def build_options(values: Mapping[str, Any]) -> tuple[Options, list[str]]:
    """Validate raw option values into ``Options``; also return warnings to show."""
    warnings: list[str] = []
    out_raw = values.get("output_directory")
    if not out_raw:
        raise ConfigError("missing --output_directory (where the dataset should go)")
    output_directory = Path(str(out_raw)).expanduser().absolute()
    version = normalise_version(str(values.get("version") or DEFAULT_VERSION))
    datasets: list[str] = []
    for name in values.get("datasets") or DEFAULT_DATASETS:
        canon = normalise_dataset(name)
        if canon != name.strip() and canon.replace("_", "-") != name.strip().lower():
            warnings.append(f"dataset {name!r} read as {canon!r}")
        if canon not in datasets:
            datasets.append(canon)
    uids_given = values.get("video_uids") or []
    uid_file = values.get("video_uid_file")
    if uids_given and uid_file:
        raise ConfigError("--video_uids and --video_uid_file are mutually exclusive; use one")
    uids = read_uid_file(Path(str(uid_file))) if uid_file else frozenset(uids_given)
    upper = sorted(u for u in uids if u != u.lower())
    if upper:
        warnings.append(
            f"Ego4D UIDs are lower case; read {len(upper)} as lower case: {', '.join(upper[:5])}"
            + (" ..." if len(upper) > 5 else "")
            + " (the original CLI stops on them)"
        )
        uids = frozenset(u.lower() for u in uids)
    universities = frozenset(normalise_university(u) for u in values.get("universities") or [])
    recased = sorted(u for u in values.get("universities") or [] if u not in UNIVERSITY_TO_BUCKET)
    if recased:
        # The original refuses these (argparse choices are case-sensitive).
        warnings.append(
            f"universities read as {', '.join(normalise_university(u) for u in recased)}"
            " (the original CLI takes only the lower-case ids)"
        )
    benchmarks = frozenset(b.strip().lower() for b in values.get("benchmarks") or [] if b.strip())
    raw_concurrency = values.get("concurrency")
    concurrency = DEFAULT_CONCURRENCY if raw_concurrency is None else int(raw_concurrency)
    if not 1 <= concurrency <= 1024:
        raise ConfigError(f"--concurrency must be between 1 and 1024, not {concurrency}")
    # Given: exactly that many. Not given: adaptive, up to the ceiling.
    max_concurrency = DEFAULT_MAX_CONCURRENCY if raw_concurrency is None else None
    raw_stall = values.get("stall_timeout")
    stall = DEFAULT_STALL_TIMEOUT_S if raw_stall is None else float(raw_stall)
    if stall <= 0:
        raise ConfigError(f"--stall-timeout must be positive, not {stall:g}")
    verify = str(values.get("verify") or "etag")
    if verify not in ("etag", "size"):
        raise ConfigError(f"--verify must be 'etag' or 'size', not {verify!r}")
    profile = values.get("aws_profile_name")
    override = values.get("manifest_override_path")
    endpoint = parse_endpoint(values.get("endpoint_url"))
    shard = values.get("shard")
    max_bandwidth = values.get("max_bandwidth")
    processes = _processes(values.get("processes"), shard=bool(shard))
    options = Options(
        output_directory=output_directory,
        version=version,
        datasets=tuple(datasets),
        benchmarks=benchmarks,
        universities=universities,
        video_uids=uids,
        credentials=Credentials(profile=str(profile) if profile else None),
        endpoint=endpoint,
        concurrency=concurrency,
        max_concurrency=max_concurrency,
        stall_timeout_s=stall,
        release_manifest=bool(values.get("manifest")),
        manifest_override=Path(str(override)).expanduser() if override else None,
        metadata=values.get("metadata", True) is not False,
        assume_yes=bool(values.get("yes")),
        verify=verify,  # type: ignore[arg-type]
        shard=parse_shard(str(shard)) if shard else None,
        max_bandwidth_bytes_s=parse_bandwidth(str(max_bandwidth)) if max_bandwidth else None,
        processes=processes,
    )
    return options, warnings


# A bound only to catch typos: each process holds a connection pool and a journal.
MAX_PROCESSES = 64


def _processes(raw: object, *, shard: bool) -> int | None:
    """``--processes N`` checked (``None``: automatic); more than one does not combine with
    ``--shard`` (a cluster's processes already split the plan)."""
    if raw is None:
        return None
    count = int(str(raw))
    if not 1 <= count <= MAX_PROCESSES:
        raise ConfigError(f"--processes must be between 1 and {MAX_PROCESSES}, not {count}")
    if shard and count > 1:
        raise ConfigError(
            "--processes and --shard do not combine: run one process per shard, or more "
            "shards (--shard K/N with a larger N)"
        )
    return count
