"""``--processes N``: how many processes, each one's part of the plan and share of the run's
limits, and one summary from theirs; pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from .config import Options
from .events import FileOutcome, RunStarted, RunSummary, StopKind
from .planned import Action, DatasetPlan, Plan, PlannedFile, Totals
from .shard import Shard, shard_of

__all__ = [
    "auto_processes",
    "merge_summaries",
    "run_started",
    "split_evenly",
    "split_plan",
    "worker_options",
    "worst_stop",
]

GiB = 1024**3
# Automatic count: one process per two cores (a process keeps its event-loop thread and about
# one core of hashing and writing threads busy), at most 8, and only as many as the plan feeds:
# one per GiB or per 2,000 files to fetch (each process costs a fixed 0.1-0.3 CPU-s: the zygote
# forks it with the stack imported, BENCHMARKS.md "More than one core").
_CORES_PER_PROCESS = 2
_AUTO_CEILING = 8
_BYTES_PER_PROCESS = GiB
_FILES_PER_PROCESS = 2_000

# Why a run stopped, most telling first: another process's interruption is only the
# consequence of the keys, the disk or the network failing in one (errors.rank's order).
_STOP_RANKING = (StopKind.CREDENTIALS, StopKind.DISK, StopKind.NETWORK, StopKind.INTERRUPTED)


def auto_processes(totals: Totals, cores: int) -> int:
    """The default of ``--processes``: 1 on two cores or fewer; otherwise a process per two
    cores (at most 8), but no more than one per GiB or per 2,000 files to fetch."""
    if cores <= 2:
        return 1
    by_cores = min(_AUTO_CEILING, cores // _CORES_PER_PROCESS)
    by_work = max(
        totals.fetch_bytes // _BYTES_PER_PROCESS, totals.fetch_files // _FILES_PER_PROCESS
    )
    return max(1, min(by_cores, by_work))


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` shares that differ by at most one, the larger first."""
    base, extra = divmod(total, parts)
    return [base + (i < extra) for i in range(parts)]


def worker_options(options: Options, shard: Shard) -> Options:
    """The options of process K of N: its shard (and so its journal) and its share of the
    run's limits. A fixed ``--concurrency C`` is split into N shares that add up to C; the
    adaptive start and ceiling are split alike (at least 1 each); ``--max-bandwidth`` is split
    equally (a process that finishes early leaves its share unused: the cap is never passed)."""
    k, n = shard
    concurrency = max(1, split_evenly(options.concurrency, n)[k - 1])
    ceiling = options.max_concurrency
    if ceiling is not None:
        ceiling = max(concurrency, split_evenly(ceiling, n)[k - 1])
    rate = options.max_bandwidth_bytes_s
    return dataclasses.replace(
        options,
        shard=shard,
        concurrency=concurrency,
        max_concurrency=ceiling,
        max_bandwidth_bytes_s=None if rate is None else rate / n,
    )


def split_plan(plan: Plan, count: int) -> list[Plan]:
    """The parts of ``plan`` that shards 1..``count`` own (by ``shard.shard_of``, as
    ``--shard K/N`` splits it), without warnings or manifests (the parent keeps those)."""
    owner = {f.key: shard_of(f.key, count) for f in plan.files}
    return [
        dataclasses.replace(
            plan,
            datasets=tuple(
                DatasetPlan(name=d.name, files=tuple(f for f in d.files if owner[f.key] == k))
                for d in plan.datasets
            ),
            warnings=(),
            manifests={},
        )
        for k in range(1, count + 1)
    ]


def run_started(files: Sequence[PlannedFile], concurrency: int) -> RunStarted:
    """The ``RunStarted`` one engine would send for ``files`` (the processes' engines each send
    their own part's; the parent shows this one)."""
    todo = [f for f in files if f.action.transfers]
    return RunStarted(
        files=len(files),
        size_bytes=sum(f.size_bytes for f in files),
        present_bytes=sum(f.present_bytes for f in todo),
        fetch_bytes=sum(f.bytes_to_fetch for f in todo),
        skipped_files=sum(f.action in (Action.SKIP, Action.ADOPT) for f in files),
        concurrency=concurrency,
    )


def worst_stop(kinds: Iterable[StopKind | None]) -> StopKind | None:
    """The stop that decides the run's exit code when its processes stopped in several ways."""
    found = [k for k in kinds if k is not None]
    return min(found, key=_STOP_RANKING.index) if found else None


def merge_summaries(
    parts: Sequence[RunSummary], *, elapsed_s: float, stopped: Sequence[str] = ()
) -> RunSummary:
    """One summary of a run from its processes' (``stopped``: what ended a process that sent
    none). Counts add up; the stop is the worst (``worst_stop``) with every reason named."""
    levels: dict[str, int] = {}
    problems: list[FileOutcome] = []
    for p in parts:
        for level, count in p.levels.items():
            levels[level] = levels.get(level, 0) + count
        problems.extend(p.problems)
    kind = worst_stop(p.stop_kind for p in parts)
    reasons = [p.stopped_by for p in parts if p.stopped_by and p.stop_kind is kind]
    reasons.extend(stopped)
    return RunSummary(
        files=sum(p.files for p in parts),
        verified=sum(p.verified for p in parts),
        skipped=sum(p.skipped for p in parts),
        failed=sum(p.failed for p in parts),
        missing=sum(p.missing for p in parts),
        denied=sum(p.denied for p in parts),
        bytes_fetched=sum(p.bytes_fetched for p in parts),
        size_bytes=sum(p.size_bytes for p in parts),
        elapsed_s=elapsed_s,
        retries=sum(p.retries for p in parts),
        restarts=sum(p.restarts for p in parts),
        levels=levels,
        problems=tuple(problems),
        stopped_by="; ".join(dict.fromkeys(reasons)) or None,
        stop_kind=kind,
    )
