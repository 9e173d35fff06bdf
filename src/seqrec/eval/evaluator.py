"""Full-ranking evaluation over all items, batched: scores = model.score(histories) [B, n_items + 1], excluded
items set to -inf, the target's rank counted with one comparison per batch (no Python loop over users or items).

Exclusion modes (PROTOCOL.md):
* none:    nothing but the padding column.
* window:  the items of the model's input window (the last `model.history_len` items of the history).
* history: every item of the user's history before the target (the whole history, not only the window).
A target that is itself excluded (a repeat, e.g. in Yelp or Taobao) gets rank inf: it counts as a miss.

Item chunks (eval.item_chunk > 0, for large catalogues): the scores of a batch are computed item_chunk items at a
time (model.score_items over model.score_query, seqrec.models.base) and never held whole: memory is
O(batch x item_chunk) instead of O(batch x n_items). Each chunk gets the exclusions that fall in its range; the
rank (items scored strictly higher than the target) is a count carried across chunks. The batches are those of
item_chunk = 0 (same users, same padding: the same representations); within a batch the users are taken by the
chunk that holds their target and that chunk is scored first, so that the target's score is the very value the
other items are compared with. Ranks and ties are those of item_chunk = 0 (bitwise-equal products on CPU: tested).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from seqrec.data.batch import history_batch
from seqrec.data.dataset import Split
from seqrec.eval.metrics import metric_sums, ordered


def history_pairs(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, items): row b paired with every item of flat[starts[b]:starts[b]+lengths[b]], in history order."""
    rows = np.repeat(np.arange(len(starts)), lengths)
    cols = flat[np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())]
    return rows, cols


