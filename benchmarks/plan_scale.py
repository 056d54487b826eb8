"""Time to a download decision for 10,000 objects: ego4d-dl plan vs the original CLI's prompt.

Seeds N small objects and their manifest into a fresh sandbox, then times (median of runs,
alternating) ``ego4d-dl plan`` and the original ``ego4d`` CLI until it has printed its
"Do you want to start the download?" prompt (answered "n", so it exits right after).

    python benchmarks/plan_scale.py --objects 10000 --original-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ego4d_dl.sandbox import CONSORTIUM_BUCKET, Sandbox

DATASET = "full_scale"
BUCKET = "ego4d-cmu"


def seed(sandbox: Sandbox, count: int) -> None:
    """``count`` 1 KiB objects in one folder, their manifest and an ego4d.json."""
    for bucket in (CONSORTIUM_BUCKET, BUCKET):
        sandbox.create_bucket(bucket)
    client = sandbox.admin_client()
    body = b"x" * 1024

    def put(i: int) -> None:
        client.put_object(Bucket=BUCKET, Key=f"public/v2/full_scale/{i:08d}.mp4", Body=body)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(count)))
    rows = "".join(
        f"{i:08d},s3://{BUCKET}/public/v2/full_scale/{i:08d}.mp4,mp4\n" for i in range(count)
    )
    manifest = "video_uid,canonical_s3_location,type\n" + rows
    client.put_object(
        Bucket=CONSORTIUM_BUCKET,
        Key=f"public/v2_1/{DATASET}/manifest.csv",
        Body=manifest.encode(),
    )
    client.put_object(Bucket=CONSORTIUM_BUCKET, Key="public/v2_1/ego4d.json", Body=b"{}")


def timed(cmd: list[str], env: dict[str, str], stdin: str = "") -> float:
    started = time.perf_counter()
    ran = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if ran.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed ({ran.returncode}):\n{ran.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--original-python", type=Path, required=True)
    args = parser.parse_args()
    with Sandbox() as sandbox, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        seed(sandbox, args.objects)
        print(f"seeded {args.objects} objects in {time.perf_counter() - t0:.1f}s")
        creds = Path(tmp) / "credentials"
        creds.write_text(
            "[default]\naws_access_key_id = {AWS_ACCESS_KEY_ID}\n"
            "aws_secret_access_key = {AWS_SECRET_ACCESS_KEY}\n".format(**sandbox.env())
        )
        env = {
            **os.environ,
            **sandbox.env(),
            "AWS_SHARED_CREDENTIALS_FILE": str(creds),
            "AWS_ENDPOINT_URL_S3": sandbox.endpoint_url,
        }
        ours = [
            sys.executable,
            "-m",
            "ego4d_dl",
            "plan",
            "--datasets",
            DATASET,
            "--endpoint-url",
            sandbox.endpoint_url,
        ]
        original = [
            str(args.original_python),
            "-m",
            "ego4d.cli.cli",
            "--datasets",
            DATASET,
            "--version",
            "v2_1",
        ]
        times: dict[str, list[float]] = {"ego4d-dl plan": [], "original to prompt": []}
        for run in range(args.runs):
            out_a = Path(tmp) / f"a{run}"
            out_b = Path(tmp) / f"b{run}"
            times["ego4d-dl plan"].append(timed([*ours, "-o", str(out_a)], env))
            times["original to prompt"].append(
                timed([*original, "--output_directory", str(out_b)], env, stdin="n\n")
            )
        a = statistics.median(times["ego4d-dl plan"])
        b = statistics.median(times["original to prompt"])
        for name, values in times.items():
            shown = ", ".join(f"{v:.2f}" for v in values)
            print(f"{name:>20}: median {statistics.median(values):.2f}s ({shown})")
        print(f"ego4d-dl reaches its decision {b / a:.1f}x faster for {args.objects} objects")


if __name__ == "__main__":
    main()
