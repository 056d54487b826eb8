"""``--max-bandwidth``: parsing rates, and one token bucket shared by every connection."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

from .errors import ConfigError

__all__ = ["TokenBucket", "format_rate", "parse_bandwidth"]

_UNITS: dict[str, float] = {
    "": 1,
    "b": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    # Single letters are binary, as in curl --limit-rate, wget --limit-rate and rsync.
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
    # Network people think in bits.
    "kbit": 1e3 / 8,
    "mbit": 1e6 / 8,
    "gbit": 1e9 / 8,
    "kbps": 1e3 / 8,
    "mbps": 1e6 / 8,
    "gbps": 1e9 / 8,
}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*(?:/\s*s(?:ec)?)?\s*$", re.I)
# Below this, a download of one 1 MiB chunk takes minutes: surely a typo.
_MIN_RATE_BYTES_S = 1024.0


def parse_bandwidth(text: str) -> float:
    """``"200MB/s"`` -> ``2e8`` bytes per second.

    Units: B, KB, MB, GB, TB (powers of 1000), KiB, MiB, GiB, TiB and the single letters K, M,
    G, T (powers of 1024); Kbit, Mbit, Gbit (or Kbps, Mbps, Gbps) for bits. ``/s`` is optional
    and case does not matter.
    """
    match = _RATE_RE.match(text)
    unit = match[2].lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(
            f"invalid --max-bandwidth {text!r}; expected a rate such as 200MB/s, 50MiB/s, "
            "800Mbit/s or 200M"
        )
    rate = float(match[1]) * _UNITS[unit]
    if rate < _MIN_RATE_BYTES_S:
        raise ConfigError(f"--max-bandwidth {text!r} is below 1 KiB/s; that cannot be meant")
    return rate


def format_rate(bytes_s: float) -> str:
    """``2e8`` -> ``"200.0 MB/s"`` (decimal units, as the rate was most likely typed)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if bytes_s >= size:
            return f"{bytes_s / size:.1f} {unit}/s"
    return f"{bytes_s:.0f} B/s"


class TokenBucket:
    """Paces bytes to ``rate_bytes_s`` across every coroutine that shares it."""

    def __init__(
        self,
        rate_bytes_s: float,
        *,
        burst_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if rate_bytes_s <= 0:
            raise ValueError("rate_bytes_s must be positive")
        self.rate_bytes_s = rate_bytes_s
        self._burst_s = max(burst_bytes, 0) / rate_bytes_s
        self._clock = clock
        self._sleep = sleep
        # When the bytes granted so far are paid for at the rate; an idle bucket is paid up
        # to now, and a grant may run ahead of its payment by at most one burst.
        self._paid_until = clock()

    async def acquire(self, n_bytes: int) -> None:
        """Wait until ``n_bytes`` more may be read (first come, first served)."""
        now = self._clock()
        self._paid_until = max(self._paid_until, now) + n_bytes / self.rate_bytes_s
        wait_s = self._paid_until - self._burst_s - now
        if wait_s > 0:
            await self._sleep(wait_s)
