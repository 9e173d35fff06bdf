"""Full-ranking evaluation over all items, batched: scores = model.score(histories) [B, n_items + 1], excluded
items set to -inf, the target's rank counted with one comparison per batch (no Python loop over users or items).

Exclusion modes (PROTOCOL.md):
* none:    nothing but the padding column.
* window:  the items of the model's input window (the last `model.history_len` items of the history).
* history: every item of the user's history before the target (the whole history, not only the window).
A target that is itself excluded (a repeat, e.g. in Yelp or Taobao) gets rank inf: it counts as a miss.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from seqrec.data.batch import history_batch
from seqrec.data.dataset import Split
from seqrec.eval.metrics import metric_sums, ordered


def exclude_items(scores: torch.Tensor, flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
    """Set scores[b, item] = -inf for every item in flat[starts[b]:starts[b]+lengths[b]] (in place)."""
    rows = np.repeat(np.arange(len(starts)), lengths)
    cols = flat[np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())]
    scores[torch.from_numpy(rows).to(scores.device), torch.from_numpy(cols).to(scores.device)] = float("-inf")


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target: items with a strictly higher score; inf when the target's score is -inf."""
    t = scores.gather(1, targets[:, None])
    ranks = torch.gt(scores, t).sum(1, dtype=torch.int32).double()
    return torch.where(torch.isneginf(t[:, 0]), torch.full_like(ranks, float("inf")), ranks)


@torch.no_grad()
def evaluate(model, split: Split, which: str = "valid", exclude: str = "none", ks=(5, 10, 20),
             batch_size: int = 1024, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
             return_ranks: bool = False) -> dict:
    """Metrics averaged over the evaluated users of `split` for `which` in {'valid', 'test'}.

    Under DDP each rank scores every world_size-th user and the sums are all-reduced."""
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    starts, lengths, targets = split.eval_inputs(which)
    users = split.eval_users
    if world_size > 1:
        starts, lengths, targets, users = (a[rank::world_size] for a in (starts, lengths, targets, users))
    flat = split.data.items
    # score users in order of history length so that each batch is padded only to its own longest history
    # (Beauty: mean length 9 of a 50 window); metrics are sums, so the order does not change them
    order = np.argsort(np.minimum(lengths, model.history_len), kind="stable")
    starts, lengths, targets, users = starts[order], lengths[order], targets[order], users[order]
    sums: dict[str, float] = {}
    all_ranks = []
    for i in range(0, len(starts), batch_size):
        sl = slice(i, i + batch_size)
        batch = history_batch(flat, starts[sl], lengths[sl], model.history_len, users[sl]).to(device)
        scores = model.score(batch).float()
        if exclude == "window":
            scores.scatter_(1, batch.items, float("-inf"))
        elif exclude == "history":
            exclude_items(scores, flat, starts[sl], lengths[sl])
        elif exclude != "none":
            raise ValueError(f"unknown exclusion mode {exclude!r}; valid: none, window, history")
        ranks = target_ranks(scores, torch.from_numpy(targets[sl]).to(scores.device))
        for k, v in metric_sums(ranks.cpu(), list(ks)).items():
            sums[k] = sums.get(k, 0.0) + v
        if return_ranks:
            all_ranks.append(ranks.cpu())
    n = float(len(starts))
    if world_size > 1:
        import torch.distributed as dist
        keys = sorted(sums)
        buf = torch.tensor([sums.get(k, 0.0) for k in keys] + [n], dtype=torch.float64)
        dist.all_reduce(buf)
        sums = dict(zip(keys, buf[:-1].tolist()))
        n = float(buf[-1])
    metrics = ordered({k: v / max(n, 1.0) for k, v in sums.items()}, list(ks))
    model.train(was_training)
    out = {"metrics": metrics, "users": int(n), "seconds": time.perf_counter() - t0}
    if return_ranks:
        ranks = torch.cat(all_ranks) if all_ranks else torch.zeros(0, dtype=torch.float64)
        out["ranks"] = torch.empty_like(ranks).index_copy_(0, torch.from_numpy(order), ranks)  # user order
        out["users_order"] = split.eval_users if world_size == 1 else split.eval_users[rank::world_size]
    return out
