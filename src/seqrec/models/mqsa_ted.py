"""MQSA-TED (Zhu et al., WSDM 2024): multi-query self-attention with transition-aware embedding distillation.

Two towers over the same embedded sequence x0 = Dropout(E[seq] * sqrt(d) + P) * mask (no LayerNorm):
* short-query tower: MQSABlocks with query = x (the official SASRec block);
* long-query tower:  MQSABlocks with query = causal mean of the last L inputs (window_mean), own weights;
each ends with its own LayerNorm. h = alpha * h_short + (1 - alpha) * h_long, logits = h . E^T (tied, unscaled),
computed only at target positions.

TED: the training transition matrix C (sparse, built in `prepare(split)`) is distilled into E: for every real input
occurrence i, teacher p_T = softmax((C[i] / max_j C[i, j]) / tau) over all N items (unobserved items logit 0),
student p_S = softmax(Dropout(E[i] * sqrt(d)) . E^T / tau), L_kd = mean over occurrences of CE(p_T, p_S).
The teacher is never densified: every unobserved item of a row has the same probability base[i], so
p_T(i) = base[i] + coef[i] with coef sparse (`TransitionTeacher`, computed once, kept on the model's device), and
CE(p_T, p_S) = logsumexp_j s_j - q . (base[i] sum_j E_j + (coef @ E)[i]) with q = student query / tau; the only
[occurrences, N] work is the student's logsumexp. An item with no outgoing transitions gets the uniform teacher
(r = 0 everywhere), as in the official code (0 / (0 + 1e-24) = 0).

Loss = CE_rec + lambda_kd * L_kd; weight decay 1e-4 comes from train.weight_decay (Adam, all parameters).
See docs/methods/mqsa_ted.md for the settings and every deviation from the official code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from seqrec.config import check_choice, check_range
from seqrec.losses import chunked_logsumexp, rows_at
from seqrec.models import register
from seqrec.models.base import DatasetInfo, ModelConfig, SeqRecModel, encoder_fields, last_position, loss_fields
from seqrec.nn import Dropout, SequenceEmbedding
from seqrec.nn.windowed import MQSABlock, window_mean


@dataclass
@loss_fields()
@encoder_fields(d=64, layers=1, heads=1, dropout=0.5, attn_dropout=0.5, init_std=0.01)
class MQSATEDConfig(ModelConfig):
    """Encoder fields here: `d` is also the FFN width (no `inner`); `layers` counts MQSA blocks per tower;
    `dropout` applies to the embedded input, the FFN (inside and on its output) and the TED student embedding;
    `attn_dropout` as in the official code equals `dropout`; `init_std` is the std of the normal init of the item
    and position tables only (Linear layers: Glorot uniform, zero bias)."""
    name: str = "mqsa_ted"
    max_len: int = 50
    """Longest input (and evaluation history); positions count from the most recent item (left-padded slots)."""
    window: int = 3
    """L: the long-query tower's query is the mean of the last L real inputs (L = 1 is SASRec's query)."""
    alpha: float = 0.5
    """Weight of the short-query tower: h = alpha h_short + (1 - alpha) h_long. 1 = SASRec (+TED), 0 = long only.
    A tower with weight 0 is not built."""
    lambda_kd: float = 0.1
    """Weight of the TED loss; 0 = MQSA alone (no transition matrix, no TED computation)."""
    tau: float = 0.1
    """Temperature of both the TED teacher and student softmaxes."""
    ted_form: str = "exact"
    """How the TED cross entropy takes the student's log-probabilities: 'exact' = log_softmax (logsumexp form, the
    [K, N] product's log-partition only); 'official' = log(softmax + 1e-24) as the official code, which caps each
    item's term at -log(1e-24) = 55.3 (and its gradient at 0) once the student's probability of it falls below
    ~1e-24; the two are equal above that (docs/methods/mqsa_ted.md, "TED's log form")."""
    transitions_last: int = -1
    """Which training items the transition matrix counts, per user: -1 = the span the model trains on (its last
    span_len items: the official cut training list), 0 = all training items, n > 0 = the last n."""
    official_cut: bool = True
    """True: training spans are each user's last max_len training items (max_len - 1 inputs, as the official code:
    its training list is cut to 50 and the input is cut[:-1]); False: the last max_len + 1 (max_len inputs)."""
    ln_eps: float = 1e-8
    """LayerNorm epsilon (the official code uses 1e-24 on the variance, i.e. practically none)."""

    def validate(self) -> None:
        super().validate()
        check_range("model.window", self.window, lo=1)
        check_range("model.alpha", self.alpha, lo=0, hi=1)
        check_range("model.lambda_kd", self.lambda_kd, lo=0)
        check_range("model.tau", self.tau, lo=0, lo_open=True)
        check_choice("model.ted_form", self.ted_form, ("exact", "official"))
        check_range("model.transitions_last", self.transitions_last, lo=-1)
        check_range("model.ln_eps", self.ln_eps, lo=0, lo_open=True)
        # model.heads dividing model.d: checked by ModelConfig.validate


class Tower(nn.Module):
    """A stack of MQSABlocks and a final LayerNorm; window > 1 feeds each block the window mean as its query.

    forward(x, mask, keep): mask as MQSABlock's, [B, 1, T, T] or None for causal attention (is_causal)."""

    def __init__(self, cfg: MQSATEDConfig, window: int):
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList(MQSABlock(cfg.d, cfg.heads, cfg.dropout, cfg.attn_dropout, cfg.d, cfg.ln_eps)
                                    for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d, eps=cfg.ln_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            q = None if self.window == 1 else window_mean(x, keep, self.window)
            x = block(x, mask, keep, q)
        return self.norm(x)


class TransitionTeacher:
    """The TED teachers p_T(i) of all items, computed once from the transition counts (they never change).

    p_T(i) = softmax(C[i, 1:] / max_j C[i, j] / tau) over items 1..N, uniform for a row without transitions.
    Every unobserved item of row i has the same probability base[i], so p_T(i) = base[i] * 1 + coef[i] with coef
    sparse (p_T - base at the row's observed items). Both live on the model's device as torch tensors, so the loss
    needs no host round trip: the teacher-expected item embedding of a batch is
    sum_j p_T(i)_j e_j = base[i] * sum_j e_j + (coef @ E)[i], one sparse-dense product over the matrix's nonzeros."""

    def __init__(self, counts: sp.csr_matrix, tau: float):
        counts = sp.csr_matrix(counts, dtype=np.float64)
        n = counts.shape[1] - 1                                    # items 1..N (column 0 = padding, empty)
        indptr, indices, data = counts.indptr.astype(np.int64), counts.indices.astype(np.int64), counts.data
        nnz = np.diff(indptr)
        nonempty = nnz > 0
        rowmax = np.zeros(counts.shape[0])
        if nonempty.any():
            rowmax[nonempty] = np.maximum.reduceat(data, indptr[:-1][nonempty])
        row_of = np.repeat(np.arange(counts.shape[0]), nnz)
        m = np.where(nonempty, 1.0 / tau, 0.0)                     # the largest teacher logit of each row
        w = np.exp(data / rowmax[row_of] / tau - m[row_of])       # e^{r_j / tau - m} at the observed items
        e0 = np.exp(-m)                                            # e^{0 - m} at the unobserved ones
        z = (n - nnz) * e0 + np.bincount(row_of, weights=w, minlength=counts.shape[0])
        self.base = torch.from_numpy(e0 / z).float()              # [N + 1]
        coef = (w - e0[row_of]) / z[row_of]                        # p_T - base at the observed items
        idx = torch.from_numpy(np.stack([row_of, indices - 1]))    # columns: item id - 1 (item_emb rows)
        self.coef = torch.sparse_coo_tensor(idx, torch.from_numpy(coef).float(), (counts.shape[0], n),
                                            check_invariants=True).coalesce()

    def to(self, device) -> "TransitionTeacher":
        self.base, self.coef = self.base.to(device), self.coef.to(device)
        return self

    def expected_embedding(self, items: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        """[K, d]: sum_j p_T(items[k])_j item_emb[j] (differentiable in item_emb)."""
        if self.base.device != item_emb.device:
            self.to(item_emb.device)
        spread = torch.sparse.mm(self.coef, item_emb)              # [N + 1, d]
        return self.base[items, None] * item_emb.sum(0) + spread[items]

    def probabilities(self, items: torch.Tensor) -> torch.Tensor:
        """[K, N] dense p_T(items[k]) (for the official log form, which needs every item's probability)."""
        if self.base.device != items.device:
            self.to(items.device)
        return self.base[items, None] + self.coef.index_select(0, items).to_dense()


def ted_loss(items: torch.Tensor, query: torch.Tensor, item_emb: torch.Tensor, teacher: TransitionTeacher,
             tau: float, chunk_rows: int = 0, norm: float | None = None, form: str = "exact") -> torch.Tensor:
    """Mean over occurrences k of CE(p_T(items[k]), p_S(k)), p_S(k) = softmax(query[k] . item_emb^T / tau)
    (the sum divided by norm when given: the batch's `token_norm`).

    items [K] item ids 1..N (duplicates kept); query [K, d] the students' (dropped-out, scaled) embeddings;
    item_emb [N, d] the embeddings of items 1..N; teacher: the TransitionTeacher of the counts and tau.
    With s_kj = query_k . e_j / tau: CE = logsumexp_j s_kj - sum_j p_T,j s_kj = logsumexp_j s_kj -
    query_k . (sum_j p_T,j e_j) / tau, so the only [K, N] computation is the student's log-partition (in row
    chunks recomputed in backward when chunk_rows > 0: losses.chunked_logsumexp).

    form='official': -sum_j p_T,j log(p_S,j + 1e-24), the official code's form (MQSATEDConfig.ted_form), with
    the dense teacher rows (in the same recomputed row chunks)."""
    if query.shape[0] == 0:
        return query.sum() * 0.0
    q = query.float() / tau
    e = item_emb.float()
    if form == "official":
        step = chunk_rows if chunk_rows > 0 else q.shape[0]
        per_item = torch.cat([
            checkpoint(_official_ted_rows, items[i:i + step], q[i:i + step], e, teacher, use_reentrant=False)
            if chunk_rows > 0 else _official_ted_rows(items[i:i + step], q[i:i + step], e, teacher)
            for i in range(0, q.shape[0], step)])
        return per_item.mean() if norm is None else per_item.sum() / norm
    lse = chunked_logsumexp(q, e, chunk_rows)                  # the one [K, N] product
    expected = (q * teacher.expected_embedding(items, e)).sum(-1)
    per_item = lse - expected
    return per_item.mean() if norm is None else per_item.sum() / norm


OFFICIAL_TED_EPS = 1e-24
"""The official code's guard inside log(softmax + eps)."""


def _official_ted_rows(items: torch.Tensor, q: torch.Tensor, e: torch.Tensor, teacher: TransitionTeacher):
    """[k] -sum_j p_T(items)_j log(softmax(q e^T)_j + 1e-24); log(p + eps) computed as logaddexp(log p, log eps)
    (the same value, without forming p)."""
    log_p = torch.log_softmax(q @ e.T, dim=1)
    guarded = torch.logaddexp(log_p, torch.tensor(math.log(OFFICIAL_TED_EPS), device=q.device))
    return -(teacher.probabilities(items) * guarded).sum(1)


@register
class MQSATED(SeqRecModel):
    name = "mqsa_ted"
    Config = MQSATEDConfig
    objective = "causal"

    def __init__(self, cfg: MQSATEDConfig, info: DatasetInfo):
        super().__init__(cfg, info)
        self.embed = SequenceEmbedding(info.n_items + 1, cfg.max_len, cfg.d, cfg.dropout, layer_norm=False,
                                       scale_by_sqrt_d=True, positions_from_end=True)
        self.alpha = float(cfg.alpha)
        self.short = Tower(cfg, 1) if cfg.alpha > 0 else None
        self.long = Tower(cfg, cfg.window) if cfg.alpha < 1 else None
        self.kd_dropout = Dropout(cfg.dropout)
        # the TED teachers, computed from the transition counts by prepare(); not part of the state_dict
        self.teacher: TransitionTeacher | None = None
        self._init_weights(cfg.init_std)

    def _init_weights(self, std: float) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.embed.item.weight, 0.0, std)
        nn.init.normal_(self.embed.position.weight, 0.0, std)
        with torch.no_grad():
            self.embed.item.weight[0].zero_()

    # --- data ---------------------------------------------------------------------------------------------
    @property
    def span_len(self) -> int:
        return self.cfg.max_len if self.cfg.official_cut else self.cfg.max_len + 1

    def prepare(self, split) -> None:
        """Build the sparse transition matrix from the split's training items (only when TED is on), and the
        popularity sampler's counts where model.negative_sampler asks for them."""
        super().prepare(split)
        if self.cfg.lambda_kd <= 0:
            return
        from seqrec.data.transitions import split_transition_matrix
        last = {-1: self.span_len, 0: None}.get(self.cfg.transitions_last, self.cfg.transitions_last)
        self.set_transitions(split_transition_matrix(split, last))

    def set_transitions(self, counts: sp.csr_matrix) -> None:
        """Use these transition counts ([N + 1, N + 1], rows/columns = item ids) for TED."""
        self.teacher = TransitionTeacher(counts, self.cfg.tau)

    # --- model --------------------------------------------------------------------------------------------
    def encode(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, T, d] combined representation alpha h_short + (1 - alpha) h_long at every position."""
        keep = items != 0
        x = self.embed(items, lengths)
        # mask None = is_causal: rows are right-padded, so real positions see the same keys as with the
        # padding & causal mask, and no [B, 1, T, T] mask is built
        h = None
        if self.short is not None:
            h = self.alpha * self.short(x, None, keep)
        if self.long is not None:
            hl = (1.0 - self.alpha) * self.long(x, None, keep)
            h = hl if h is None else h + hl
        return h

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.embed.item.weight.T

    def item_rows(self, ids: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.embed.item.weight[ids], None

    def ted(self, items: torch.Tensor, norm: float | None = None) -> torch.Tensor:
        """The TED term over the batch's input items; norm: the batch's `token_norm` (None: their count)."""
        occ = items[items != 0]
        e = self.embed.item.weight
        query = self.kd_dropout(e[occ] * math.sqrt(self.cfg.d))
        return ted_loss(occ, query, e[1:], self.teacher, self.cfg.tau, self.cfg.logits_chunk_rows, norm,
                        self.cfg.ted_form)

    def loss(self, batch) -> dict[str, torch.Tensor]:
        h = self.encode(batch.items, batch.lengths)
        ce = self.item_loss(rows_at(h, batch.target_index), batch.target_items, norm=batch.target_norm)
        out = {"ce": ce.detach()}
        total = ce
        if self.cfg.lambda_kd > 0:
            if self.teacher is None:
                raise RuntimeError("mqsa_ted: lambda_kd > 0 needs the transition matrix; call model.prepare(split)"
                                   " (the Trainer does) before training")
            kd = self.ted(batch.items, batch.token_norm)
            total = total + self.cfg.lambda_kd * kd
            out["ted"] = kd.detach()
        out["loss"] = total
        return out

    def represent(self, batch) -> torch.Tensor:
        return last_position(self.encode(batch.items, batch.lengths), batch.lengths)

    def score_query(self, batch) -> torch.Tensor:
        return self.represent(batch)

    def score_items(self, query: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return self.item_range_logits(query, self.embed.item.weight, lo, hi)
