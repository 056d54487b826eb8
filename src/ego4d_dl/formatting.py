"""How numbers, durations and names read on screen: bytes, ETAs, plurals, labels; pure."""

from __future__ import annotations

from pathlib import PurePosixPath

from .text import safe

__all__ = [
    "bytes_exact",
    "eta_s",
    "eta_text",
    "human_bytes",
    "human_duration",
    "label",
    "plural",
    "rate_text",
]


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``; binary units, as ``du -h`` and the original CLI's GB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """``83.4`` -> ``"0:01:23"``; hours grow past 24 (a full_scale download takes days)."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def plural(n: int, noun: str = "file") -> str:
    """``1`` -> ``"1 file"``, ``1234`` -> ``"1,234 files"``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def eta_s(remaining_bytes: int, bytes_per_s: float | None) -> float | None:
    """Seconds left at ``bytes_per_s``; None while the rate is unknown or nil."""
    if remaining_bytes <= 0:
        return 0.0
    if bytes_per_s is None or bytes_per_s < 1.0:
        return None
    return remaining_bytes / bytes_per_s


def eta_text(seconds: float | None) -> str:
    """``"ETA 0:01:23"``, or dashes while unknown."""
    return "ETA --:--:--" if seconds is None else f"ETA {human_duration(seconds)}"


def label(dataset: str, key: str) -> str:
    """A transfer's short name for display: ``dataset/<file name>``, made ``safe``."""
    return safe(f"{dataset}/{PurePosixPath(key).name}")


def bytes_exact(n: int) -> str:
    """``"1.5 GiB (1,610,612,736 bytes)"``: for messages where the exact count matters."""
    return f"{human_bytes(n)} ({n:,} bytes)"


def rate_text(bytes_per_s: float | None) -> str:
    """``"105.3 MiB/s"``, or ``"--"`` while unknown."""
    return "--" if bytes_per_s is None else f"{human_bytes(bytes_per_s)}/s"
