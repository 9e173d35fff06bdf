"""Top-k items per user over the catalogue in item chunks (memory O(B x (item_chunk + k)), not O(B x n_items)).

Each chunk's best k come from torch.topk (a partial selection: about 15x faster than sorting the chunk on a CPU)
and are merged with the running best k. Order: score descending, ties by the lower item id first (a defined
order, unlike torch.topk's, whose choice among equal scores is unspecified): the result is the first k of a
stable descending sort of the whole row. Excluded items and the padding item 0 score -inf; they appear only when
fewer than k items are left (callers drop them)."""
from __future__ import annotations

import numpy as np
import torch

from seqrec.eval.evaluator import exclude_chunk, exclusion_pairs, items_range, scorer


def sorted_desc(values: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k of (values, ids) by value descending; among equal values the earlier column first (a stable
    sort: callers keep ids ascending along a row so that ties go to the lower id)."""
    v, j = torch.sort(values, dim=1, descending=True, stable=True)
    return v[:, :k], ids.gather(1, j[:, :k])


def chunk_topk(scores: torch.Tensor, lo: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, item ids) of the k best of scores [B, w] (column j = item lo + j), in increasing item id along
    each row (not by value). Among items tied at the k-th best score the lower ids are taken, so the set is that
    of a stable descending sort.

    torch.topk(k + 1) gives the k-th and (k+1)-th best values; where they differ, topk's k items are the only
    possible set. Only rows where they are equal (a tie across the cut: rare with real scores, every row whose
    chunk has fewer than k + 1 non-excluded items) are redone exactly: all items above the k-th value, then the
    lowest ids among those equal to it."""
    b, w = scores.shape
    if k >= w:
        return scores, torch.arange(lo, lo + w, device=scores.device).expand(b, w)
    v, j = torch.topk(scores, k + 1, dim=1)
    j = j[:, :k]
    tied = (v[:, k - 1] == v[:, k]).nonzero(as_tuple=True)[0]
    if len(tied):
        s = scores.index_select(0, tied)
        kth = v[tied, k - 1, None]
        above, at = s > kth, s == kth
        take = above | (at & (at.cumsum(1) <= k - above.sum(1, keepdim=True)))    # exactly k per row
        j = j.clone()
        j[tied] = take.nonzero(as_tuple=True)[1].view(-1, k)                     # row-major: ids ascending
    j = torch.sort(j, dim=1).values
    return scores.gather(1, j), j + lo


@torch.no_grad()
def topk_chunked(model, batch, k: int, item_chunk: int = 0, exclude=None,
                 n_items: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [B, k'], item ids [B, k']) of the k' = min(k, n_items + 1) best items of each history in `batch`,
    best first, ties by lower id. The scores are computed item_chunk items at a time (0 = all at once) with
    model.score_query / score_items; each chunk's best k (chunk_topk) are merged with the running best k.

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
        v, i = chunk_topk(s, lo, k)                   # ids ascending along each row
        if best_v is not None:                        # running ids < this chunk's: concatenation keeps ties by id
            v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i], 1)
        best_v, best_i = sorted_desc(v, i, k)
    return best_v, best_i
