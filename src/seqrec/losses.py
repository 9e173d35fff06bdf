"""Loss functions shared by the models. Each has a naive reference in tests/."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def cross_entropy_at_targets(hidden: torch.Tensor, targets: torch.Tensor,
                             logits_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Full-softmax cross entropy over items 1..n at the positions that have a target (targets > 0).

    hidden [B, T, d], targets [B, T] (0 = no target). Item logits are computed only at those positions:
    `logits_fn(h [K, d]) -> [K, n_items + 1]` (column 0, padding, is left out of the softmax).
    Returns the mean over target positions (0 if there are none)."""
    sel = targets > 0
    if not bool(sel.any()):
        return hidden.sum() * 0.0
    logits = logits_fn(hidden[sel]).float()
    # padding is not a class: -inf in place on the fresh logits (cheaper than slicing off the column, which made
    # cross_entropy copy the whole [K, n_items] matrix)
    logits[:, 0] = float("-inf")
    return F.cross_entropy(logits, targets[sel])


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
