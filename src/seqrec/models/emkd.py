"""EMKD (Du et al., SIGIR 2023): an ensemble of N parallel encoders trained on M masked views of every window,
with knowledge moving between them by contrastive learning (ICL within a network, CCL across networks) and by
logit distillation (pairwise symmetric KL), plus an auxiliary attribute-prediction task.

The ensemble is a wrapper: its members are ordinary models of the library (`model.backbone`, built through the
registry), each used through `encode(items, lengths) -> [B, T, d]` and `item_logits(h) -> [K, n_items + 1]`.

* cloze members (BERT4Rec, the paper's backbone): the M views are cloze-masked copies of the window
  (seqrec.data.masking.cloze_mask); CE and KD at the masked positions; the attribute head reads the unmasked
  window's output at the masked positions of the last view and predicts the original item's attributes.
* causal members (SASRec, GRU4Rec): the window is cut into input = span[:-1] and next-item targets. A view
  corrupts the *input* with the same rule, except that a causal member has no [MASK] token, so a chosen item is
  replaced by a random item (90%) or kept (10%). CE and KD use every position with a next-item target; the
  attribute head reads the unmasked input's output at the corrupted positions of the last view and predicts the
  attributes of the next item there.

Per network the M views and the unmasked input are stacked along the batch dimension and encoded in one pass;
item logits are computed only where there is a target (`logits_at: masked`), or at every position as the official
code does (`logits_at: all`, same loss values, for the speed comparison). At the targets, all members' CE and KD
are computed together in row chunks (`seqrec.losses.ensemble_item_losses`): no [K, n_items] tensor is kept.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from seqrec.config import check_choice, check_range
from seqrec.data.batch import next_item_split
from seqrec.data.masking import cloze_mask
from seqrec.errors import ConfigError
from seqrec.losses import ensemble_item_losses, multi_positive_info_nce, rows_at
from seqrec.models import MODELS, register
from seqrec.models.base import DatasetInfo, EncoderConfig, ModelConfig, SeqRecModel, encoder_fields, init_normal

# EMKD keys copied into the member's config when the member's dataclass has a field of that name
SHARED_KEYS = ("max_len", *(f.name for f in dataclasses.fields(EncoderConfig)), "mask_prob")


@dataclass
@encoder_fields(d=256, layers=2, heads=2, inner=1024, dropout=0.3, attn_dropout=0.3, init_std=0.02)
class EMKDConfig(ModelConfig):
    """The encoder fields (d, layers, heads, inner, dropout, attn_dropout, init_std), max_len and mask_prob are
    passed to every member whose config has that key (SHARED_KEYS); init_std also initialises the attribute heads.
    The official code uses the same attention dropout as dropout."""
    name: str = "emkd"
    max_len: int = 15
    """Window length (a BERT4Rec member's window includes the trailing [MASK] at inference). Passed to members."""
    backbone: str = "bert4rec"
    """Registry name of the member model (bert4rec = the paper; sasrec, gru4rec also work)."""
    member: dict[str, Any] = field(default_factory=dict)
    """Extra keys of the member's own config (e.g. {tied: false} for BERT4Rec, {norm_first: true} for SASRec);
    they override the shared keys above. Unknown keys are an error that lists the member's valid keys."""
    n_networks: int = 3
    """Ensemble size N (1 = a single network, e.g. BERT4Rec with the auxiliary attribute task)."""
    n_views: int = 8
    """Masked views M per window."""
    mask_prob: float = 0.15
    """Probability that an item is chosen in a view (then 80% [MASK] / 10% random item / 10% unchanged)."""
    combine: str = "logits"
    """How the members' outputs are combined at inference: logits (sum of raw logits = product of softmaxes,
    official) | probs (mean of the softmax distributions)."""
    tau: float = 0.3
    """Temperature of the contrastive terms (ICL, CCL)."""
    kd_temperature: float | None = None
    """Temperature of the logit distillation (None: the same as tau)."""
    use_kd: bool = True
    """Pairwise symmetric-KL distillation between networks at the prediction positions of every view."""
    use_icl: bool = True
    """Intra-network contrastive term."""
    use_ccl: bool = True
    """Cross-network contrastive term (every ordered pair of networks)."""
    use_attr: bool = True
    """Attribute prediction (switched off automatically when the data has no item attributes)."""
    kd_weight: float = 0.001
    """Weight of the summed KD terms."""
    attr_weight: float = 1.0
    """Weight of the summed attribute BCE terms."""
    icl_weight: float = 0.01
    """Weight of the summed ICL terms."""
    ccl_weight: float = 0.01
    """Weight of the summed CCL terms."""
    contrastive_self: str = "remove"
    """The anchor's own sequence among the negatives: remove (clean InfoNCE, default) | zero (official code quirk:
    its similarity is set to 0 and kept, adding exp(0) to the denominator)."""
    identical_encoder_init: bool = False
    """Official code quirk: all members start with the same transformer weights (embeddings and heads differ).
    Default off: every member is initialised independently (the paper's intent)."""
    logits_chunk_rows: int = 64
    """Prediction rows per chunk of the fused CE + KD (`seqrec.losses.ensemble_item_losses`): the N members'
    [rows, n_items] logit blocks of one chunk are alive at a time (0 = all rows in one chunk). Same values and
    gradients for any value; 32-256 are about equally fast on a CPU."""
    recompute_encoders: bool = False
    """Memory: keep only each member's inputs and run its encoder forward again in the backward pass (activation
    checkpointing), so that one member's activations are alive at a time instead of N. Same values and gradients;
    costs one more encoder forward pass per step (the official d 256 on Beauty: peak RSS 6.1 -> 2.8 GB, step time
    +43% on a CPU)."""
    logits_at: str = "masked"
    """Where item logits are computed: masked (only positions with a target, fast) | all (every position, as the
    official code; same loss values, kept for the speed comparison)."""

    def validate(self) -> None:
        super().validate()
        check_range("model.n_networks", self.n_networks, lo=1)
        check_range("model.n_views", self.n_views, lo=1)
        check_range("model.mask_prob", self.mask_prob, lo=0, hi=1, lo_open=True)
        check_range("model.tau", self.tau, lo=0, lo_open=True)
        if self.kd_temperature is not None:
            check_range("model.kd_temperature", self.kd_temperature, lo=0, lo_open=True)
        for w in ("kd_weight", "attr_weight", "icl_weight", "ccl_weight"):
            check_range(f"model.{w}", getattr(self, w), lo=0)
        check_choice("model.combine", self.combine, ("logits", "probs"))
        check_choice("model.contrastive_self", self.contrastive_self, ("remove", "zero"))
        check_choice("model.logits_at", self.logits_at, ("masked", "all"))
        member = self.member_config()
        try:
            member.validate()
        except ConfigError as e:
            # name the keys set in model.member so (the shared keys come from this config: model.KEY is right)
            message = re.sub(r"\bmodel\.(\w+)", lambda m: f"model.member.{m[1]}" if m[1] in self.member else m[0],
                             str(e))
            raise ConfigError(message) from None
        if getattr(member, "loss", "ce") != "ce":
            raise ConfigError(f"model.member.loss: emkd trains its members with its own CE and KD; expected ce, got "
                              f"{member.loss!r}")

    def member_config(self) -> ModelConfig:
        from seqrec.config import dataclass_from_dict
        from seqrec.models import load_all
        load_all()
        choices = tuple(sorted(k for k in MODELS if k != "emkd"))
        check_choice("model.backbone", self.backbone, choices)
        if not isinstance(self.member, dict):
            raise ConfigError(f"model.member: expected a mapping of the {self.backbone} model's keys")
        cls = MODELS[self.backbone].Config
        names = {f.name for f in dataclasses.fields(cls)}
        if "name" in self.member and self.member["name"] != self.backbone:
            raise ConfigError(f"model.member.name: {self.member['name']!r} differs from model.backbone "
                              f"{self.backbone!r}; set model.backbone instead")
        values = {k: getattr(self, k) for k in SHARED_KEYS if k in names}
        values.update(self.member)
        values["name"] = self.backbone
        return dataclass_from_dict(cls, values, "model.member")


@register
class EMKD(SeqRecModel):
    name = "emkd"
    Config = EMKDConfig
    objective = "cloze"      # the trainer hands over raw windows; causal members cut them into input/targets here
    fused_item_losses: ClassVar[bool] = True
    """CE and KD through `seqrec.losses.ensemble_item_losses` (row chunks of model.logits_chunk_rows, each logit
    block formed once, its gradients made at once). False (set on an instance): the dense path (every member's
    [K, n_items] logits kept for autograd), the reference of tests/test_emkd_fused.py and of
    benchmarks/emkd_speed.py --fused; logits_at: all always takes it."""

    def __init__(self, cfg: EMKDConfig, info: DatasetInfo):
        super().__init__(cfg, info)
        from seqrec.models import build_model
        mcfg = cfg.member_config()
        self.members = nn.ModuleList(build_model(mcfg, info) for _ in range(cfg.n_networks))
        m0 = self.members[0]
        for need in ("encode", "item_logits"):
            if not hasattr(m0, need):
                raise ConfigError(f"model.backbone: {cfg.backbone} has no {need}() and cannot be an EMKD member")
        self.causal = m0.objective == "causal"
        self.mask_token = getattr(m0, "mask_token", info.n_items + 1)
        if cfg.identical_encoder_init and hasattr(m0, "encoder"):
            for m in self.members[1:]:
                m.encoder.load_state_dict(m0.encoder.state_dict())
        self.attr_active = bool(cfg.use_attr and info.attributes is not None)
        if cfg.use_attr and info.attributes is None:
            warnings.warn("EMKD: the data has no item attributes; the attribute term is off (attr = 0)")
        self.attr_heads = None
        if self.attr_active:
            n_attr = info.attributes.n_attributes
            d = self._hidden_size(mcfg)
            self.attr_heads = nn.ModuleList(nn.Linear(d, n_attr + 1) for _ in range(cfg.n_networks))
            init_normal(self.attr_heads, cfg.init_std)
            table = torch.from_numpy(info.attributes.dense(info.n_items + 2)).bool()
            self.register_buffer("attr_table", table, persistent=False)    # [n_items + 2, n_attrs + 1]

    @staticmethod
    def _hidden_size(mcfg) -> int:
        if not hasattr(mcfg, "d"):
            raise ConfigError(f"model.backbone: {mcfg.name} has no hidden size 'd'")
        return mcfg.d

    # --- inputs ---------------------------------------------------------------------------------------------
    @property
    def history_len(self) -> int:
        return self.members[0].history_len

    @property
    def span_len(self) -> int:
        return self.members[0].span_len

    def split_inputs(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(inputs [B, T], lengths [B], next-item targets [B, T] or None for cloze members)."""
        items, lengths = batch.items, batch.lengths
        if not self.causal:
            return items, lengths, None
        keep = lengths >= 2                     # a causal member needs one input and one target
        return next_item_split(items[keep], lengths[keep])

    def make_views(self, inputs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor | None):
        """M views stacked along the batch: (view items [M*B, T], lengths [M*B], CE targets [M*B, T],
        chosen [M*B, T] = positions the rule picked)."""
        m = self.cfg.n_views
        rep = inputs.repeat(m, 1)
        views, labels = cloze_mask(rep, lengths.repeat(m), self.cfg.mask_prob, self.mask_token, self.n_items)
        chosen = labels > 0
        if not self.causal:
            return views, lengths.repeat(m), labels, chosen
        # no [MASK] token in a causal member: a chosen item becomes a random item instead
        rand = torch.randint(1, self.n_items + 1, views.shape, device=views.device)
        views = torch.where(views == self.mask_token, rand, views)
        return views, lengths.repeat(m), targets.repeat(m, 1), chosen

    # --- the loss -------------------------------------------------------------------------------------------
    def loss(self, batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        inputs, lengths, targets = self.split_inputs(batch)
        b, m, n = inputs.shape[0], cfg.n_views, cfg.n_networks
        views, vlen, labels, chosen = self.make_views(inputs, lengths, targets)
        need_plain = self.attr_active or ((cfg.use_icl or cfg.use_ccl) and b > 1)
        # the prediction positions, found once (the step's one host sync: the masks are drawn on the device) and
        # used by index everywhere below
        index = labels.reshape(-1).nonzero().squeeze(1)               # [K] flat positions in [M*B, T]
        view_of = index // labels.shape[1] // b                       # view of each prediction position
        masked_norm = None
        if batch.token_norm is None:
            # each view's mean over its own prediction rows (the official per-batch mean)
            per_view = torch.zeros(m, device=index.device).index_add_(
                0, view_of, torch.ones_like(view_of, dtype=torch.float)).clamp(min=1)
        else:
            # a length-bucketed batch (Batch.token_norm = rows x the epoch's mean span length): divide by the
            # expected counts, not this batch's own, so that bucketing leaves the objective unchanged
            # (tests/test_bucketing.py): per view, every input position of a causal member has a target, and the
            # cloze rule picks each real input with probability mask_prob
            tokens = batch.token_norm - (b if self.causal else 0)      # input positions (causal: span[:-1])
            masked_norm = cfg.mask_prob * tokens
            per_view = torch.full((m,), tokens if self.causal else masked_norm, device=index.device)
        tgt = labels.reshape(-1).index_select(0, index) - 1

        hidden_views, hidden_plain = [], []
        for net in self.members:
            if need_plain:
                h = self._encode(net, torch.cat([views, inputs]), torch.cat([vlen, lengths]))
                hv, hp = h[: m * b], h[m * b:]
            else:
                hv, hp = self._encode(net, views, vlen), None
            hidden_views.append(hv)
            hidden_plain.append(hp)

        if self.fused_item_losses and cfg.logits_at == "masked":
            item_total, ce, kd = self._fused_item_losses(hidden_views, index, tgt, view_of, per_view)
        else:
            ce, kd = self._dense_item_losses(hidden_views, index, tgt, view_of, per_view)
            item_total = ce + cfg.kd_weight * kd
        zero = torch.zeros((), device=ce.device)

        attr = zero
        if self.attr_active:
            # BCE of every element (position x attribute) at the chosen positions of the last view, as a weighted
            # mean over all positions (a boolean selection would need a host sync); 0 when none was chosen
            last = chosen[(m - 1) * b:].float()                        # [B, T]
            item_at = targets if self.causal else inputs               # the item whose attributes are predicted
            y = self.attr_table[item_at].float()                       # [B, T, A]
            denom = (last.sum().clamp(min=1) if masked_norm is None else masked_norm) * y.shape[-1]
            attr = sum((F.binary_cross_entropy_with_logits(head(hp).float(), y, reduction="none").sum(-1) * last)
                       .sum() / denom for head, hp in zip(self.attr_heads, hidden_plain))

        icl = ccl = zero
        if (cfg.use_icl or cfg.use_ccl) and b > 1:
            # unit vectors, once per network: each is used by up to 2N - 1 of the N^2 terms
            anchors = [F.normalize(end_aligned(hp, lengths).flatten(1).float(), dim=-1)
                       for hp in hidden_plain]                                                  # [B, T*d]
            positives = [F.normalize(end_aligned(hv, vlen).flatten(1).float(), dim=-1).view(m, b, -1)
                         for hv in hidden_views]                                                # [M, B, T*d]
            if cfg.use_icl:
                icl = sum(multi_positive_info_nce(anchors[i], positives[i], anchors[i], cfg.tau,
                                                  cfg.contrastive_self, normalized=True) for i in range(n))
            if cfg.use_ccl and n > 1:
                ccl = sum(multi_positive_info_nce(anchors[i], positives[u], anchors[u], cfg.tau,
                                                  cfg.contrastive_self, normalized=True)
                          for i, u in itertools.permutations(range(n), 2))

        total = item_total + cfg.attr_weight * attr + cfg.icl_weight * icl + cfg.ccl_weight * ccl
        return {"loss": total, "ce": ce.detach(), "kd": torch.as_tensor(kd).detach(),
                "attr": torch.as_tensor(attr).detach(), "icl": torch.as_tensor(icl).detach(),
                "ccl": torch.as_tensor(ccl).detach()}

    def _encode(self, net, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.cfg.recompute_encoders and torch.is_grad_enabled():
            # activation checkpointing: only the member's inputs are kept; its forward runs again in backward, with
            # the same dropout masks (the RNG state is restored)
            return checkpoint(net.encode, items, lengths, use_reentrant=False)
        return net.encode(items, lengths)

    def _fused_item_losses(self, hidden_views, index, tgt, view_of, per_view):
        """(ce + kd_weight * kd, ce, kd) over the K prediction rows, all members in one chunked pass."""
        cfg = self.cfg
        # items 1..n of each member's output layer, [n, d] and [n] or None; a slice gives views (no copy)
        layers = [net.item_rows(slice(1, self.n_items + 1)) for net in self.members]
        return ensemble_item_losses([rows_at(hv, index) for hv in hidden_views], [w for w, _ in layers],
                                    [b for _, b in layers], tgt, (1.0 / per_view)[view_of],
                                    cfg.kd_temperature or cfg.tau, cfg.kd_weight, cfg.use_kd,
                                    cfg.logits_chunk_rows)

    def _dense_item_losses(self, hidden_views, index, tgt, view_of, per_view):
        """(ce, kd) from the members' whole [K, n_items + 1] logits (see fused_item_losses)."""
        cfg = self.cfg
        m = cfg.n_views
        logits, ces = [], []
        for net, hv in zip(self.members, hidden_views):
            z = self._logits_at_targets(net, hv, index)               # [K, n_items + 1]
            rows = F.cross_entropy(z[:, 1:].float(), tgt, reduction="none")
            ces.append((torch.zeros(m, device=rows.device).index_add_(0, view_of, rows) / per_view).sum())
            logits.append(z)
        ce = torch.stack(ces).sum()
        kd = ce * 0.0
        if cfg.use_kd and len(self.members) > 1 and len(tgt):
            kd = ensemble_symmetric_kl([z[:, 1:] for z in logits], view_of, m, cfg.kd_temperature or cfg.tau)
        return ce, kd

    def _logits_at_targets(self, net, hv: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if self.cfg.logits_at == "all":                 # every position, then the targets' rows (official way)
            return rows_at(net.item_logits(hv), index)
        return net.item_logits(rows_at(hv, index))

    # --- inference ------------------------------------------------------------------------------------------
    def member_scores(self, batch) -> torch.Tensor:
        """[N, B, n_items + 1] each member's scores (column 0 = -inf)."""
        return torch.stack([net.score(batch) for net in self.members])

    lse_chunk: ClassVar[int] = 65536
    """combine=probs: items per chunk of the members' log-partitions computed in score_query."""

    def score_query(self, batch) -> tuple[list, torch.Tensor | None]:
        """(the members' queries, [B, N] their log-partitions over all items for combine=probs, else None).

        combine=probs needs each member's softmax normalisation over the whole catalogue: it is computed here in
        item chunks of lse_chunk (one more pass over the items), so that score_items gives any item range exactly
        as the full row does, column by column: log mean_m softmax_m = logsumexp_m (s_m - lse_m) - log N."""
        queries = [net.score_query(batch) for net in self.members]
        if self.cfg.combine == "logits":
            return queries, None
        n1 = self.n_items + 1
        lse = []
        for net, q in zip(self.members, queries):
            acc = None
            for lo in range(0, n1, self.lse_chunk):
                part = torch.logsumexp(net.score_items(q, lo, min(lo + self.lse_chunk, n1)).float(), dim=1)
                acc = part if acc is None else torch.logaddexp(acc, part)
            lse.append(acc)
        return queries, torch.stack(lse, 1)          # [B, N]: users first, like every score query

    def score_items(self, query, lo: int, hi: int) -> torch.Tensor:
        """combine=logits: the sum of the members' logits; probs: the log of the mean of the members' softmax
        distributions (same ranking as the mean)."""
        queries, lse = query
        s = torch.stack([net.score_items(q, lo, hi) for net, q in zip(self.members, queries)]).float()
        out = s.sum(0) if lse is None else torch.logsumexp(s - lse.T[:, :, None], dim=0) - math.log(len(s))
        if lo == 0 and hi > 0:
            out[:, 0] = float("-inf")
        return out


def end_aligned(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Right-padded [B, T, d] -> the same rows aligned at the end (left padding, as the official windows), so that
    flattened sequence representations of different lengths line up position by position (padding rows = 0)."""
    t = h.shape[1]
    src = torch.arange(t, device=h.device)[None, :] - (t - lengths[:, None])             # [B, T]
    valid = src >= 0
    out = h.gather(1, src.clamp(min=0)[..., None].expand(-1, -1, h.shape[2]))
    return out * valid[..., None].to(h.dtype)


def ensemble_symmetric_kl(logits: list[torch.Tensor], view_of: torch.Tensor, n_views: int,
                          temperature: float) -> torch.Tensor:
    """Sum over network pairs a < c and over views of the view's mean (over its rows) symmetric KL
    1/2 [KL(sg(p_c) || p_a) + KL(sg(p_a) || p_c)], p = softmax(z / T) (seqrec.losses.symmetric_kl per pair/view).

    Summed over all pairs, the KLs are sum over ordered pairs a != c of sg(p_c) . (sg(log p_c) - log p_a)
    = (n - 1) sum_c sg(p_c . log p_c) - sum_a (S - sg(p_a)) . log p_a with S = sum_c sg(p_c): one log-softmax and
    one [rows, items] product per network instead of two of each per pair (same value and gradients, tested)."""
    n = len(logits)
    logp = [F.log_softmax(z.float() / temperature, dim=-1) for z in logits]
    probs = [lp.detach().exp() for lp in logp]
    total_p = torch.stack(probs).sum(0)
    neg_entropy = sum((p * lp.detach()).sum(-1) for p, lp in zip(probs, logp))
    cross = sum(((total_p - p) * lp).sum(-1) for p, lp in zip(probs, logp))
    rows = 0.5 * ((n - 1) * neg_entropy - cross)
    count = torch.zeros(n_views, device=rows.device).index_add_(0, view_of, torch.ones_like(rows)).clamp(min=1)
    return (torch.zeros(n_views, device=rows.device).index_add_(0, view_of, rows) / count).sum()
