"""Cluster sharding: which of N cooperating processes owns an S3 key; pure."""

from __future__ import annotations

import hashlib
import re

from .errors import ConfigError

__all__ = ["Shard", "format_shard", "owns", "parse_shard", "shard_of"]

# (K, N): this process is shard K (1-based) of N.
Shard = tuple[int, int]

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
# A bound only to catch typos such as 1/10000000; a real cluster runs far fewer processes.
_MAX_SHARDS = 100_000


def parse_shard(text: str) -> Shard:
    """``"3/8"`` -> ``(3, 8)``; anything else is a one-line ``ConfigError``."""
    match = _SHARD_RE.match(text)
    if match is None:
        raise ConfigError(
            f"invalid --shard {text!r}; expected K/N with 1 <= K <= N, e.g. --shard 3/8 "
            "(in a Slurm array: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
        )
    index, count = int(match[1]), int(match[2])
    if not 1 <= count <= _MAX_SHARDS:
        raise ConfigError(f"invalid --shard {text!r}: N must be between 1 and {_MAX_SHARDS:,}")
    if not 1 <= index <= count:
        raise ConfigError(
            f"invalid --shard {text!r}: K must be between 1 and {count} (shards count from 1; "
            "a Slurm array for --shard K/N is --array=1-N)"
        )
    return index, count


def format_shard(shard: Shard) -> str:
    """``(3, 8)`` -> ``"3/8"``."""
    return f"{shard[0]}/{shard[1]}"


def shard_of(key: str, count: int) -> int:
    """The shard (1..``count``) that owns S3 key ``key``."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def owns(shard: Shard | None, key: str) -> bool:
    """Whether ``shard`` (``None``: the whole plan) is responsible for ``key``."""
    return shard is None or shard_of(key, shard[1]) == shard[0]
