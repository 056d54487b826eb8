"""Remote metadata for many objects at once: ListObjectsV2 where it is cheaper, HEAD otherwise."""

from __future__ import annotations

import asyncio
import functools
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from .errors import (
    AccessDeniedError,
    CredentialsError,
    NetworkError,
    TransferError,
    leaves,
    most_relevant,
)
from .retry import RetryPolicy, retry_call
from .store import ListedObject, ListPage, ObjectHead, ObjectStore

__all__ = ["LIST_MIN_KEYS", "Lookup", "LookupResult", "lookup_objects"]

# Below this many wanted keys in one folder, HEADs are as cheap as a listing page and cannot
# overshoot into thousands of unwanted keys.
LIST_MIN_KEYS = 16
# A listing may read this many keys per wanted key before it gives up on a sparse folder.
_LIST_OVERSHOOT = 20
# Wanted keys per concurrently listed span: one ListObjectsV2 page's worth.
_SPAN_KEYS = 1000

LookupResult = ObjectHead | ListedObject | TransferError


@dataclass(frozen=True, slots=True, kw_only=True)
class Lookup:
    """Counters of what a lookup cost, for the closing report and tests."""

    heads: int
    list_pages: int


async def lookup_objects(
    store: ObjectStore,
    wanted: Iterable[tuple[str, str]],
    *,
    concurrency: int,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    on_progress: Callable[[int], None] | None = None,
    span_keys: int = _SPAN_KEYS,
    merge_levels: int = 0,
) -> tuple[dict[tuple[str, str], LookupResult], Lookup]:
    """Resolve each ``(bucket, key)`` to its size and ETag, or to the error that explains why not.

    Keys are grouped by folder; ``merge_levels`` times, a folder with too few wanted keys to
    be worth a listing joins its parent's group (a layout of many small folders, such as
    Ego-Exo4D's take folders, is then listed rather than HEADed key by key).

    ``CredentialsError`` and ``NetworkError`` (after retries) abort the whole lookup: they
    concern every object. ``on_progress(n)`` is called as ``n`` more objects are resolved.
    """
    groups = _groups(wanted, merge_levels)
    run = _Lookups(store, concurrency, policy, sleep, on_progress, span_keys)
    try:
        async with asyncio.TaskGroup() as tg:
            for (bucket, folder), keys in groups.items():
                tg.create_task(run.resolve_group(bucket, folder, keys))
    except BaseExceptionGroup as group:
        raise most_relevant(group) from None
    return run.results, Lookup(heads=run.heads, list_pages=run.pages)


def _parent(path: str) -> str:
    """The folder holding ``path`` (a key, or a folder ending in ``/``), ending in ``/``."""
    path = path.rstrip("/")
    return path.rsplit("/", 1)[0] + "/" if "/" in path else ""


def _groups(
    wanted: Iterable[tuple[str, str]], merge_levels: int
) -> dict[tuple[str, str], set[str]]:
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for bucket, key in wanted:
        groups[(bucket, _parent(key))].add(key)
    for _ in range(merge_levels):
        merged: dict[tuple[str, str], set[str]] = defaultdict(set)
        for (bucket, folder), keys in groups.items():
            small = len(keys) < LIST_MIN_KEYS and folder
            merged[(bucket, _parent(folder) if small else folder)].update(keys)
        groups = merged
    return groups


class _Lookups:
    """The state of one ``lookup_objects``: results so far, a gate on requests, counters."""

    def __init__(
        self,
        store: ObjectStore,
        concurrency: int,
        policy: RetryPolicy,
        sleep: Callable[[float], Awaitable[object]],
        on_progress: Callable[[int], None] | None,
        span_keys: int,
    ) -> None:
        self.store = store
        self.policy = policy
        self.sleep = sleep
        self.on_progress = on_progress
        self.span_keys = span_keys
        self.results: dict[tuple[str, str], LookupResult] = {}
        self.gate = asyncio.Semaphore(concurrency)
        self.rng = random.Random()
        self.heads = 0
        self.pages = 0

    def _progress(self, n: int) -> None:
        if self.on_progress is not None and n:
            self.on_progress(n)

    async def head_one(self, bucket: str, key: str) -> None:
        """HEAD one key; the caller holds a ``gate`` slot, released here."""
        try:
            self.heads += 1
            self.results[(bucket, key)] = await retry_call(
                lambda: self.store.head(bucket, key),
                policy=self.policy,
                sleep=self.sleep,
                rng=self.rng,
            )
        except (CredentialsError, NetworkError):
            raise
        except TransferError as exc:
            self.results[(bucket, key)] = exc
        finally:
            self.gate.release()
        self._progress(1)

    async def list_span(self, bucket: str, folder: str, span: list[str], keys: set[str]) -> None:
        """List from just before ``span[0]`` until past ``span[-1]``; record wanted keys seen."""
        budget = len(span) * _LIST_OVERSHOOT
        seen = 0
        token: str | None = None

        async def one_page(token: str | None) -> ListPage:
            return await self.store.list_page(
                bucket, prefix=folder, start_after=span[0][:-1], token=token
            )

        while True:
            async with self.gate:
                self.pages += 1
                page = await retry_call(
                    functools.partial(one_page, token),
                    policy=self.policy,
                    sleep=self.sleep,
                    rng=self.rng,
                )
            seen += len(page.items)
            fresh = 0
            for item in page.items:
                if item.key in keys and (bucket, item.key) not in self.results:
                    self.results[(bucket, item.key)] = item
                    fresh += 1
            self._progress(fresh)
            token = page.next_token
            past_last = bool(page.items) and page.items[-1].key >= span[-1]
            if token is None or past_last or seen > budget:
                return

    async def resolve_group(self, bucket: str, folder: str, keys: set[str]) -> None:
        ordered = sorted(keys)
        if len(keys) >= LIST_MIN_KEYS:
            # Continuation tokens make one listing sequential; StartAfter lets us list
            # several spans of the folder at once, one page-sized span of wanted keys each.
            size = self.span_keys
            spans = [ordered[i : i + size] for i in range(0, len(ordered), size)]
            try:
                async with asyncio.TaskGroup() as tg:
                    for span in spans:
                        tg.create_task(self.list_span(bucket, folder, span, keys))
            except BaseExceptionGroup as group:
                if not all(isinstance(e, AccessDeniedError) for e in leaves(group)):
                    raise
                # Listing is not allowed everywhere; HEAD each key instead.
        todo = [k for k in ordered if (bucket, k) not in self.results]
        async with asyncio.TaskGroup() as tg:
            for key in todo:
                # Take the slot before creating the task, so pending work stays bounded.
                await self.gate.acquire()
                tg.create_task(self.head_one(bucket, key))
