"""Loss functions shared by the models. Each has a naive reference in tests/."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def rows_at(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """[K, d] rows of hidden [B, T, d] at flat positions index [K] (b * T + t): the rows of a batch's targets
    (`Batch.target_index`). An index gather, not a boolean mask, so the shape is known without a host sync."""
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)


def item_cross_entropy(h: torch.Tensor, y: torch.Tensor, logits_fn: Callable[[torch.Tensor], torch.Tensor],
                       chunk_rows: int = 0, padding_class: bool = False) -> torch.Tensor:
    """Mean full-softmax cross entropy of the rows h [K, d] with targets y [K] (item ids >= 1) over items 1..n
    (ids 0..n with padding_class); 0 when K = 0.

    `logits_fn(h [k, d]) -> [k, n_items + 1]` gives the item logits (column 0, padding, is left out of the softmax).
    padding_class: keep column 0 in the softmax as a class that is never a target (the RecBole models do this: their
    CE logits are h @ E[:n_items]^T, padding row included, so that row is trained by the CE to score low).
    chunk_rows > 0: the K rows are processed in chunks of that many, each recomputed in the backward pass
    (activation checkpointing), so at most one chunk's [rows, n_items] logits and gradient are alive at a time:
    peak memory is capped for long batches and large catalogues at the price of a second logits product."""
    k = h.shape[0]
    if k == 0:
        return h.sum() * 0.0
    if chunk_rows <= 0 or k <= chunk_rows:
        return _cross_entropy_sum(h, y, logits_fn, padding_class) / k
    total = sum(checkpoint(_cross_entropy_sum, h[i:i + chunk_rows], y[i:i + chunk_rows], logits_fn, padding_class,
                           use_reentrant=False) for i in range(0, k, chunk_rows))
    return total / k


def _cross_entropy_sum(h: torch.Tensor, y: torch.Tensor, logits_fn, padding_class: bool = False) -> torch.Tensor:
    logits = logits_fn(h).float()
    if not padding_class:
        # padding is not a class: -inf in place on the fresh logits (cheaper than slicing off the column, which made
        # cross_entropy copy the whole [K, n_items] matrix)
        logits[:, 0] = float("-inf")
    return F.cross_entropy(logits, y, reduction="sum")


def chunked_logsumexp(query: torch.Tensor, keys: torch.Tensor, chunk_rows: int = 0) -> torch.Tensor:
    """logsumexp_j (query @ keys^T)[k, j] for every row k: [K]. chunk_rows > 0 recomputes row chunks in the backward
    pass (activation checkpointing) so that at most one [chunk_rows, N] block is alive at a time."""
    if chunk_rows <= 0 or query.shape[0] <= chunk_rows:
        return torch.logsumexp(query @ keys.T, dim=1)
    return torch.cat([checkpoint(_logsumexp_rows, query[i:i + chunk_rows], keys, use_reentrant=False)
                      for i in range(0, query.shape[0], chunk_rows)])


def _logsumexp_rows(q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(q @ keys.T, dim=1)


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, temperature: float = 1.0,
             similarity: str = "dot") -> torch.Tensor:
    """NT-Xent over 2B views (SimCLR / CL4SRec): views a_i and p_i are a positive pair; the other 2B - 2 views
    are negatives. similarity: 'dot' or 'cosine'. Mean over the 2B anchors."""
    z = torch.cat([anchor, positive], dim=0)
    if similarity == "cosine":
        z = F.normalize(z, dim=-1)
    elif similarity != "dot":
        raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
    b = anchor.shape[0]
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """1/2 [KL(sg(p_b) || p_a) + KL(sg(p_a) || p_b)] with p = softmax(z / T), summed over classes, mean over rows.
    Mutual distillation: each side learns from a detached copy of the other (no T^2 factor)."""
    la = F.log_softmax(logits_a.float() / temperature, dim=-1)
    lb = F.log_softmax(logits_b.float() / temperature, dim=-1)
    kl_ab = F.kl_div(la, lb.detach(), log_target=True, reduction="batchmean")   # KL(p_b || p_a)
    kl_ba = F.kl_div(lb, la.detach(), log_target=True, reduction="batchmean")   # KL(p_a || p_b)
    return 0.5 * (kl_ab + kl_ba)


def multi_positive_info_nce(anchor: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                            temperature: float = 1.0, self_negative: str = "remove") -> torch.Tensor:
    """Contrastive loss with several positives per anchor (EMKD's ICL / CCL), cosine similarity.

    anchor [B, D], positives [P, B, D] (positives[:, i] belong to anchor i), negatives [B, D] (row j != i is a
    negative of anchor i). Per anchor: -logsumexp_p(sim(a_i, pos_p,i) / T) + logsumexp_j(sim(a_i, neg_j) / T).
    self_negative: 'remove' leaves j = i out of the negatives; 'zero' keeps it with its similarity set to 0
    (the official EMKD code, which adds exp(0) to the denominator). Mean over anchors."""
    a = F.normalize(anchor.float(), dim=-1)
    pos = F.normalize(positives.float(), dim=-1)
    neg = F.normalize(negatives.float(), dim=-1)
    pos_term = torch.logsumexp((pos * a[None]).sum(-1) / temperature, dim=0)             # [B]
    sim = a @ neg.T / temperature                                                       # [B, B]
    eye = torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
    if self_negative == "remove":
        sim = sim.masked_fill(eye, float("-inf"))
    elif self_negative == "zero":
        sim = sim.masked_fill(eye, 0.0)
    else:
        raise ValueError(f"self_negative must be 'remove' or 'zero', got {self_negative!r}")
    return (torch.logsumexp(sim, dim=1) - pos_term).mean()


def contrastive_margin_regularizer(anchor: torch.Tensor, positive: torch.Tensor,
                                   temperature: float = 1.0) -> torch.Tensor:
    """MCLRec's regulariser R(a, b) over the 2B views of an NT-Xent batch (same pairs and dot similarity / T as
    `info_nce` with similarity='dot'). Per anchor row with positive score s+ and negative scores s- (the other
    2B - 2 views): o_min = min(s+, max s-), o_max = max(s+, max s-);
    R = mean_rows relu(s+ - o_min) + mean_{rows, negatives} relu(o_max - s-)."""
    z = torch.cat([anchor, positive], dim=0)
    b = anchor.shape[0]
    n = 2 * b
    if b < 2:                                   # no negatives
        return z.sum() * 0.0
    sim = z @ z.T / temperature
    idx = torch.arange(n, device=z.device)
    pair = torch.cat([idx[b:], idx[:b]])
    pos = sim[idx, pair]                                                     # [2B]
    neg_mask = torch.ones(n, n, dtype=torch.bool, device=z.device)
    neg_mask[idx, idx] = False
    neg_mask[idx, pair] = False
    max_neg = sim.masked_fill(~neg_mask, float("-inf")).max(dim=1).values  # [2B]
    o_min = torch.minimum(pos, max_neg)
    o_max = torch.maximum(pos, max_neg)
    first = F.relu(pos - o_min).mean()
    second = (F.relu(o_max[:, None] - sim) * neg_mask).sum() / (n * (n - 2))
    return first + second
