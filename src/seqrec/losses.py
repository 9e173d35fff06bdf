"""Loss functions shared by the models. Each has a naive reference in tests/."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def rows_at(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """[K, d] rows of hidden [B, T, d] at flat positions index [K] (b * T + t): the rows of a batch's targets
    (`Batch.target_index`). An index gather, not a boolean mask, so the shape is known without a host sync."""
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)


def item_cross_entropy(h: torch.Tensor, y: torch.Tensor, logits_fn: Callable[[torch.Tensor], torch.Tensor],
                       chunk_rows: int = 0, padding_class: bool = False, norm: float | None = None) -> torch.Tensor:
    """Mean full-softmax cross entropy of the rows h [K, d] with targets y [K] (item ids >= 1) over items 1..n
    (ids 0..n with padding_class); 0 when K = 0. The sum is divided by `norm` (the batch's `target_norm`), or by K
    when it is None.

    `logits_fn(h [k, d]) -> [k, n_items + 1]` gives the item logits (column 0, padding, is left out of the softmax).
    padding_class: keep column 0 in the softmax as a class that is never a target (the RecBole models do this: their
    CE logits are h @ E[:n_items]^T, padding row included, so that row is trained by the CE to score low).
    chunk_rows > 0: the K rows are processed in chunks of that many, each recomputed in the backward pass
    (activation checkpointing), so at most one chunk's [rows, n_items] logits and gradient are alive at a time:
    peak memory is capped for long batches and large catalogues at the price of a second logits product."""
    k = h.shape[0]
    if k == 0:
        return h.sum() * 0.0
    denom = k if norm is None else norm
    if chunk_rows <= 0 or k <= chunk_rows:
        return _cross_entropy_sum(h, y, logits_fn, padding_class) / denom
    total = sum(checkpoint(_cross_entropy_sum, h[i:i + chunk_rows], y[i:i + chunk_rows], logits_fn, padding_class,
                           use_reentrant=False) for i in range(0, k, chunk_rows))
    return total / denom


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
                            temperature: float = 1.0, self_negative: str = "remove",
                            normalized: bool = False) -> torch.Tensor:
    """Contrastive loss with several positives per anchor (EMKD's ICL / CCL), cosine similarity.

    anchor [B, D], positives [P, B, D] (positives[:, i] belong to anchor i), negatives [B, D] (row j != i is a
    negative of anchor i). Per anchor: -logsumexp_p(sim(a_i, pos_p,i) / T) + logsumexp_j(sim(a_i, neg_j) / T).
    self_negative: 'remove' leaves j = i out of the negatives; 'zero' keeps it with its similarity set to 0
    (the official EMKD code, which adds exp(0) to the denominator). Mean over anchors.
    normalized: the inputs are unit vectors already (float32), so the cosine is the dot product (EMKD normalises
    each network's representations once for all the terms that use them)."""
    if normalized:
        a, pos, neg = anchor, positives, negatives
    else:
        a = F.normalize(anchor.float(), dim=-1)
        pos = F.normalize(positives.float(), dim=-1)
        neg = F.normalize(negatives.float(), dim=-1)
    pos_term = torch.logsumexp(torch.einsum("pbd,bd->pb", pos, a) / temperature, dim=0)    # [B]
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


# --- the item loss of the softmax models: full CE, sampled softmax with log-Q correction, gBCE ------------------------
# One implementation for SASRec (and CL4SRec / MCLRec through SASRec.ce_loss), GRU4Rec, MQSA-TED and BERT4Rec, selected
# by the model config's LossConfig keys (seqrec.models.base). Formulas: docs/losses.md.

ItemRows = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]
"""item_rows(ids [m]) -> (W [m, d], b [m] or None): the output-layer rows of these items, so that the logit of item i
for a hidden row h is h . W[i] (+ b[i]); the same numbers as column i of `logits_fn(h)`. ids may also be a slice
(EMKD: slice(1, n_items + 1)), which gives views of the layer instead of copies."""


class NegativeSampler:
    """Draws the negatives of a training batch on its device with the global torch RNG (so an exact resume, which
    restores that RNG, draws the same ones) and gives the log sampling probabilities log Q of the log-Q correction.

    kind: 'uniform' (N items drawn uniformly from 1..n_items, Q = 1 / n_items), 'popularity' (N items drawn with
    Q(i) = count_i / sum(count), by inverse-CDF sampling: searchsorted(cdf, rand), which needs no host sync unlike
    torch.multinomial on CUDA; counts from `prepare(split)` / `set_counts`) or 'in_batch' (the batch's K target
    items themselves, Q(i) = their frequency among the K targets).
    per: 'batch' (one set of N negatives per batch, shared by all its K target rows) or 'row' (each target row draws
    its own N: [K, N], gSASRec's way; not with in_batch, whose negatives are the batch's targets, shared by
    definition). The state (popularity tables) is plain tensors, outside the state_dict: scoring never needs it and
    a checkpoint does not carry it; the trainer calls `prepare` again on resume."""

    def __init__(self, kind: str, n_items: int, negatives: int, per: str = "batch"):
        if kind not in ("uniform", "popularity", "in_batch"):
            raise ValueError(f"negative sampler must be uniform, popularity or in_batch, got {kind!r}")
        if per not in ("batch", "row"):
            raise ValueError(f"negatives must be drawn per batch or per row, got {per!r}")
        if per == "row" and kind == "in_batch":
            raise ValueError("in_batch negatives are the batch's targets, shared by all rows: they cannot be per row")
        self.kind, self.n_items, self.negatives, self.per = kind, int(n_items), int(negatives), per
        self.cdf: torch.Tensor | None = None       # [n_items] float64: P(item <= i + 1) (popularity)
        self.log_q: torch.Tensor | None = None     # [n_items + 1] float32: log Q(i) (popularity)

    @classmethod
    def from_config(cls, cfg, n_items: int) -> "NegativeSampler | None":
        """The sampler a model config's LossConfig keys ask for; None for the full CE (or a config without them)."""
        if getattr(cfg, "loss", "ce") == "ce":
            return None
        if cfg.loss == "gbce" and cfg.negatives > n_items - 1:
            from seqrec.errors import ConfigError
            raise ConfigError(f"model.negatives: {cfg.negatives} exceeds n_items - 1 = {n_items - 1} (gbce's "
                              f"sampling rate alpha = negatives / (n_items - 1) must be <= 1)")
        return cls(cfg.negative_sampler, n_items, cfg.negatives, cfg.negatives_per)

    # --- popularity state ---------------------------------------------------------------------------------------
    def prepare(self, split, device: torch.device | str | None = None) -> None:
        """Popularity: count every training interaction of the split (validation / test targets never enter)."""
        if self.kind != "popularity":
            return
        import numpy as np
        flat, _ = split.train_sequences_csr()
        self.set_counts(np.bincount(np.asarray(flat, dtype=np.int64), minlength=self.n_items + 1), device)

    def set_counts(self, counts, device: torch.device | str | None = None) -> None:
        """counts [n_items + 1] (index = item id, 0 ignored): the popularity sampler's unnormalised Q."""
        c = torch.as_tensor(counts, dtype=torch.float64).clone()[: self.n_items + 1]
        if c.shape[0] != self.n_items + 1 or bool((c < 0).any()):
            raise ValueError(f"popularity counts: expected {self.n_items + 1} non-negative values")
        c[0] = 0.0
        total = float(c.sum())
        if total <= 0:
            raise ValueError("popularity counts: no training interactions to sample from")
        cdf = torch.cumsum(c[1:], 0) / total
        cdf[-1] = 1.0                               # u < 1 always finds an item
        self.cdf = cdf
        # an item never seen in training is never drawn; its log Q (used only if it were a target) is that of one
        # interaction, to keep the corrected logit finite
        self.log_q = torch.log(c.clamp(min=1.0) / total).float()
        if device is not None:
            self._to(torch.device(device))

    def _to(self, device: torch.device) -> None:
        if self.cdf is not None and self.cdf.device != device:
            self.cdf, self.log_q = self.cdf.to(device), self.log_q.to(device)

    # --- drawing ------------------------------------------------------------------------------------------------
    def sample(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(negatives, log Q of the negatives, log Q of the targets y [K]) for a batch's targets y [K]: negatives and
        their log Q are [N] (per='batch'; in_batch: N = K, the targets themselves) or [K, N] (per='row'),
        N = `negatives`. Sync-free."""
        dev = y.device
        shape = (self.negatives,) if self.per == "batch" else (y.shape[0], self.negatives)
        if self.kind == "uniform":
            neg = torch.randint(1, self.n_items + 1, shape, device=dev)
            lq = torch.full((), -math.log(self.n_items), device=dev)
            return neg, lq.expand(shape), lq.expand(y.shape[0])
        if self.kind == "popularity":
            if self.cdf is None:
                raise RuntimeError("popularity negatives need the training counts: call model.prepare(split) (the "
                                   "Trainer does) before training")
            self._to(dev)
            u = torch.rand(shape, dtype=torch.float64, device=dev)
            neg = torch.searchsorted(self.cdf, u, right=True).clamp_(max=self.n_items - 1) + 1
            return neg, self.log_q[neg], self.log_q[y]
        k = y.shape[0]           # in_batch: empirical frequency of each target among the batch's K targets
        counts = torch.zeros(self.n_items + 1, device=dev).index_add_(0, y, torch.ones(k, device=dev))
        lq = torch.log(counts[y] / k)
        return y, lq, lq


def gbce_shift(beta: float, negatives: int, kind: str) -> float:
    """The constant c added to every logit inside gbce (model.gbce_shift): 'equilibrium' -> log(beta / N), 'none' -> 0.

    With all logits at 0 (a model at initialisation), the gradient of loss_k along a shift d shared by all of row k's
    logits is (-beta sigma(-c - d) + N sigma(c + d)) / (N + 1), zero at d = 0 exactly when c = log(beta / N). Without
    the shift (c = 0) the first thing gbce learns is to push every logit down by about log(N / beta) (5.2 for 64
    negatives and beta 0.35); a tied item table can only do that with one direction shared by all item embeddings,
    which crowds out what tells the items apart (docs/losses.md: measured, the model collapses to popularity).
    Softmax losses are invariant to a shared shift, so they never need one. A shared constant changes no ranking."""
    if kind == "equilibrium":
        return math.log(beta / negatives)
    if kind == "none":
        return 0.0
    raise ValueError(f"gbce shift must be equilibrium or none, got {kind!r}")


def gbce_beta(negatives: int, n_items: int, t: float) -> float:
    """gSASRec's beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = negatives / (n_items - 1) the sampling rate
    (Petrov & Macdonald, RecSys 2023); = 1 + t (alpha - 1): 1 at t = 0 (BCE), alpha at t = 1."""
    alpha = negatives / (n_items - 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def item_loss(h: torch.Tensor, y: torch.Tensor, logits_fn: Callable[[torch.Tensor], torch.Tensor],
              item_rows: ItemRows, cfg, sampler: NegativeSampler | None, chunk_rows: int = 0,
              padding_class: bool = False, norm: float | None = None) -> torch.Tensor:
    """The training loss over items of hidden rows h [K, d] with targets y [K], as the model config's LossConfig
    keys say (cfg.loss, cfg.gbce_t; negatives from `sampler`, see NegativeSampler.from_config): mean over the rows.

    * ce: `item_cross_entropy(h, y, logits_fn, chunk_rows, padding_class)`, exactly (padding_class is CE-only);
    * sampled_softmax: `sampled_softmax_loss` with one draw of `sampler` for the batch (shared negatives [N], or
      [K, N] with the sampler's per='row');
    * gbce: `gbce_loss` with one draw of `sampler`, beta = gbce_beta(negatives, n_items, cfg.gbce_t) (each row
      has N negatives either way, so the same sampling rate) and the logit shift gbce_shift(beta, N, cfg.gbce_shift).
    chunk_rows > 0: the rows in recomputed chunks (the [rows, N] logits of one chunk alive at a time).
    norm: divide the sum over rows by this instead of K (`Batch.target_norm`)."""
    kind = getattr(cfg, "loss", "ce")
    if kind == "ce":
        return item_cross_entropy(h, y, logits_fn, chunk_rows, padding_class, norm)
    if sampler is None:
        raise RuntimeError(f"model.loss={kind} needs a NegativeSampler (NegativeSampler.from_config)")
    if h.shape[0] == 0:
        return h.sum() * 0.0
    neg, log_q_neg, log_q_pos = sampler.sample(y)
    if kind == "sampled_softmax":
        return sampled_softmax_loss(h, y, item_rows, neg, log_q_pos, log_q_neg, chunk_rows, norm)
    if kind == "gbce":
        beta = gbce_beta(sampler.negatives, sampler.n_items, cfg.gbce_t)
        shift = gbce_shift(beta, sampler.negatives, cfg.gbce_shift)
        return gbce_loss(h, y, item_rows, neg, beta, chunk_rows, norm, shift)
    raise ValueError(f"model.loss must be ce, sampled_softmax or gbce, got {kind!r}")


def sampled_softmax_loss(h: torch.Tensor, y: torch.Tensor, item_rows: ItemRows, negatives: torch.Tensor,
                         log_q_pos: torch.Tensor, log_q_neg: torch.Tensor, chunk_rows: int = 0,
                         norm: float | None = None) -> torch.Tensor:
    """Mean over rows k of -log softmax of the target among [target, negatives], every logit corrected by its log Q:
    with o_k = s(h_k, y_k) - log Q(y_k) and o_kj = s(h_k, n_kj) - log Q(n_kj) (-inf where n_kj == y_k: a negative
    equal to the row's target is left out), loss_k = logsumexp(o_k, o_k1..o_kN) - o_k.

    negatives: item ids [N] shared by all K rows (n_kj = n_j) or [K, N], row k's own; log_q_neg of the same shape,
    log_q_pos [K]: their log sampling probabilities. Logits in float32 (as `item_cross_entropy`); 0 when K = 0."""
    if log_q_neg.shape != negatives.shape:
        raise ValueError(f"log_q_neg {tuple(log_q_neg.shape)} must have the negatives' shape "
                         f"{tuple(negatives.shape)}")
    return _sampled_mean(_sampled_softmax_sum, h, y, item_rows, negatives, (log_q_pos,), (log_q_neg,), (),
                         chunk_rows, norm)


def gbce_loss(h: torch.Tensor, y: torch.Tensor, item_rows: ItemRows, negatives: torch.Tensor, beta: float,
              chunk_rows: int = 0, norm: float | None = None, shift: float = 0.0) -> torch.Tensor:
    """gBCE (gSASRec: Petrov & Macdonald, "gSASRec: Reducing Overconfidence in Sequential Recommendation Trained
    with Negative Sampling", RecSys 2023, the generalised binary cross entropy): per row k,
    loss_k = -1/(N + 1) [log sigma(s_k+)^beta + sum_j log(1 - sigma(s_kj))] = (beta softplus(-s_k+) +
    sum_j softplus(s_kj)) / (N + 1), mean over rows; s_k+ the target's logit, s_kj those of the N negatives, [N]
    shared by all rows or [K, N], row k's own. A negative equal to the row's target contributes no term (the
    1/(N + 1) stays). beta: see `gbce_beta`. shift: a constant c added to every logit (s_k+ + c, s_kj + c), see
    `gbce_shift`; 0 is the paper's form."""
    return _sampled_mean(_gbce_sum, h, y, item_rows, negatives, (), (), (float(beta), float(shift)), chunk_rows,
                         norm)


def _sampled_mean(fn, h, y, item_rows: ItemRows, negatives, row_args: tuple, neg_args: tuple, shared_args: tuple,
                  chunk_rows: int, norm: float | None = None) -> torch.Tensor:
    """fn(h, y, item_rows, W_neg, b_neg, negatives, *row_args, *neg_args, *shared_args) summed over all rows / K
    (or / norm). row_args are [K] tensors, cut with the rows (chunk_rows > 0: chunks recomputed in backward, as in
    `item_cross_entropy`); neg_args have the negatives' shape and are cut with the rows when the negatives are per
    row ([K, N]). Shared negatives [N]: their rows W_neg, b_neg are gathered once here for every chunk. Per-row
    negatives: W_neg = b_neg = None and fn gathers the rows of its chunk's negatives itself, inside the checkpoint,
    so that only one chunk's [rows, N, d] is alive (K can be batch * max_len)."""
    k = h.shape[0]
    if k == 0:
        return h.sum() * 0.0
    denom = k if norm is None else norm
    per_row = negatives.dim() == 2
    wn, bn = (None, None) if per_row else item_rows(negatives)
    if chunk_rows <= 0 or k <= chunk_rows:
        return fn(h, y, item_rows, wn, bn, negatives, *row_args, *neg_args, *shared_args) / denom

    def chunk(i: int) -> tuple:
        """fn's arguments for the rows i..i + chunk_rows - 1."""
        def cut(a):
            return a[i:i + chunk_rows]
        negs = tuple(map(cut, (negatives, *neg_args))) if per_row else (negatives, *neg_args)
        return (cut(h), cut(y), item_rows, wn, bn, negs[0], *map(cut, row_args), *negs[1:], *shared_args)
    total = sum(checkpoint(fn, *chunk(i), use_reentrant=False) for i in range(0, k, chunk_rows))
    return total / denom


def _sampled_logits(h, y, item_rows: ItemRows, wn, bn, negatives) -> tuple[torch.Tensor, torch.Tensor]:
    """(target logits [k], negative logits [k, N]) in float32; the products in the autocast dtype, like the CE.
    Shared negatives [N] (rows wn [N, d], bn): one [k, d] x [d, N] product. Per-row negatives [k, N] (wn None):
    their rows gathered here, [k, N, d], and a batched product."""
    wy, by = item_rows(y)
    pos = torch.bmm(h.unsqueeze(1), wy.unsqueeze(2)).reshape(-1)
    if wn is None:
        wn, bn = item_rows(negatives.reshape(-1))
        neg = torch.bmm(wn.reshape(*negatives.shape, -1), h.unsqueeze(2)).squeeze(2)
        bn = None if bn is None else bn.reshape(negatives.shape)
    else:
        neg = h @ wn.T
    if by is not None:
        pos, neg = pos + by, neg + bn
    return pos.float(), neg.float()


# Both sums broadcast over the negatives' shape: `negatives == y[:, None]` is [k, N] for shared [N] and per-row
# [k, N] negatives alike, and so is logit - log Q.
def _sampled_softmax_sum(h, y, item_rows, wn, bn, negatives, log_q_pos, log_q_neg) -> torch.Tensor:
    pos, neg = _sampled_logits(h, y, item_rows, wn, bn, negatives)
    pos = pos - log_q_pos.float()
    neg = (neg - log_q_neg.float()).masked_fill(negatives == y[:, None], float("-inf"))
    return (torch.logsumexp(torch.cat([pos[:, None], neg], 1), 1) - pos).sum()


def _gbce_sum(h, y, item_rows, wn, bn, negatives, beta, shift) -> torch.Tensor:
    pos, neg = _sampled_logits(h, y, item_rows, wn, bn, negatives)
    if shift:
        pos, neg = pos + shift, neg + shift
    neg_terms = F.softplus(neg).masked_fill(negatives == y[:, None], 0.0).sum(1)
    return ((beta * F.softplus(-pos) + neg_terms) / (negatives.shape[-1] + 1)).sum()


# --- EMKD: the members' item losses, fused and in row chunks -------------------------------------------------------

def ensemble_item_losses(hidden: list[torch.Tensor], weights: list[torch.Tensor], biases: list[torch.Tensor | None],
                         targets: torch.Tensor, row_weight: torch.Tensor, kd_temperature: float, kd_weight: float,
                         use_kd: bool = True, chunk_rows: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EMKD's item losses of N ensemble members on the same K prediction rows, computed together in row chunks.

    Inputs per member a: hidden rows h_a [K, d] and its output layer over items 1..n, W_a [n, d] and b_a [n] (or
    None), so that its logits are z_a = h_a W_a^T + b_a [K, n]. targets [K]: column of the target item (item id - 1);
    row_weight [K]: w_k, the weight of row k (EMKD: 1 / the number of prediction rows of row k's view, so that the
    sums below are per-view means summed over views). With p_a = softmax(z_a), p_a^T = softmax(z_a / T),
    S = sum_c p_c^T and D_a = N p_a^T - S (every row of D_a sums to 0, and sum_a D_a = 0):

    * ce = sum_a sum_k w_k [logsumexp(z_a) - z_a[y_k]]                              (masked-item cross entropy)
    * kd = sum_k w_k sum_{a<c} 1/2 [KL(sg(p_c^T) || p_a^T) + KL(sg(p_a^T) || p_c^T)]      (use_kd, N > 1; else 0)
         = sum_k w_k 1/2 sum_a D_a . log p_a^T = sum_k w_k 1/2 sum_{a>0} D_a . (z_a - z_0) / T
      (sum over ordered pairs, regrouped per member as in `seqrec.models.emkd.ensemble_symmetric_kl`; the
      log-partitions drop out as D_a's rows sum to 0, and z_0 can be subtracted as sum_a D_a = 0, so that the small
      differences between members, not the logits themselves, multiply the small D_a: accurate when the members
      agree). The KL's target side is detached (mutual distillation, as `symmetric_kl`): the gradient reaches a
      member only through its own log p_a^T.

    Returns (ce + kd_weight * kd, ce, kd): the first carries the gradient, the other two are detached (for logging).
    Its gradient with respect to the logits is, per row,
        dL/dz_a = w_k [p_a - onehot(y_k) + kd_weight / (2T) D_a],
    and then dL/dh_a = (dL/dz_a) W_a, dL/dW_a = (dL/dz_a)^T h_a, dL/db_a = the column sums of dL/dz_a.

    The K rows are processed in chunks of chunk_rows (0: all at once). Per chunk the N logit blocks [rows, n] are
    formed once, used by both terms, and turned into the gradients above at once (during the forward pass), which
    are accumulated into [K, d] / [n, d] tensors; backward only scales them by the incoming gradient. So no [K, n]
    tensor is kept, and no logit block is formed twice (recomputing the chunks in backward would cost a second
    product and second softmaxes). Working memory: 2N + 2 float32 blocks [chunk_rows, n], reused by every chunk."""
    kd_active = bool(use_kd and len(hidden) > 1)
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                 for t in (*hidden, *weights, *biases))
    return _EnsembleItemLosses.apply(targets, row_weight, float(kd_temperature), float(kd_weight), kd_active,
                                     int(chunk_rows), need_grad, len(hidden), *hidden, *weights, *biases)


class _EnsembleItemLosses(torch.autograd.Function):
    """`ensemble_item_losses` for autograd: forward computes the values and the gradients chunk by chunk, backward
    scales the gradients by the incoming one."""

    @staticmethod
    def forward(ctx, targets, row_weight, temperature, kd_weight, kd_active, chunk_rows, need_grad, n_members,
                *tensors):
        hidden, weights, biases = (list(tensors[i * n_members:(i + 1) * n_members]) for i in range(3))
        k, n = targets.shape[0], weights[0].shape[0]
        rows = k if chunk_rows <= 0 else min(chunk_rows, k)
        dev = row_weight.device
        # Under autocast the products run in its dtype (as F.linear would), everything else in float32. The
        # operands are cast once per call here, not per chunk: the [n, d] weights would otherwise be cast again by
        # every chunk's products (three times per member), and each gradient block twice.
        low = torch.get_autocast_dtype(dev.type) if torch.is_autocast_enabled(dev.type) else None
        operands = tuple([t if t is None or low is None else t.to(low) for t in group]
                         for group in (hidden, weights, biases))
        # The gradient products run in bfloat16 under a bfloat16 autocast, but in float32 under float16: this
        # function forms its gradients in forward, before a GradScaler's loss scale reaches them, so float16 would
        # flush the row-weighted rows and small probabilities that the scale protects on the usual path.
        grad_weights = operands[1] if low == torch.bfloat16 else [w.float() for w in weights]
        blocks = [torch.empty(rows, n, device=dev) for _ in range(2 * n_members + 2)]
        grads = None
        if need_grad:
            grads = ([torch.zeros(h.shape, device=dev) for h in hidden], [torch.zeros(w.shape, device=dev)
                     for w in weights], [None if b is None else torch.zeros(b.shape, device=dev) for b in biases])
        ce = torch.zeros((), device=dev)
        kd = torch.zeros((), device=dev)
        for lo in range(0, k, max(rows, 1)):
            hi = min(lo + rows, k)
            w = row_weight[lo:hi].float()
            chunk_operands = ([h[lo:hi] for h in operands[0]], operands[1], operands[2])
            ce_chunk, kd_chunk = _ensemble_chunk(chunk_operands, grad_weights, targets[lo:hi], w, 1.0 / temperature,
                                                 kd_weight, kd_active, [b[: hi - lo] for b in blocks], grads, lo)
            ce = ce + ce_chunk
            if kd_active:
                kd = kd + kd_chunk
        ctx.grads = grads
        ctx.dtypes = [None if t is None else t.dtype for t in tensors]
        ctx.mark_non_differentiable(ce, kd)
        return ce + kd_weight * kd, ce, kd

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_total, _grad_ce, _grad_kd):
        if ctx.grads is None:
            raise RuntimeError("ensemble_item_losses: backward a second time through the same graph is not "
                               "supported (its gradients were made in forward and are freed after one use)")
        dh, dw, db = ctx.grads
        ctx.grads = None                                # freed after use, as autograd frees saved tensors
        scaled = [None if g is None else (g * grad_total).to(dt) for g, dt in zip((*dh, *dw, *db), ctx.dtypes)]
        return (None,) * 8 + tuple(scaled)


def _ensemble_chunk(operands, grad_weights, y, w, inv_t, kd_weight, kd_active, blocks, grads, lo):
    """One chunk of r rows of `ensemble_item_losses`: (its weighted ce sum, its weighted kd sum or None), scalars.
    operands: (hidden rows of this chunk, weights, biases) per member, all float32, or all in autocast's dtype (then
    the logit products run in that dtype and everything else in float32). grad_weights: the [n, d] weights per
    member in the dtype of the two gradient products (float32, or bfloat16 as the operands). blocks: 2N + 2 float32
    [r, n] work blocks. With grads = (dh, dW, db) lists (float32), adds this chunk's gradients into them (dh at rows
    lo:lo + r). Every [r, n] operation is in place on the blocks (no allocation per chunk, except the
    low-precision copies of a product)."""
    hidden, weights, biases = operands
    n_members = len(hidden)
    centred, probs = blocks[:n_members], blocks[n_members:2 * n_members]
    total_p, p_t = blocks[2 * n_members:]
    w_col = w[:, None]
    coef = kd_weight * 0.5 * inv_t                       # dL/dz_a = w (p_a - onehot + coef D_a)
    ce = torch.zeros((), device=w.device)
    # The kd value as dot products of whole blocks: with d_a = w (z_a - z_0) / T (row weights folded in),
    # kd = 1/2 sum_{a>0} D_a . d_a = 1/2 (N sum_{a>0} p_a^T . d_a - S . sum_{a>0} d_a). The blocks hold -d_a.
    pd = torch.zeros((), device=w.device)               # sum_{a>0} p_a^T . (-d_a)
    for a in range(n_members):
        u, p = centred[a], probs[a]
        _logits_into(u, hidden[a], weights[a], biases[a])
        u.sub_(u.amax(1, keepdim=True))                  # u = z - max z: the two softmaxes share one max
        s = torch.exp(u, out=p).sum(1, keepdim=True)
        ce = ce + torch.dot(w, (s.log() - u.gather(1, y[:, None])).squeeze(1))       # logsumexp(z) - z_y
        p.div_(s)                                        # p_a
        if not kd_active:
            continue
        u.mul_(inv_t)                                    # u / T
        if inv_t == 1.0:
            pt = p
        else:                                            # p_a^T (member 0's straight into S)
            pt = torch.exp(u, out=total_p if a == 0 else p_t)
            pt.div_(pt.sum(1, keepdim=True))
        if a == 0:
            if pt is not total_p:
                total_p.copy_(pt)
            u.mul_(w_col)                                # w z_0 / T
        else:
            total_p.add_(pt)                             # S = sum_c p_c^T
            torch.addcmul(centred[0], u, w_col, value=-1.0, out=u)       # -d_a = w z_0 / T - w z_a / T
            pd = pd + torch.dot(pt.view(-1), u.view(-1))
            if a > 1:
                centred[1].add_(u)                       # sum_{a>0} -d_a, kept in -d_1's place
        if grads is not None:
            p.add_(pt, alpha=coef * n_members)
    kd = None
    if kd_active:
        kd = 0.5 * (torch.dot(total_p.view(-1), centred[1].view(-1)) - n_members * pd)
    if grads is None:
        return ce, kd
    dh, dw, db = grads
    minus_one = torch.full((y.shape[0], 1), -1.0, device=w.device)
    for a in range(n_members):
        g = probs[a]
        if kd_active:
            g.sub_(total_p, alpha=coef)                  # p_a + coef (N p_a^T - S)
        g.scatter_add_(1, y[:, None], minus_one)         # - onehot(y)
        if db[a] is not None:
            db[a].addmv_(g.T, w)                         # float32 (a cheap product)
        # the row weights w go on the [r, d] sides of the products, not on the [r, n] block
        weighted_h = hidden[a].float() * w_col
        if grad_weights[a].dtype == torch.float32:
            dh[a][lo:lo + y.shape[0]] = (g @ grad_weights[a]) * w_col
            dw[a].addmm_(g.T, weighted_h)
        else:                                            # bfloat16: g cast once for both products
            g_low = g.to(grad_weights[a].dtype)
            dh[a][lo:lo + y.shape[0]] = (g_low @ grad_weights[a]).float() * w_col
            dw[a].add_(g_low.T @ weighted_h.to(g_low.dtype))    # accumulated in float32 over the chunks
    return ce, kd


def _logits_into(out: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """out [r, n] (float32) = h @ weight^T + bias, the product in the operands' dtype (float32, or autocast's)."""
    if h.dtype != torch.float32:
        out.copy_(F.linear(h, weight, bias))
    elif bias is None:
        torch.mm(h, weight.T, out=out)
    else:
        torch.addmm(bias, h, weight.T, out=out)
