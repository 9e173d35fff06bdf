"""Provenance fields every benchmark result file records (command, commit, machine, threads, date)."""
from __future__ import annotations

import os
import shlex
import sys
import time

import torch

from seqrec.utils import device_name, git_commit, versions


def provenance(threads: int | None = None) -> dict:
    return {"command": " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable)] + sys.argv),
            "git_commit": git_commit(), "device": device_name("cuda" if torch.cuda.is_available() else "cpu"),
            "threads": threads if threads is not None else torch.get_num_threads(),
            "load_average": list(os.getloadavg()), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": versions()}
