"""Run a bench's independent jobs as several processes at once, the CPU's threads split among them."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def run_in_parallel(module: str, argv: list[str], keys: list[str], parallel: int) -> None:
    """``python -m module *argv --only KEY`` for each of ``keys``, ``parallel`` processes at a time, each with
    ``cpu_count // parallel`` threads; a failed job is reported with its log and left for the next invocation."""
    env = os.environ | {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // parallel))}
    stem = module.rsplit(".", 1)[-1]

    def one(key: str) -> None:
        log = Path(tempfile.gettempdir()) / f"{stem}-{key.replace('/', '-')}.log"
        with open(log, "w") as f:
            rc = subprocess.call([sys.executable, "-m", module, *argv, "--only", key],
                                 stdout=f, stderr=subprocess.STDOUT, env=env)
        print(f"{key}: {'done' if rc == 0 else f'failed ({rc}), see {log}'}", flush=True)

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, keys))
