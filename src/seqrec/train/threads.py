"""The default number of torch threads (train.threads unset), chosen by model size from measurements.

On the shared 2-core machines this project runs on, a second intra-op thread made small models slower: the
quickstart (SASRec d 64 on the synthetic data) took 163-384 s at 2 threads and 53 s at 1 (docs/benchmarks.md,
"Threads"). Their per-op work is too small to split, and the second core is often busy. Large models (many
parameters, e.g. EMKD at d 256) have matmuls big enough to gain from more threads, so they keep torch's default.
"""
from __future__ import annotations

import torch

# below this many parameters a model runs with one thread by default (measured: docs/benchmarks.md "Threads")
SMALL_MODEL_PARAMETERS = 5_000_000
TORCH_DEFAULT_THREADS = torch.get_num_threads()      # read at import, before anything sets the number


def default_threads(model: torch.nn.Module) -> int:
    n = sum(p.numel() for p in model.parameters())
    return 1 if n < SMALL_MODEL_PARAMETERS else TORCH_DEFAULT_THREADS