def exclude_items(scores: torch.Tensor, flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> None:
    """Set scores[b, item] = -inf for every item in flat[starts[b]:starts[b]+lengths[b]] (in place)."""
    rows, cols = history_pairs(flat, starts, lengths)
    scores[torch.from_numpy(rows).to(scores.device), torch.from_numpy(cols).to(scores.device)] = float("-inf")


def scorer(model):
    """(score_query, score_items) of a model; for one with only `score`, the query is the full score row and
    score_items slices it (correct, not memory-bounded)."""
    if hasattr(model, "score_query") and hasattr(model, "score_items"):
        return model.score_query, model.score_items
    return model.score, lambda q, lo, hi: q[:, lo:hi]


def exclusion_pairs(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, items) of the history exclusions, sorted by item (so that a chunk's part is a searchsorted slice)."""
    rows, cols = history_pairs(flat, starts, lengths)
    o = np.argsort(cols, kind="stable")
    return rows[o], cols[o]


def exclude_chunk(scores: torch.Tensor, lo: int, exclude: str, window: torch.Tensor | None = None,
                  pairs: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Set the excluded items of the chunk scores[:, j] = item lo + j to -inf (in place): exclude 'window' takes
    the batch's input items `window` [B, T]; 'history' the (rows, items) pairs of exclusion_pairs."""
    hi = lo + scores.shape[1]
    if exclude == "window":
        r, c = ((window >= lo) & (window < hi)).nonzero(as_tuple=True)
        scores[r, window[r, c] - lo] = float("-inf")
    elif exclude == "history":
        rows, cols = pairs
        a, b = np.searchsorted(cols, [lo, hi])
        if b > a:
            scores[torch.from_numpy(rows[a:b]).to(scores.device),
                   torch.from_numpy(cols[a:b] - lo).to(scores.device)] = float("-inf")
    elif exclude != "none":
        raise ValueError(f"unknown exclusion mode {exclude!r}; valid: none, window, history")


MIN_ROWS, MIN_COLS = 4, 8
"""Smallest products computed: CPU BLAS takes another path (another summation order, other float bits) for 1-2 rows
or 1 column; below these sizes score_items is called on padded rows / a widened item range and the result cut."""


def take_rows(q: Any, rows: torch.Tensor) -> Any:
    """The rows (users) `rows` of a score query: a tensor, or a list/tuple of them (None and ints kept)."""
    if isinstance(q, torch.Tensor):
        return q.index_select(0, rows.to(q.device))
    if isinstance(q, (list, tuple)):
        return type(q)(take_rows(x, rows) for x in q)
    return q


def items_range(items, q: Any, lo: int, hi: int, n1: int) -> torch.Tensor:
    """items(q, lo, hi), computed over at least MIN_COLS items (widened inside 0..n1) and cut back."""
    if hi - lo >= MIN_COLS or n1 <= MIN_COLS:
        return items(q, lo, hi)
    a = max(0, min(lo, n1 - MIN_COLS))
    return items(q, a, max(hi, a + MIN_COLS))[:, lo - a: hi - a]


def chunked_ranks(model, batch, targets: torch.Tensor, item_chunk: int, exclude: str = "none",
                  pairs: tuple[np.ndarray, np.ndarray] | None = None, n_items: int | None = None) -> torch.Tensor:
    """target_ranks of the batch, computed item_chunk items at a time. The query is computed once for the batch;
    its rows are then taken by the chunk that holds their target, that chunk scored first (the target's score
    comes from it) and the strictly-higher count carried over the other chunks."""
    query, items = scorer(model)
    n1 = (model.n_items if n_items is None else n_items) + 1
    q = query(batch)
    ranks = torch.empty(len(targets), dtype=torch.float64, device=targets.device)
    group = (targets // item_chunk).cpu().numpy()
    for c in np.unique(group):
        rows_np = np.flatnonzero(group == c)
        m = len(rows_np)
        padded = np.r_[rows_np, np.full(max(0, MIN_ROWS - m), rows_np[0])]     # copies of a row, dropped below
        rows = torch.from_numpy(padded).to(targets.device)
        qg = take_rows(q, rows)
        window = batch.items.index_select(0, rows) if exclude == "window" else None
        gpairs = None
        if exclude == "history":
            keep = np.isin(pairs[0], rows_np)
            remap = np.full(len(targets), -1)
            remap[rows_np] = np.arange(m)
            gpairs = (remap[pairs[0][keep]], pairs[1][keep])
        tg = targets.index_select(0, rows)
        first = int(c) * item_chunk
        t = None
        count = torch.zeros(len(padded), dtype=torch.int64, device=targets.device)
        for lo in [first] + [lo for lo in range(0, n1, item_chunk) if lo != first]:
            s = items_range(items, qg, lo, min(lo + item_chunk, n1), n1).float()
            exclude_chunk(s, lo, exclude, window, gpairs)
            if t is None:
                t = s.gather(1, (tg - lo)[:, None])
            count += torch.gt(s, t).sum(1, dtype=torch.int32)
        r = count.double()
        r = torch.where(torch.isneginf(t[:, 0]), torch.full_like(r, float("inf")), r)
        ranks[rows[:m]] = r[:m]
    return ranks


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target: items with a strictly higher score; inf when the target's score is -inf."""
    t = scores.gather(1, targets[:, None])
    ranks = torch.gt(scores, t).sum(1, dtype=torch.int32).double()
    return torch.where(torch.isneginf(t[:, 0]), torch.full_like(ranks, float("inf")), ranks)


@torch.no_grad()
def evaluate(model, split: Split, which: str = "valid", exclude: str = "none", ks=(5, 10, 20),
             batch_size: int = 1024, device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1,
             return_ranks: bool = False, item_chunk: int = 0) -> dict:
    """Metrics averaged over the evaluated users of `split` for `which` in {'valid', 'test'}.

    item_chunk > 0: score item_chunk items at a time (memory bounded by batch_size x item_chunk; same ranks).
    Under DDP each rank scores every world_size-th user and the sums are all-reduced."""
    if exclude not in ("none", "window", "history"):
        raise ValueError(f"unknown exclusion mode {exclude!r}; valid: none, window, history")
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    starts, lengths, targets = split.eval_inputs(which)
    users = split.users(which)
    if world_size > 1:
        starts, lengths, targets, users = (a[rank::world_size] for a in (starts, lengths, targets, users))
    flat = split.data.items
    # score users in order of history length so that each batch is padded only to its own longest history
    # (Beauty: mean length 9 of a 50 window); metrics are sums, so the order does not change them
    order = np.argsort(np.minimum(lengths, model.history_len), kind="stable")
    n_items = getattr(model, "n_items", split.n_items)     # the model may know more items than the data
    chunked = 0 < item_chunk < n_items + 1
    starts, lengths, targets, users = starts[order], lengths[order], targets[order], users[order]
    sums: dict[str, float] = {}
    all_ranks = []
    for i in range(0, len(starts), batch_size):
        sl = slice(i, i + batch_size)
        batch = history_batch(flat, starts[sl], lengths[sl], model.history_len, users[sl]).to(device)
        if chunked:
            pairs = exclusion_pairs(flat, starts[sl], lengths[sl]) if exclude == "history" else None
            ranks = chunked_ranks(model, batch, torch.from_numpy(targets[sl]).to(device), item_chunk, exclude,
                                  pairs, n_items)
        else:
            scores = model.score(batch).float()
            if exclude == "window":
                scores.scatter_(1, batch.items, float("-inf"))
            elif exclude == "history":
                exclude_items(scores, flat, starts[sl], lengths[sl])
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
        out["users_order"] = split.users(which) if world_size == 1 else split.users(which)[rank::world_size]
    return out
