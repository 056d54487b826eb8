"""The ``datasets`` command: a release's datasets.csv."""

from __future__ import annotations

import json

import typer

from ..catalog import DEFAULT_VERSION, normalise_version
from ..config import Credentials, parse_endpoint
from ..errors import Ego4dDLError
from ..families.ego4d import list_dataset_rows
from ..render import render_datasets
from ..store import S3Store
from .console import fail, run_async, stdout_console, write_stdout
from .options import EndpointUrl, JsonOut, Profile, Version
from .outcome import exit_code_for

__all__ = ["datasets_command"]


def datasets_command(
    ctx: typer.Context,
    version: Version = None,
    aws_profile_name: Profile = None,
    endpoint_url: EndpointUrl = None,
    json_out: JsonOut = False,
) -> None:
    """List the datasets of a release (its datasets.csv)."""
    try:
        release = normalise_version(version or DEFAULT_VERSION)
        endpoint = parse_endpoint(endpoint_url)
    except Ego4dDLError as exc:
        fail(str(exc), exit_code_for(exc))
    credentials = Credentials(profile=aws_profile_name)

    async def go() -> list[tuple[str, str]]:
        async with S3Store(
            credentials=credentials, endpoint=endpoint, max_connections=4, stall_timeout_s=30
        ) as store:
            return await list_dataset_rows(store, release)

    rows = run_async(go, credentials=credentials)
    if json_out:
        doc = [{"dataset": n, "description": d} for n, d in rows]
        write_stdout(json.dumps(doc, indent=1) + "\n")
    else:
        render_datasets(stdout_console, release, rows)
