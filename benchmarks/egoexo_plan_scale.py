"""Planning 60,000 Ego-Exo4D manifest paths: ego4d-dl's reader and filters vs the original's prompt.

Writes one takes-like manifest.json (``--paths`` paths, ``--paths-per-entry`` per take: 5,000
takes of 12 videos by default, the shape of the real takes part) into a fresh sandbox as the
``takes`` part of a release of its own, then times, alternating, median of ``--runs``:

- ``ego4d-dl (process)``: a fresh Python that GETs the manifest from the sandbox, streams it
  through ``egoexo_manifest``/``egoexo_select`` with the ``--views``/``--splits`` filters and
  ``lstat``s every selected destination (the original's disk check), in-process phases and
  peak RSS reported;
- ``original to prompt``: the original ``egoexo`` with the same flags until it has asked
  "Do you want to start the download?" (answered "n"; it exits right after), peak RSS from
  ``wait4``.

``--memory`` also prints tracemalloc peaks of streaming the manifest vs ``json.loads`` of it.
Nothing is downloaded; the manifest names objects that do not exist.

    python benchmarks/egoexo_plan_scale.py --runs 3
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from ego4d_dl.egoexo_catalog import MANIFEST_BUCKET, release_root
from ego4d_dl.egoexo_manifest import destination, parse_entries
from ego4d_dl.egoexo_select import EgoExoSelection, select_part
from ego4d_dl.sandbox import Sandbox, egoexo_scale_manifest

RELEASE = "bench60k"
PART = "takes"
# One filter on entries and one on paths, so both kinds of check run on every path.
FLAGS = ("--views", "exo", "--splits", "train", "val")
SELECTION = EgoExoSelection(views=frozenset({"exo"}), splits=frozenset({"train", "val"}))


def plan_once(endpoint_url: str, out: Path) -> dict[str, Any]:
    """One ego4d-dl planning pass, in this process: GET, parse and filter, lstat."""
    import boto3
    from botocore.config import Config

    started = time.perf_counter()
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, config=Config(s3={"addressing_style": "path"})
    )
    root = release_root(RELEASE)
    body = client.get_object(Bucket=root.bucket, Key=root.manifest_key(PART))["Body"].read()
    got = time.perf_counter()
    text = io.TextIOWrapper(io.BytesIO(body), encoding="utf-8-sig")
    chosen = select_part(PART, parse_entries(text, source=PART), SELECTION)
    parsed = time.perf_counter()
    present = 0
    for row in chosen.rows:
        try:
            destination(out, row).lstat()
            present += 1
        except FileNotFoundError:
            pass
    done = time.perf_counter()
    return {
        "paths": chosen.paths,
        "selected": len(chosen.rows),
        "present": present,
        "get_s": got - started,
        "parse_filter_s": parsed - got,
        "lstat_s": done - parsed,
    }


def _run(cmd: list[str], env: dict[str, str], stdin: str) -> tuple[float, float, str]:
    """Wall time, peak RSS (MiB) and stdout of ``cmd``; fails loudly on a non-zero exit.

    ``cmd`` runs under a small Python of its own (``--rss-of``) that reports its peak RSS:
    Linux carries a process's RSS high-water mark across fork and exec, so a child of this
    process, which holds the manifest, would report at least this process's peak.
    """
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "rss"
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            started = time.perf_counter()
            ran = subprocess.run(
                [sys.executable, __file__, "--rss-of", str(rss_file), "--", *cmd],
                env=env, input=stdin.encode(), stdout=stdout, stderr=stderr, check=False,
            )  # fmt: skip
            elapsed = time.perf_counter() - started
        text = out.read_text()
        if ran.returncode != 0:
            raise SystemExit(
                f"{cmd[:4]} failed ({ran.returncode}):\n{text[-1500:]}{err.read_text()[-1500:]}"
            )
        return elapsed, int(rss_file.read_text()) / 1024, text


def _rss_of(rss_file: Path, cmd: list[str]) -> int:
    """Run ``cmd`` with this process's standard streams; write its peak RSS (KiB)."""
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss_file.write_text(str(usage.ru_maxrss))
    return proc.returncode


class _Slices:
    """A text stream over a string already in memory (``io.StringIO`` would copy it, at four
    bytes a character, and that copy is not the reader's)."""

    def __init__(self, text: str) -> None:
        self._text, self._at = text, 0

    def read(self, size: int, /) -> str:
        piece = self._text[self._at : self._at + size]
        self._at += len(piece)
        return piece


