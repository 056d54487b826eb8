"""The public Python API: plan and download Ego4D from code, as the command line does.

Training scripts and notebooks call ``plan``/``download`` (``aplan``/``adownload`` inside a
running event loop, as in Jupyter) with the command line's options as keyword arguments. They
never print, prompt or exit: results are values, failures are ``Ego4dDLError``s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypedDict, TypeVar, Unpack

from .config import Options, build_options, load_config_file
from .downloading import DownloadResult, plan_readonly
from .errors import ConfigError, CredentialsError, DiskFullError, Ego4dDLError, NetworkError
from .events import Event, EventSink, RunSummary, StopKind, discard
from .planned import Plan
from .processes import download as run_download
from .session import open_store

__all__ = ["DownloadOptions", "adownload", "aplan", "download", "plan"]

T = TypeVar("T")


class DownloadOptions(TypedDict, total=False):
    """The command line's options, by their underscore names (see ``ego4d-dl download -h``)."""

    datasets: Sequence[str]
    benchmarks: Sequence[str]
    version: str
    aws_profile_name: str
    video_uids: Sequence[str]
    video_uid_file: str | os.PathLike[str]
    universities: Sequence[str]
    config: str | os.PathLike[str]  # a JSON file of these options (the original CLI's format)
    endpoint_url: str
    concurrency: int
    processes: int  # worker processes over disjoint parts of the plan; default: automatic
    manifest_override_path: str | os.PathLike[str]
    metadata: bool
    verify: str  # "etag" (default) or "size"
    stall_timeout: float
    shard: str  # "K/N"
    max_bandwidth: str  # "200MB/s"
    manifest: bool


def make_options(
    output_directory: str | os.PathLike[str], values: DownloadOptions
) -> tuple[Options, list[str]]:
    """Validated ``Options`` (and warnings) from keyword options; a ``config`` file fills in
    what was not given, as on the command line."""
    merged: dict[str, Any] = {}
    config = values.get("config")
    if config is not None:
        merged.update(load_config_file(Path(config)))
    merged.update({k: v for k, v in values.items() if k != "config" and v is not None})
    for name in ("datasets", "benchmarks", "video_uids", "universities"):
        if isinstance(merged.get(name), str):
            raise ConfigError(f"{name} must be a list of names, not the string {merged[name]!r}")
    merged["output_directory"] = output_directory
    merged["yes"] = True  # a function call is its own confirmation
    return build_options(merged)


async def aplan(
    output_directory: str | os.PathLike[str],
    *,
    on_event: EventSink | None = None,
    **options: Unpack[DownloadOptions],
) -> Plan:
    """What ``download`` would do: every file with its action, sizes, what is on disk.

    Changes nothing on disk. ``on_event`` receives the planning events (``ManifestLoaded``,
    ``ObjectsLookedUp``, ``PlanBuilt``) as ``--json`` prints them.
    """
    opts, warnings = make_options(output_directory, options)
    async with open_store(opts, lookups=True) as store:
        planned = await plan_readonly(opts, store, sink=on_event or discard, running_ok=True)
    return dataclasses.replace(planned, warnings=(*warnings, *planned.warnings))


async def adownload(
    output_directory: str | os.PathLike[str],
    *,
    on_event: EventSink | None = None,
    space_check: bool = True,
    **options: Unpack[DownloadOptions],
) -> RunSummary:
    """Download, verify and journal everything the options select; resume what is partial.

    With ``processes=N`` (as ``--processes N``; by default automatic from the cores and the
    plan) N worker processes share the plan; their events reach ``on_event`` from this one.
    Returns the run's summary (``summary.ok``: every file complete and verified; each file
    that failed is in ``summary.problems``). A run stopped by credentials, a full disk or an
    unreachable network raises ``CredentialsError``, ``DiskFullError`` or ``NetworkError``
    (with ``.summary``); what was done is journaled, and calling again resumes.
    """
    opts, _ = make_options(output_directory, options)

    async def yes(_: Plan) -> bool:
        return True

    result = await run_download(
        opts, sink=on_event or discard, confirm=yes, space_check=space_check
    )
    return _summary_or_raise(result)


def _summary_or_raise(result: DownloadResult) -> RunSummary:
    summary = result.summary
    if summary is None:  # nothing could be planned into a run (e.g. only --manifest)
        return RunSummary.empty()
    stopped: dict[StopKind, Callable[[str], Ego4dDLError]] = {
        StopKind.CREDENTIALS: lambda m: CredentialsError(m, code="Stopped"),
        StopKind.DISK: DiskFullError,
        StopKind.NETWORK: NetworkError,
    }
    make = stopped.get(summary.stop_kind) if summary.stop_kind else None
    if make is not None:
        error = make(summary.stopped_by or str(summary.stop_kind))
        error.summary = summary  # type: ignore[attr-defined]
        raise error
    return summary


def plan(
    output_directory: str | os.PathLike[str],
    *,
    on_event: Callable[[Event], None] | None = None,
    **options: Unpack[DownloadOptions],
) -> Plan:
    """``aplan`` for code without a running event loop."""
    return _run(aplan(output_directory, on_event=on_event, **options))


def download(
    output_directory: str | os.PathLike[str],
    *,
    on_event: Callable[[Event], None] | None = None,
    space_check: bool = True,
    **options: Unpack[DownloadOptions],
) -> RunSummary:
    """``adownload`` for code without a running event loop."""
    return _run(adownload(output_directory, on_event=on_event, space_check=space_check, **options))


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError(
        "an event loop is already running here (Jupyter?): use `await ego4d_dl.aplan(...)` "
        "or `await ego4d_dl.adownload(...)` instead"
    )
