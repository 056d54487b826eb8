"""Retry policy as a value: which failures to retry and how long to wait; pure."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import NetworkError, TransientError

__all__ = ["RetryPolicy", "is_retryable", "retry_call"]

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


async def retry_call(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[object]],
    rng: random.Random,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """Run ``call`` until it succeeds, a non-retryable error occurs, or the budget is spent.

    The last retryable error is re-raised as it is, so callers see ``TransientError`` or
    ``NetworkError`` with its message intact.
    """
    failures = 0
    while True:
        try:
            return await call()
        except (TransientError, NetworkError) as exc:
            failures += 1
            if policy.gives_up(failures):
                raise
            delay = policy.delay_s(failures, rng)
            if on_retry is not None:
                on_retry(exc, delay)
            await sleep(delay)
