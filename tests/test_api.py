"""The public Python API against the sandbox: plan and download from a script, with a progress
callback, a credentials error caught as an exception, and nothing printed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ego4d_dl
from ego4d_dl.errors import ConfigError
from ego4d_dl.sandbox import Sandbox, SeededRelease
from tests.support.seed import tree_md5

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import ego4d_dl
    from ego4d_dl.errors import CredentialsError

    out, endpoint, report = sys.argv[1], sys.argv[2], sys.argv[3]
    seen = []
    plan = ego4d_dl.plan(out, datasets=["annotations"], endpoint_url=endpoint,
                         on_event=lambda e: seen.append(type(e).__name__))
    summary = ego4d_dl.download(out, datasets=["annotations"], endpoint_url=endpoint,
                                on_event=lambda e: seen.append(type(e).__name__))
    os.environ["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    try:
        ego4d_dl.download(out + "-again", datasets=["annotations"], endpoint_url=endpoint)
        refused = None
    except CredentialsError as exc:
        refused = str(exc)
    with open(report, "w") as f:
        json.dump({"planned": plan.totals.fetch_files, "ok": summary.ok,
                   "verified": summary.verified, "events": sorted(set(seen)),
                   "refused": refused}, f)
    """
)


def test_a_script_plans_downloads_and_catches_bad_keys_without_printing(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    report = tmp_path / "report.json"
    ran = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out), sandbox.endpoint_url, str(report)],
        env={**os.environ, **aws_env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert (ran.stdout, ran.stderr) == ("", "")  # the library itself prints nothing
    doc = json.loads(report.read_text())
    files = [f for f in release.files if f.dataset == "annotations"]
    assert doc["planned"] == len(files) + 1  # and ego4d.json
    assert doc["ok"] and doc["verified"] == len(files) + 1
    assert {"ManifestLoaded", "PlanBuilt", "RunStarted", "FileVerified", "RunFinished"} <= set(
        doc["events"]
    )
    assert doc["refused"] and "SignatureDoesNotMatch" in doc["refused"]
    tree = tree_md5(out)
    for f in files:
        assert tree[f.relpath] == f.obj.md5_hex


def test_the_async_api_runs_inside_an_event_loop(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    async def notebook() -> tuple[int, bool]:
        with pytest.raises(RuntimeError, match=r"await ego4d_dl\.aplan"):
            ego4d_dl.plan(tmp_path, datasets=["annotations"], endpoint_url=sandbox.endpoint_url)
        plan = await ego4d_dl.aplan(
            tmp_path, datasets=["annotations"], endpoint_url=sandbox.endpoint_url, metadata=False
        )
        summary = await ego4d_dl.adownload(
            tmp_path, datasets=["annotations"], endpoint_url=sandbox.endpoint_url, metadata=False
        )
        return plan.totals.fetch_files, summary.ok

    planned, ok = asyncio.run(notebook())
    assert ok and planned == len([f for f in release.files if f.dataset == "annotations"])


def test_options_are_validated_as_on_the_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--concurrency must be between 1 and 1024"):
        ego4d_dl.plan(tmp_path, concurrency=0)
    with pytest.raises(ConfigError, match="must be a list of names"):
        ego4d_dl.plan(tmp_path, datasets="annotations")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"datasets": ["clips"], "concurrency": 0}))
    with pytest.raises(ConfigError, match="--concurrency"):
        ego4d_dl.plan(tmp_path, config=config)
