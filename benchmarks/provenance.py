"""Provenance fields every benchmark result file records (command, commit, machine, threads, date, versions).

The git commit is read when this module is imported (at the benchmark's start): a long run's working tree may
change before it ends, and the result must name the code that ran."""
from __future__ import annotations

import os
import shlex
import sys
import time

import torch

from seqrec.utils import device_name, git_commit, versions

GIT_COMMIT_AT_START = git_commit()
STARTED = time.strftime("%Y-%m-%dT%H:%M:%S%z")


def provenance(threads: int | None = None, device: str | torch.device | None = None) -> dict:
    """`load_average` is read now (at the end of the run): the machine is shared and timings depend on it."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"command": " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable)] + sys.argv),
            "git_commit": GIT_COMMIT_AT_START, "device": device_name(device),
            "threads": threads if threads is not None else torch.get_num_threads(),
            "load_average": list(os.getloadavg()), "started": STARTED,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions()}


def write_result(out: dict, smoke: bool = False, path=None):
    """Write a benchmark's result dict atomically to `path`, or to benchmarks/results/<out['name']>.json
    (benchmarks/scratch/ for a smoke test, which is not a result); prints and returns the path."""
    from pathlib import Path
    from seqrec.utils import atomic_write_json
    folder = Path(__file__).resolve().parent / ("scratch" if smoke else "results")
    path = Path(path) if path else folder / f"{out['name']}.json"
    atomic_write_json(path, out)
    print(f"wrote {path}")
    return path
