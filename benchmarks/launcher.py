"""A small process that starts the benchmarked tools, so their peak RSS is their own.

Linux carries a process's RSS high-water mark across ``exec``: a tool forked from the bench
(which holds hundreds of MiB while seeding) would report the bench's peak as its own. This
launcher is started before anything big is allocated and stays small. It reads one JSON request
per line on stdin (``argv``, ``env``, ``cwd``, ``log``, ``timeout_s`` and optionally ``cpus``, the
cores the command may run on: it and its children inherit them), runs the command, reaps it
with ``wait4`` and answers one JSON line: exit code, wall seconds, user and system CPU seconds
and ``ru_maxrss`` in KiB. Standard library only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

_ALL_CPUS = os.sched_getaffinity(0)


def _run(request: dict[str, Any]) -> dict[str, object]:
    argv = [str(a) for a in request["argv"]]
    env = {str(k): str(v) for k, v in request["env"].items()}
    timeout_s = float(request["timeout_s"])
    cpus = request.get("cpus")
    # Set on the launcher itself, between runs: the child inherits it from the fork on.
    os.sched_setaffinity(0, set(cpus) if cpus else _ALL_CPUS)
    with open(str(request["log"]), "wb") as log:  # noqa: PTH123 - stdlib-only, tiny
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=str(request["cwd"]),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        # A timer, not polling: the wall time must not depend on a polling interval.
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        killer = threading.Timer(timeout_s, kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall_s = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit_code": proc.returncode,
        "timed_out": timed_out.is_set(),
        "wall_s": wall_s,
        "user_s": usage.ru_utime,
        "system_s": usage.ru_stime,
        "max_rss_kib": usage.ru_maxrss,
    }


def main() -> None:
    """Serve requests until stdin closes."""
    for line in sys.stdin:
        if line.strip():
            sys.stdout.write(json.dumps(_run(json.loads(line))) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
