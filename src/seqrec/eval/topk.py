"""Top-k items per user over the catalogue in item chunks (memory O(B x (item_chunk + k)), not O(B x n_items)).

Order: score descending, ties by the lower item id first (a defined order, unlike torch.topk's). Excluded items
and the padding item 0 score -inf; they appear only when fewer than k items are left (callers drop them)."""
from __future__ import annotations

import numpy as np
import torch

from seqrec.eval.evaluator import exclude_chunk, exclusion_pairs, items_range, scorer


def sorted_desc(values: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k of (values, ids) by value descending; among equal values the earlier column first (a stable
    sort: callers keep ids ascending along a row so that ties go to the lower id)."""
    v, j = torch.sort(values, dim=1, descending=True, stable=True)
    return v[:, :k], ids.gather(1, j[:, :k])


@torch.no_grad()
def topk_chunked(model, batch, k: int, item_chunk: int = 0, exclude=None,
                 n_items: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [B, k'], item ids [B, k']) of the k' = min(k, n_items + 1) best items of each history in `batch`,
    best first, ties by lower id. The scores are computed item_chunk items at a time (0 = all at once) with
    model.score_query / score_items and the running top-k merged with each chunk's.

    exclude: None; 'window' (the batch's input items); or (flat, starts, lengths), the histories to exclude as in
    evaluator.exclude_items (e.g. the whole history, not only the model's window)."""
    query, items = scorer(model)
    n1 = (model.n_items if n_items is None else n_items) + 1
    k = min(k, n1)
    step = n1 if item_chunk <= 0 else item_chunk
    pairs = None
    if exclude is None:
        mode = "none"
    elif isinstance(exclude, str):
        mode = exclude
    else:
        mode, pairs = "history", exclusion_pairs(*(np.asarray(a) for a in exclude))
    q = query(batch)
    best_v = best_i = None
    for lo in range(0, n1, step):
        s = items_range(items, q, lo, min(lo + step, n1), n1).float()
        exclude_chunk(s, lo, mode, batch.items, pairs)
        ids = torch.arange(lo, lo + s.shape[1], device=s.device).expand_as(s)
        v, i = sorted_desc(s, ids, k)                 # the chunk's best k, ties by lower id
        if best_v is not None:                        # running ids < this chunk's: concatenation keeps id order
            v, i = sorted_desc(torch.cat([best_v, v], 1), torch.cat([best_i, i], 1), k)
        best_v, best_i = v, i
    return best_v, best_i
