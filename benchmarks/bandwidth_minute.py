"""How closely ``--max-bandwidth`` holds over a minute (issue 7 asks for 10 %).

Seeds ``--files`` objects of ``--size-mib`` (multipart, 8 MiB parts, like the videos) into a
fresh sandbox, downloads them with ``ego4d-dl download --max-bandwidth <cap> --json`` in a child
process, and reports the rate between the first and the last ``Progress`` record (stamped as
each line arrives): planning, layout HEADs and the final renames are neither paced nor counted.

    python benchmarks/bandwidth_minute.py --cap 5MiB/s --files 5 --size-mib 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ego4d_dl.bandwidth import parse_bandwidth
from ego4d_dl.sandbox import CONSORTIUM_BUCKET, Sandbox, fake_bytes

MIB = 1 << 20
DATASET = "t_bandwidth"
BUCKET = "ego4d-cmu"


def seed(sandbox: Sandbox, files: int, size: int) -> None:
    """``files`` multipart objects of ``size`` bytes and their manifest."""
    for bucket in (CONSORTIUM_BUCKET, BUCKET):
        sandbox.create_bucket(bucket)
    parts = [8 * MIB] * (size // (8 * MIB)) + ([size % (8 * MIB)] if size % (8 * MIB) else [])
    rows = []
    for i in range(files):
        key = f"public/v2/{DATASET}/{i}.mp4"
        sandbox.put_object(BUCKET, key, fake_bytes(key, size), part_sizes_bytes=parts)
        rows.append(f"v{i},s3://{BUCKET}/{key}\n")
    manifest = "video_uid,canonical_s3_location\n" + "".join(rows)
    sandbox.put_object(CONSORTIUM_BUCKET, f"public/v2_1/{DATASET}/manifest.csv", manifest.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cap", default="5MiB/s")
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--progress-interval", type=float, default=1.0)
    args = parser.parse_args()
    cap = parse_bandwidth(args.cap)
    with Sandbox() as sandbox, tempfile.TemporaryDirectory() as tmp:
        seed(sandbox, args.files, args.size_mib * MIB)
        env = {**os.environ, **sandbox.env()}
        cmd = [
            sys.executable, "-m", "ego4d_dl", "download", "--yes", "--json", "--no-metadata",
            "-o", str(Path(tmp) / "out"), "--endpoint-url", sandbox.endpoint_url,
            "--datasets", DATASET, "--max-bandwidth", args.cap,
            "--progress-interval", str(args.progress_interval),
        ]  # fmt: skip
        # Progress records carry no clock: stamp each line as it arrives.
        progress: list[tuple[float, int]] = []
        with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                record = json.loads(line)
                if record["event"] == "Progress":
                    progress.append((time.monotonic(), int(record["bytes"])))
        if proc.returncode != 0:
            raise SystemExit(f"download failed ({proc.returncode})")
        if len(progress) < 2:
            raise SystemExit("fewer than two Progress records: raise --files or --size-mib")
        (t0, b0), (t1, b1) = progress[0], progress[-1]
        seconds = t1 - t0
        rate = (b1 - b0) / seconds
        print(
            f"cap {cap / MIB:.3f} MiB/s; held {rate / MIB:.3f} MiB/s over {seconds:.1f} s "
            f"({(rate - cap) / cap:+.2%})"
        )


if __name__ == "__main__":
    main()
