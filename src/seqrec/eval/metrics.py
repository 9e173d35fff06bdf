"""Ranking metrics from the 0-based rank of each user's single target.

rank = number of items with a strictly higher score than the target (ties resolved in the target's favour);
rank = inf when the target was excluded from the ranking (it can never be hit).
HR@K = [rank < K]; NDCG@K = [rank < K] / log2(rank + 2); MRR@K = [rank < K] / (rank + 1). Averaged over users.
"""
from __future__ import annotations

import re

import torch

from seqrec.errors import ConfigError

METRICS = ("HR", "NDCG", "MRR")


def parse_metric_name(name: str, where: str = "metric") -> tuple[str, int]:
    m = re.fullmatch(r"(HR|NDCG|MRR)@(\d+)", str(name))
    if not m or int(m.group(2)) < 1:
        raise ConfigError(f"{where}: invalid metric {name!r}; expected one of HR@K, NDCG@K, MRR@K (e.g. NDCG@10)")
    return m.group(1), int(m.group(2))


def metric_values(ranks: torch.Tensor, kind: str, k: int) -> torch.Tensor:
    """Each user's value of metric `kind`@k ("HR", "NDCG" or "MRR"), float64, from the 0-based ranks."""
    ranks = ranks.double()
    hit = ranks < k
    safe = torch.where(hit, ranks, torch.zeros_like(ranks))      # no log2 / division of an inf rank
    if kind == "HR":
        return hit.double()
    if kind == "NDCG":
        return hit / torch.log2(safe + 2)
    if kind == "MRR":
        return hit / (safe + 1)
    raise ValueError(f"unknown metric {kind!r}; expected one of {', '.join(METRICS)}")


def metric_sums(ranks: torch.Tensor, ks: list[int]) -> dict[str, float]:
    """Per-metric sums over users (to be divided by the user count after gathering across batches/ranks)."""
    return {f"{kind}@{k}": float(metric_values(ranks, kind, k).sum()) for k in ks for kind in METRICS}


def metrics_from_ranks(ranks: torch.Tensor, ks: list[int]) -> dict[str, float]:
    n = len(ranks)
    return {k: v / n for k, v in metric_sums(ranks, ks).items()}


def ordered(metrics: dict[str, float], ks: list[int]) -> dict[str, float]:
    """HR@k..., NDCG@k..., MRR@k... in a stable order."""
    return {f"{m}@{k}": metrics[f"{m}@{k}"] for m in METRICS for k in sorted(ks)}