def memory_report(text: str) -> None:
    """Peak Python allocation of streaming the manifest vs loading it whole."""

    def peak(work: Any) -> float:
        tracemalloc.start()
        try:
            work()
            return tracemalloc.get_traced_memory()[1] / (1 << 20)
        finally:
            tracemalloc.stop()

    def stream() -> None:
        for _ in parse_entries(_Slices(text), source=PART):
            pass

    def select() -> None:
        select_part(PART, parse_entries(_Slices(text), source=PART), SELECTION)

    print(f"tracemalloc peaks for a manifest of {len(text) / (1 << 20):.1f} MiB of text:")
    print(f"  {'streaming every entry':>36}: {peak(stream):6.1f} MiB")
    print(f"  {'selecting ' + ' '.join(FLAGS):>36}: {peak(select):6.1f} MiB")
    print(f"  {'json.loads of the text':>36}: {peak(lambda: json.loads(text)):6.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=60_000)
    parser.add_argument("--paths-per-entry", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--original-python", type=Path, default=None)
    parser.add_argument("--no-original", action="store_true", help="time ego4d-dl only")
    parser.add_argument("--memory", action="store_true", help="also print tracemalloc peaks")
    parser.add_argument("--plan-once", nargs=2, metavar=("ENDPOINT", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--rss-of", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("command", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_of:
        raise SystemExit(_rss_of(args.rss_of, args.command))
    if args.plan_once:
        print(json.dumps(plan_once(args.plan_once[0], Path(args.plan_once[1]))))
        return
    original = args.original_python or (
        Path(sys.executable) if importlib.util.find_spec("ego4d") else None
    )
    if original is None and not args.no_original:
        raise SystemExit(
            "the original CLI is not installed here: --original-python or --no-original"
        )
    entries = args.paths // args.paths_per_entry
    text = "".join(egoexo_scale_manifest(entries, args.paths_per_entry, release=RELEASE))
    if args.memory:
        memory_report(text)
    with Sandbox() as sandbox, tempfile.TemporaryDirectory() as tmp:
        sandbox.create_bucket(MANIFEST_BUCKET)
        key = release_root(RELEASE).manifest_key(PART)
        sandbox.put_object(MANIFEST_BUCKET, key, text.encode())
        print(
            f"{entries * args.paths_per_entry} paths in {entries} entries, {len(text) / 1e6:.1f} MB"
        )
        home = Path(tmp) / "home"
        home.mkdir()
        keys = sandbox.env()
        (home / "credentials").write_text(
            f"[default]\naws_access_key_id = {keys['AWS_ACCESS_KEY_ID']}\n"
            f"aws_secret_access_key = {keys['AWS_SECRET_ACCESS_KEY']}\n"
        )
        (home / "config").write_text("[default]\nregion = us-east-1\n")
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(home),
            **keys,
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
            "AWS_CONFIG_FILE": str(home / "config"),
            "AWS_ENDPOINT_URL_S3": sandbox.endpoint_url,
        }
        times: dict[str, list[float]] = {"ego4d-dl (process)": [], "original to prompt": []}
        rss: dict[str, list[float]] = {name: [] for name in times}
        phases: list[dict[str, Any]] = []
        for run in range(args.runs):
            out = Path(tmp) / f"ours{run}"
            cmd = [sys.executable, __file__, "--plan-once", sandbox.endpoint_url, str(out)]
            elapsed, max_rss, stdout = _run(cmd, env, "")
            times["ego4d-dl (process)"].append(elapsed)
            rss["ego4d-dl (process)"].append(max_rss)
            phases.append(json.loads(stdout))
            if args.no_original:
                continue
            out = Path(tmp) / f"original{run}"
            cmd = [str(original), "-m", "ego4d.egoexo.download.cli", "-o", str(out),
                   "--release", RELEASE, "--parts", PART, *FLAGS]  # fmt: skip
            elapsed, max_rss, stdout = _run(cmd, env, "n\n")
            if "Do you want to start the download?" not in stdout:
                raise SystemExit(f"the original did not reach its prompt:\n{stdout[-2000:]}")
            times["original to prompt"].append(elapsed)
            rss["original to prompt"].append(max_rss)
        first = phases[0]
        print(f"selected {first['selected']} of {first['paths']} paths ({' '.join(FLAGS)})")
        for name in ("get_s", "parse_filter_s", "lstat_s"):
            values = [p[name] for p in phases]
            print(f"  ego4d-dl {name[:-2]:>13}: median {statistics.median(values):.2f}s")
        for name, values in times.items():
            if values:
                shown = ", ".join(f"{v:.2f}" for v in values)
                peak = max(rss[name])
                print(f"{name:>20}: median {statistics.median(values):.2f}s ({shown}), "
                      f"peak RSS {peak:.0f} MiB")  # fmt: skip
        if times["original to prompt"]:
            ratio = statistics.median(times["original to prompt"]) / statistics.median(
                times["ego4d-dl (process)"]
            )
            print(
                f"ego4d-dl reaches its selection {ratio:.1f}x sooner than the original its prompt"
            )


if __name__ == "__main__":
    main()
