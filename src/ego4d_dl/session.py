"""Where every command's run starts: the S3 store built from the run's options, in one place.

Imports ``store`` and ``config``.
"""

from __future__ import annotations

from .config import Options
from .store import S3Store

__all__ = ["open_store"]

# Planning and diagnosis make small requests (listings, HEADs) many at a time even when the
# transfer concurrency is low.
_MIN_LOOKUP_CONNECTIONS = 8


def open_store(
    options: Options, *, lookups: bool = False, max_connections: int | None = None
) -> S3Store:
    """The store for ``options`` (use it as an async context manager). ``lookups``: a run
    that only plans or diagnoses, whose pool is sized for concurrent lookups;
    ``max_connections``: a transfer's pool, sized to its concurrency's ceiling."""
    connections = max_connections or options.concurrency
    if lookups:
        connections = max(_MIN_LOOKUP_CONNECTIONS, connections)
    return S3Store(
        credentials=options.credentials,
        endpoint=options.endpoint,
        max_connections=connections,
        stall_timeout_s=options.stall_timeout_s,
    )
