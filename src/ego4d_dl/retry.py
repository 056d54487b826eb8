"""Retry policy as a value: which failures to retry and how long to wait; pure."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import CredentialsError, NetworkError, TransientError

__all__ = ["KeyRenewal", "RetryPolicy", "is_retryable", "retry_call"]

T = TypeVar("T")


def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt may succeed: transient server/network trouble only."""
    return isinstance(exc, TransientError | NetworkError)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How many attempts one request gets and how long to wait between them."""

    max_attempts: int = 10
    base_delay_s: float = 0.25
    max_delay_s: float = 30.0

    def delay_s(self, failures: int, rng: random.Random) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** min(failures - 1, 30))
        return rng.uniform(0.0, ceiling)

    def gives_up(self, failures: int) -> bool:
        """Whether ``failures`` consecutive failures exhaust the budget."""
        return failures >= self.max_attempts


class KeyRenewal:
    """The keys' renewal shared by a run's requests: a request refused for its keys asks once
    whether they were renewed since it was sent (``renewed``); the first to ask reloads them,
    the others (sent with the old keys) are simply tried again with the new ones."""

    def __init__(self, reload: Callable[[], Awaitable[bool]] | None) -> None:
        self._reload = reload
        self._lock = asyncio.Lock()
        self.generation = 0

    async def renewed(self, since: int) -> bool:
        """Whether a request sent with the keys of ``since`` may be tried again."""
        if self._reload is None:
            return False
        async with self._lock:
            if since != self.generation:
                return True  # another request already reloaded them
            if await self._reload():
                self.generation += 1
                return True
            return False


async def retry_call(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[object]],
    rng: random.Random,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    keys: KeyRenewal | None = None,
) -> T:
    """Run ``call`` until it succeeds, a non-retryable error occurs, or the budget is spent;
    the one retry loop of ego4d-dl (planning, lookups, layouts, metadata and ranged GETs).

    ``on_retry(exc, failures, delay_s)`` hears of each retry before its pause. With ``keys``,
    a ``CredentialsError`` is retried once the keys were renewed (``KeyRenewal``). The last
    retryable error is re-raised as it is, so callers see ``TransientError`` or
    ``NetworkError`` with its message intact.
    """
    failures = 0
    while True:
        sent_with = keys.generation if keys is not None else 0
        try:
            return await call()
        except (TransientError, NetworkError) as exc:
            failures += 1
            if policy.gives_up(failures):
                raise
            delay = policy.delay_s(failures, rng)
            if on_retry is not None:
                on_retry(exc, failures, delay)
            await sleep(delay)
        except CredentialsError:
            if keys is None or not await keys.renewed(sent_with):
                raise
