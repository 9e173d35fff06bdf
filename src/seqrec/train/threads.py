"""The default number of torch threads (train.threads unset), chosen by model size from measurements.

On the shared 2-core machines this project runs on, a second intra-op thread made every model up to 4.7M
parameters slower and only EMKD at its official size faster (benchmarks/threads_speed.py, wall seconds per training
step, 2 threads vs 1, the machine's other core busy: quickstart SASRec 135k parameters 0.26x, SASRec d 64 Beauty
0.9M 0.32x, BERT4Rec d 64 Beauty 1.7M 0.20x, SASRec d 256 Beauty 4.7M 0.41x, EMKD d 256 Beauty 23.9M 1.34x;
docs/benchmarks.md "Threads"). The small models' per-op work is too small to split and the second core is often
busy; EMKD's step (three encoders on eight views) has enough work per op. So models below SMALL_MODEL_PARAMETERS
run on one thread and larger ones keep torch's default (one per physical core).
"""
from __future__ import annotations

import torch

# below this many parameters a model runs with one thread by default: between the largest model measured faster on
# one thread (4.7M) and the smallest measured faster on two (23.9M)
SMALL_MODEL_PARAMETERS = 10_000_000
TORCH_DEFAULT_THREADS = torch.get_num_threads()      # read at import, before anything sets the number


def default_threads(model: torch.nn.Module) -> int:
    n = sum(p.numel() for p in model.parameters())
    return 1 if n < SMALL_MODEL_PARAMETERS else TORCH_DEFAULT_THREADS
