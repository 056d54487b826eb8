"""``--shard K/N`` and ``status``: N processes share one output directory with no overlap.

The shards run as real concurrent processes through the Slurm array script of the README
(``examples/slurm-ego4d-dl.sh``), against the sandbox release; the result must be the tree one
unsharded run makes, and ``status`` must count what the disk holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ego4d_dl.errors import ConfigError
from ego4d_dl.sandbox import Sandbox, SeededRelease
from ego4d_dl.shard import owns, parse_shard, shard_of
from tests.support.cli import cli, cli_process
from tests.support.seed import tree_md5

ALL_DATASETS = ("full_scale", "clips", "annotations", "viz", "av_models", "vq2d_models")
SLURM_SCRIPT = Path(__file__).parent.parent / "examples" / "slurm-ego4d-dl.sh"
METADATA_KEY = "public/v2_1/ego4d.json"


def test_parse_shard() -> None:
    assert parse_shard("3/8") == (3, 8)
    assert parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ("0/4", "5/4", "1/0", "3", "a/b", "-1/4", "1/4/2", ""):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)


def test_shard_hash_is_the_documented_stable_one() -> None:
    keys = [f"public/v2/full_scale/{i:08x}-video.mp4" for i in range(10_000)]
    for key in keys[:200]:
        documented = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 7 + 1
        assert shard_of(key, 7) == documented
    # Every key has exactly one owner among the N shards.
    for key in keys[:200]:
        assert sum(owns((k, 5), key) for k in range(1, 6)) == 1
    # Balanced: each of 8 shards within 10% of its fair share of 10,000 keys.
    counts = Counter(shard_of(k, 8) for k in keys)
    assert set(counts) == set(range(1, 9))
    assert all(abs(n - 1250) < 125 for n in counts.values()), counts


def test_shard_hash_does_not_depend_on_the_process() -> None:
    # Python's hash() is salted per process; a shard assignment must not be.
    code = "from ego4d_dl.shard import shard_of; print([shard_of(f'k{i}', 16) for i in range(50)])"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1
    assert outs.pop().strip() == str([shard_of(f"k{i}", 16) for i in range(50)])


def _plan_destinations(out: Path, endpoint: str, *extra: str) -> list[tuple[str, str]]:
    done = cli(
        "plan", "-o", str(out), "--datasets", *ALL_DATASETS, "--endpoint-url", endpoint,
        "--json", *extra,
    )  # fmt: skip
    assert done.code == 0, done.stderr
    doc = json.loads(done.stdout)
    return [
        (f["key"], str(Path(f["destination"]).relative_to(out)))
        for ds in doc["datasets"]
        for f in ds["files"]
    ]


def _truth(release: SeededRelease) -> dict[str, str]:
    truth = {f.relpath: f.obj.md5_hex for f in release.files}
    truth["ego4d.json"] = release.metadata.md5_hex
    return truth


@pytest.mark.slow
def test_shards_cover_every_file_once_and_make_the_unsharded_tree(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    n = 3
    sharded, whole = tmp_path / "sharded", tmp_path / "whole"
    # The plans: every planned file in exactly one shard's plan, the one its key hashes to.
    everything = _plan_destinations(whole, sandbox.endpoint_url)
    parts = [
        _plan_destinations(sharded, sandbox.endpoint_url, "--shard", f"{k}/{n}")
        for k in range(1, n + 1)
    ]
    assert all(parts), "a shard with nothing to do would not test much"
    assert sorted(d for part in parts for _, d in part) == sorted(d for _, d in everything)
    for k, part in enumerate(parts, start=1):
        assert all(shard_of(key, n) == k for key, _ in part)

    # The downloads: N concurrent processes of the Slurm array script, one output directory.
    env = {
        **os.environ,
        "EGO4D_OUT": str(sharded),
        "EGO4D_DATASETS": " ".join(ALL_DATASETS),
        "EGO4D_DL": f"{sys.executable} -m ego4d_dl",
        "EGO4D_MAX_BANDWIDTH": "",
        "EGO4D_EXTRA_ARGS": f"--endpoint-url {sandbox.endpoint_url} --quiet",
        "SLURM_ARRAY_TASK_COUNT": str(n),
    }
    tasks = [
        subprocess.Popen(
            ["bash", str(SLURM_SCRIPT)],
            env={**env, "SLURM_ARRAY_TASK_ID": str(k)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(1, n + 1)
    ]
    for k, task in enumerate(tasks, start=1):
        output, _ = task.communicate(timeout=120)
        assert task.returncode == 0, output
        assert f"shard {k}/{n}: every file complete and verified" in output

    single = cli(
        "download", "-o", str(whole), "--datasets", *ALL_DATASETS,
        "--endpoint-url", sandbox.endpoint_url, "--yes", "--quiet",
    )  # fmt: skip
    assert single.code == 0, single.stderr
    truth = _truth(release)
    sharded_tree = tree_md5(sharded)
    assert sharded_tree == tree_md5(whole)
    assert {rel: md5 for rel, md5 in sharded_tree.items() if rel in truth} == truth
    journals = sorted(p.name for p in (sharded / ".ego4d-dl").glob("*.sqlite"))
    assert journals == [f"journal-shard-{k}-of-{n}.sqlite" for k in range(1, n + 1)]

    # status reads the three journals and counts every file complete, each in its shard.
    done = cli("status", "-o", str(sharded), "--json")
    assert done.code == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["shard_count"] == n
    assert status["totals"]["files"] == len(truth)
    assert status["totals"]["complete_files"] == len(truth)
    assert status["totals"]["complete_bytes"] == sum(f.obj.size_bytes for f in release.files) + len(
        json.dumps(json.loads((sharded / "ego4d.json").read_text()), indent=1)
    )
    keys = [f.obj.key for f in release.files] + [METADATA_KEY]
    for shard in status["shards"]:
        k = int(shard["shard"].split("/")[0])
        mine = sum(shard_of(key, n) == k for key in keys)
        assert shard["totals"]["files"] == shard["totals"]["complete_files"] == mine


@pytest.mark.slow
def test_status_counts_partial_and_unstarted_shards(
    sandbox: Sandbox, release: SeededRelease, aws_env: dict[str, str], tmp_path: Path
) -> None:
    n = 3
    out = tmp_path / "out"
    common = ("-o", str(out), "--datasets", "full_scale", "--endpoint-url", sandbox.endpoint_url)
    videos = release.for_dataset("full_scale")
    shard_size = {
        k: sum(v.obj.size_bytes for v in videos if shard_of(v.obj.key, n) == k) for k in (1, 2, 3)
    }
    assert shard_size[2] >= 20 * 2**20, "shard 2 must hold enough to be caught half-way"

    first = cli("download", *common, "--yes", "--quiet", "--shard", f"1/{n}")
    assert first.code == 0, first.stderr
    # Shard 2, slowed to 4 MiB/s and one request at a time, is stopped (as Slurm does at a
    # time limit) once it has fetched more than any one part: some ranges are journaled.
    second = subprocess.Popen(
        [sys.executable, "-m", "ego4d_dl", "download", *common, "--yes", "--shard", f"2/{n}",
         "--max-bandwidth", "4MiB/s", "--concurrency", "1", "--progress-interval", "0.2"],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert second.stderr is not None
    deadline = time.monotonic() + 60
    for line in second.stderr:
        match = re.search(r"progress [\d.]+%: ([\d.]+) MiB of", line)
        if match and float(match[1]) >= 10:
            break
        assert time.monotonic() < deadline, "shard 2 never got going"
    second.send_signal(signal.SIGTERM)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 130, err

    done = cli("status", "-o", str(out), "--json", "--no-metadata")
    assert done.code == 0, done.stderr
    status = json.loads(done.stdout)
    by_shard = {s["shard"]: s for s in status["shards"]}
    assert set(by_shard) == {f"{k}/{n}" for k in (1, 2, 3)}
    one, two, three = (by_shard[f"{k}/{n}"]["totals"] for k in (1, 2, 3))
    assert one["files"] == one["complete_files"]
    assert one["complete_bytes"] == shard_size[1]
    # Shard 2's counts agree with the disk and with what a resumed run would do (its plan).
    mine = [v for v in videos if shard_of(v.obj.key, n) == 2]
    finished = [v for v in mine if (out / v.relpath).is_file()]
    assert two["complete_files"] == len(finished) < len(mine)
    plan = json.loads(cli("plan", *common, "--json", "--shard", f"2/{n}").stdout)
    resumed = [
        f
        for ds in plan["datasets"]
        if ds["name"] == "full_scale"
        for f in ds["files"]
        if f["action"] == "resume"
    ]
    assert resumed, "the interrupted shard should have journaled part of a file"
    assert two["partial_files"] == len(resumed)
    assert two["partial_done_bytes"] == sum(f["present_bytes"] for f in resumed)
    assert two["complete_files"] + two["partial_files"] + two["fetch_files"] == len(mine)
    # Shard 3 never ran: no journal, every file still to fetch, sizes unknown offline.
    assert by_shard[f"3/{n}"]["journal"] is None
    assert three["fetch_files"] == three["fetch_unknown_files"] == three["files"]
    totals = status["totals"]
    assert totals["files"] == len(videos)
    assert totals["complete_files"] == one["complete_files"] + two["complete_files"]

    # The human table says the same, and resuming shard 2 finishes it.
    table = cli("status", "-o", str(out), "--no-metadata")
    assert "shard 3/3 (not started)" in table.stdout
    again = cli("download", *common, "--yes", "--quiet", "--shard", f"2/{n}")
    assert again.code == 0, again.stderr
    status = json.loads(cli("status", "-o", str(out), "--json", "--no-metadata").stdout)
    two = next(s for s in status["shards"] if s["shard"] == f"2/{n}")["totals"]
    assert two["complete_files"] == len(mine) and two["partial_files"] == 0


def test_status_explains_an_empty_directory(tmp_path: Path, aws_env: dict[str, str]) -> None:
    done = cli_process("status", "-o", str(tmp_path / "nowhere"))
    assert done.code == 2
    assert "does not exist" in done.stderr
    assert "Traceback" not in done.stderr
