"""Does the live dashboard slow a download? Throughput with the dashboard on against --quiet,
both in a real terminal (a tmux pane), on 320 MiB from a local sandbox, runs alternated.

Each run downloads into a fresh folder; the rate is the one the summary prints (bytes fetched
over the engine's elapsed time, so start-up and planning do not count). The CPU seconds the
whole process used (bash's ``time``, user + system) are reported too: on a shared machine
they move far less with other people's load than the rate does. Run:
``.venv/bin/python benchmarks/dashboard_throughput.py [pairs]`` (default 7 pairs).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ego4d_dl.sandbox import CONSORTIUM_BUCKET, Sandbox, fake_bytes

MiB = 1 << 20
DATASET = "bench_dashboard"
SIZES = [32 * MiB] * 10
PART = 8 * MiB
_RATE = re.compile(r"fetched in [\d.]+s \(([\d.]+) (B|KiB|MiB|GiB)/s\)")
_EXIT = re.compile(r"^EXIT_CODE:(\d+)$", re.MULTILINE)
_CPU = re.compile(r"^CPU ([\d.]+) ([\d.]+)$", re.MULTILINE)
_UNITS = {"B": 1 / MiB, "KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}


def seed(sandbox: Sandbox) -> None:
    sandbox.create_bucket(CONSORTIUM_BUCKET)
    rows = ["file_uid,s3_path,type,benchmarks"]
    for i, size in enumerate(SIZES):
        key = f"public/v2/{DATASET}/blob-{i:02d}.bin"
        data = fake_bytes(key, size)
        sandbox.put_object(CONSORTIUM_BUCKET, key, data, part_sizes_bytes=[PART] * (size // PART))
        rows.append(f"{DATASET}-{i},s3://{CONSORTIUM_BUCKET}/{key},file,")
    manifest = ("\n".join(rows) + "\n").encode()
    sandbox.put_object(CONSORTIUM_BUCKET, f"public/v2_1/{DATASET}/manifest.csv", manifest)


class Pane:
    def __init__(self, env: dict[str, str]) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            raise SystemExit("tmux is needed: the dashboard only draws in a terminal")
        self._dir = Path(tempfile.mkdtemp(prefix="e4bench-"))
        self._base = [tmux, "-S", str(self._dir / "sock")]
        subprocess.run(
            [*self._base, "new-session", "-d", "-x", "120", "-y", "40", "bash --norc --noprofile"],
            env={**env, "TIMEFORMAT": "CPU %U %S"},
            check=True,
        )

    def run(self, command: str, timeout_s: float = 600) -> str:
        subprocess.run([*self._base, "send-keys", "clear", "Enter"], check=True)
        subprocess.run([*self._base, "clear-history"], check=True)
        subprocess.run(
            [*self._base, "send-keys", f"time {command}; echo EXIT_CODE:$?", "Enter"],
            check=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = subprocess.run(
                [*self._base, "capture-pane", "-p", "-J", "-S", "-200"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            found = _EXIT.search(text)
            if found:
                if found.group(1) != "0":
                    raise SystemExit(f"the download failed:\n{text}")
                return text
            time.sleep(0.25)
        raise SystemExit("the download did not finish in time")

    def close(self) -> None:
        subprocess.run([*self._base, "kill-server"], check=False)
        shutil.rmtree(self._dir, ignore_errors=True)


def main() -> None:
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    work = Path(tempfile.mkdtemp(prefix="e4bench-out-"))
    with Sandbox() as sandbox:
        seed(sandbox)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
        }
        env.update(sandbox.env())
        pane = Pane(env)
        rates: dict[str, list[float]] = {"dashboard": [], "quiet": []}
        cpu: dict[str, list[float]] = {"dashboard": [], "quiet": []}
        try:
            for i in range(pairs):
                order = ["dashboard", "quiet"] if i % 2 == 0 else ["quiet", "dashboard"]
                for mode in order:
                    out = work / f"{mode}-{i}"
                    # fmt: off
                    argv = [
                        sys.executable, "-m", "ego4d_dl", "download", "-o", str(out),
                        "--datasets", DATASET, "--no-metadata", "--endpoint-url",
                        sandbox.endpoint_url, "--yes",
                    ]
                    # fmt: on
                    if mode == "quiet":
                        argv.append("--quiet")
                    text = pane.run(shlex.join(argv))
                    found = _RATE.findall(text)
                    if not found:
                        raise SystemExit(f"no summary in:\n{text}")
                    value, unit = found[-1]
                    rates[mode].append(float(value) * _UNITS[unit])
                    used = _CPU.findall(text)
                    cpu[mode].append(float(used[-1][0]) + float(used[-1][1]))
                    shutil.rmtree(out, ignore_errors=True)
                    print(
                        f"pair {i + 1}: {mode:<9} {rates[mode][-1]:7.1f} MiB/s, "
                        f"{cpu[mode][-1]:5.2f} s CPU",
                        flush=True,
                    )
        finally:
            pane.close()
            shutil.rmtree(work, ignore_errors=True)
    dash, quiet = statistics.median(rates["dashboard"]), statistics.median(rates["quiet"])
    print(f"\n{sum(SIZES) // MiB} MiB, {pairs} alternated pairs, in a 120x40 tmux pane")
    for mode in ("dashboard", "quiet"):
        values = ", ".join(f"{v:.1f}" for v in rates[mode])
        print(f"{mode:<9} median {statistics.median(rates[mode]):7.1f} MiB/s  ({values})")
    for mode in ("dashboard", "quiet"):
        values = ", ".join(f"{v:.2f}" for v in cpu[mode])
        print(f"{mode:<9} median {statistics.median(cpu[mode]):7.2f} s CPU  ({values})")
    print(f"dashboard / quiet = {dash / quiet:.3f} (medians)")
    # Each pair ran back to back: its ratio is less exposed to the machine's load drifting.
    ratios = [d / q for d, q in zip(rates["dashboard"], rates["quiet"], strict=True)]
    print(f"median of the per-pair ratios = {statistics.median(ratios):.3f}")
    extra = statistics.median(cpu["dashboard"]) - statistics.median(cpu["quiet"])
    print(f"CPU the dashboard adds per run: {extra:+.2f} s (medians)")


if __name__ == "__main__":
    main()
