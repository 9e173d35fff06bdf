"""The model protocol every model follows. Models describe computations; the trainer (seqrec.train) owns
optimisation: autocast, backward, gradient scaling, clipping, accumulation, optimiser and LR-scheduler steps, DDP.

* `loss(batch) -> dict[str, Tensor]`: named loss terms plus their weighted total under "loss" (logged per term).
  The batch describes where its targets are (`Batch.targets_at`, `target_index`), so no loss has to find them on
  the device.
* `score(batch) -> Tensor [B, n_items + 1]`: next-item scores for a batch of histories; column 0 (padding) is -inf.
  `forward` is `score` (inference).
* `score_query(batch) -> Q` and `score_items(Q, lo, hi) -> Tensor [B, hi - lo]`: the same scores for the item range
  lo..hi-1 only (column of item 0 = -inf when lo == 0), so that evaluation and top-k can walk over the catalogue in
  chunks with memory bounded by the chunk (eval.item_chunk). Q is what scoring needs per user (SASRec: the [B, d]
  representation; EMKD: its members' Qs); a tensor or a list/tuple of them, users along dimension 0. A model
  implementing the two gets `score` = `score_items(score_query(batch), 0, n_items + 1)` (one code path); the
  defaults make Q the full `score(batch)` and slice it (correct for any model, but not memory-bounded).
* `configure_optimizers(train_cfg)`: the optimisers (one by default).
* `automatic_optimization = False` (MCLRec): the trainer calls `manual_step(batch, opt)` instead of backpropagating
  `loss`, with `opt` a ManualOptimization handle (seqrec.train.manual) that runs autocast, backward, DDP gradient
  averaging, clipping and optimiser steps for the model: several updates per batch, no collective in the model.
* `cloze_masking()`: a ClozeMasking for models trained on cloze-masked batches (BERT4Rec); the data pipeline then
  masks every training batch on the CPU side. None (default): batches come as the objective cuts them.

`objective` tells the trainer how training spans become batches ('causal': input span[:-1] and next-item targets;
'cloze': the span itself). `history_len` is how many of the most recent items `score` uses.
"""
from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from seqrec.config import check_range
from seqrec.data.dataset import ItemAttributes
from seqrec.errors import ConfigError
from seqrec.losses import NegativeSampler, item_loss


@dataclass
class ModelConfig:
    """Fields every model has; each model extends this dataclass."""
    name: str = ""
    """Model identifier (sasrec, bert4rec, gru4rec, ...)."""
    max_len: int = 50
    """Longest input sequence (most recent items)."""
    logits_chunk_rows: int = 0
    """Memory cap for the training losses over all items: compute the [rows, n_items] item logits of the loss in
    chunks of this many target rows, each recomputed in the backward pass (0 = all rows at once). Same loss and
    gradients; costs one more logits product. For long batches with large catalogues."""

    def validate(self) -> None:
        check_range("model.max_len", self.max_len, lo=1)
        check_range("model.logits_chunk_rows", self.logits_chunk_rows, lo=0)
        for f in ("dropout", "attn_dropout", "hidden_dropout"):
            if hasattr(self, f):
                check_range(f"model.{f}", getattr(self, f), lo=0, hi=1, hi_open=True)
        for f in ("d", "layers", "heads", "inner"):
            if hasattr(self, f):
                check_range(f"model.{f}", getattr(self, f), lo=1)
        if hasattr(self, "d") and hasattr(self, "heads") and self.d % self.heads:
            raise ConfigError(f"model.heads: {self.heads} does not divide model.d {self.d}; expected a divisor of "
                              f"model.d (each head gets d / heads dimensions), e.g. "
                              f"{', '.join(str(h) for h in _divisors(self.d, 4))}")
        if hasattr(self, "init_std"):
            check_range("model.init_std", self.init_std, lo=0, lo_open=True)
        if hasattr(self, "loss"):
            validate_loss_fields(self)


def _divisors(n: int, k: int) -> list[int]:
    """The first k divisors of n (for error messages)."""
    return [h for h in range(1, n + 1) if n % h == 0][:k]


@dataclass
class EncoderConfig:
    """The sequence-encoder hyper-parameters the models share, each defined and documented here once.

    Not used on its own: a model's config takes the fields its encoder has, with its own defaults, through
    `@encoder_fields(...)`; they become ordinary flat fields of the model's dataclass (keys `model.d`,
    `model.layers`, ...; flat in `to_dict()` too), checked by `ModelConfig.validate`. Where exactly a model applies
    them (which dropout sites, which weights the init covers) is said in that model's config docstring."""
    d: int = 64
    """Hidden size: the item embedding size and the width of the encoder's output."""
    layers: int = 2
    """Encoder layers (transformer or MQSA blocks, GRU layers)."""
    heads: int = 2
    """Attention heads."""
    inner: int = 256
    """Feed-forward width of the transformer blocks."""
    dropout: float = 0.5
    """Dropout on the embedded input and inside the encoder (residual branches, feed-forward)."""
    attn_dropout: float = 0.5
    """Dropout on the attention probabilities."""
    init_std: float = 0.02
    """Std of the normal init of the weights (Linear and Embedding, unless the model says otherwise)."""


def encoder_fields(**defaults: Any) -> Callable[[type], type]:
    """Class decorator, placed under @dataclass: give a model config the EncoderConfig fields named in `defaults`,
    with these defaults (placed after ModelConfig's fields, in EncoderConfig's order). So each model states in one
    line which shared fields it has and its defaults, while their types and docstrings stay in EncoderConfig:

        @dataclass
        @encoder_fields(d=64, layers=1, dropout=0.3)
        class GRU4RecConfig(ModelConfig): ...

    A subclass of a model config inherits them like any dataclass field (re-declare one to change its default)."""
    return _shared_fields(EncoderConfig, defaults, "encoder_fields")


@dataclass
class LossConfig:
    """The training-loss keys of the models whose loss is an item softmax (SASRec, CL4SRec, MCLRec, GRU4Rec,
    MQSA-TED, BERT4Rec), each defined and documented here once; a model gets them with `@loss_fields()` (flat keys
    `model.loss`, `model.negatives`, ...). One implementation for all: `seqrec.losses.item_loss`; formulas, log-Q
    and gBCE's beta in docs/losses.md. Training only: scoring is always h . E^T over every item."""
    loss: str = "ce"
    """ce | sampled_softmax | gbce. ce: full-softmax cross entropy over all items (the default; unchanged).
    sampled_softmax: softmax over the target and `negatives` sampled items, each logit minus log Q(item) (Q: the
    sampler's probability of the item; the log-Q correction makes the estimate consistent). gbce: gSASRec's
    generalised binary cross entropy (Petrov & Macdonald, RecSys 2023) over the target and `negatives` uniform
    negatives. In both, a negative equal to a row's target is left out of that row's loss (logit -inf / no term)."""
    negatives: int = 256
    """Negatives N for sampled_softmax / gbce, drawn (with replacement) on the device: once per training batch and
    shared by all its target rows, or N for each target row (`negatives_per`). Ignored by the in_batch sampler (its
    negatives are the batch's K targets) and by ce. gbce needs negatives <= n_items - 1 (its sampling rate
    alpha = negatives / (n_items - 1))."""
    negative_sampler: str = "uniform"
    """uniform | popularity | in_batch. uniform: items 1..n_items, Q = 1 / n_items. popularity: Q(i) proportional to
    item i's number of training interactions (counted in `prepare(split)`; items never seen in training are never
    drawn). in_batch: the batch's other target items (K columns), Q(i) = the item's frequency among the batch's
    targets. gbce takes uniform only (its calibration assumes uniform negatives)."""
    negatives_per: str = "batch"
    """batch | row. batch: one set of `negatives` items per training batch, shared by all its K target rows (one
    [K, d] x [d, N] logits product). row: each target row draws its own `negatives` items ([K, N] ids; gSASRec's
    way), at the cost of gathering [K, N, d] item rows and a batched product (use logits_chunk_rows with sequence
    examples, where K is up to batch_size * max_len). Not with the in_batch sampler (its negatives are the batch's
    targets, shared by definition). Ignored by ce."""
    gbce_t: float = 0.75
    """gbce's calibration parameter t in [0, 1]: beta = alpha (t (1 - 1/alpha) + 1/alpha) with alpha the sampling
    rate; t = 0 is plain BCE (beta = 1), t = 1 gives beta = alpha. Default 0.75, gSASRec's recommended value."""
    gbce_shift: str = "equilibrium"
    """equilibrium | none: the constant c that gbce adds to every logit before its sigmoid terms (one c for all
    items, so no ranking and no score changes). equilibrium: c = log(beta / negatives), where the loss of a model
    whose logits are all 0 (at initialisation) has no gradient along a shift shared by all logits; without it gbce
    first pushes every logit down by log(negatives / beta), which a tied item table can only do with a direction
    shared by all item embeddings, and the model collapses to popularity (measured: docs/losses.md). none: c = 0,
    the paper's form. Ignored by ce and sampled_softmax (softmax is invariant to a shared shift)."""


ITEM_LOSSES = ("ce", "sampled_softmax", "gbce")
NEGATIVE_SAMPLERS = ("uniform", "popularity", "in_batch")
NEGATIVES_PER = ("batch", "row")
GBCE_SHIFTS = ("equilibrium", "none")


def loss_fields(**defaults: Any) -> Callable[[type], type]:
    """Class decorator, placed under @dataclass like `encoder_fields`: give a model config every LossConfig field
    (`defaults` overrides LossConfig's own default of a field). Validated by `ModelConfig.validate`."""
    return _shared_fields(LossConfig, {**{f: getattr(LossConfig, f) for f in typing.get_type_hints(LossConfig)},
                                       **defaults}, "loss_fields")


def validate_loss_fields(cfg) -> None:
    """The LossConfig fields of a model config, each with a one-line error."""
    from seqrec.config import check_choice
    from seqrec.errors import ConfigError
    check_choice("model.loss", cfg.loss, ITEM_LOSSES)
    check_choice("model.negative_sampler", cfg.negative_sampler, NEGATIVE_SAMPLERS)
    check_choice("model.negatives_per", cfg.negatives_per, NEGATIVES_PER)
    check_range("model.negatives", cfg.negatives, lo=1)
    check_range("model.gbce_t", cfg.gbce_t, lo=0, hi=1)
    check_choice("model.gbce_shift", cfg.gbce_shift, GBCE_SHIFTS)
    if cfg.loss == "gbce" and cfg.negative_sampler != "uniform":
        raise ConfigError(f"model.negative_sampler: gbce takes uniform negatives only (its calibration assumes "
                          f"them), got {cfg.negative_sampler!r}")
    if cfg.negatives_per == "row" and cfg.negative_sampler == "in_batch":
        raise ConfigError("model.negatives_per: row cannot be used with negative_sampler=in_batch (in-batch negatives "
                          "are the batch's targets, shared by all rows by definition); use negatives_per=batch or "
                          "the uniform / popularity sampler")


def _shared_fields(source: type, defaults: dict[str, Any], decorator: str) -> Callable[[type], type]:
    """Add the fields of dataclass `source` named in `defaults` (with those defaults, in `source`'s order, before
    the class's own annotations) to a class about to become a dataclass."""
    types = typing.get_type_hints(source)
    unknown = sorted(set(defaults) - set(types))
    if unknown:
        raise TypeError(f"{decorator}: {unknown[0]!r} is not a {source.__name__} field ({', '.join(types)})")

    def add(cls: type) -> type:
        own = inspect.get_annotations(cls)
        clash = sorted(set(own) & set(defaults))
        if clash:
            raise TypeError(f"{cls.__name__}.{clash[0]}: a {source.__name__} field, set by {decorator}")
        cls.__annotations__ = {**{k: t for k, t in types.items() if k in defaults}, **own}
        for k, v in defaults.items():
            setattr(cls, k, v)
        return cls
    return add


@dataclass
class DatasetInfo:
    """What a model needs to know about the data to be built."""
    n_items: int
    attributes: ItemAttributes | None = None


class SeqRecModel(nn.Module):
    name: ClassVar[str] = ""
    Config: ClassVar[type] = ModelConfig
    objective: ClassVar[str] = "causal"
    automatic_optimization: ClassVar[bool] = True
    compiled_methods: ClassVar[tuple[str, ...]] = ("loss",)
    """What train.compile compiles for a manual-optimisation model (an automatic one has its loss compiled)."""

    def __init__(self, cfg: ModelConfig, info: DatasetInfo):
        super().__init__()
        self.cfg = cfg
        self.n_items = info.n_items
        # the negatives of a sampled item loss (LossConfig keys; None for the full CE): not module state
        self.item_sampler = NegativeSampler.from_config(cfg, info.n_items)

    # --- the protocol -------------------------------------------------------------------------------------
    def loss(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def score(self, batch) -> torch.Tensor:
        if type(self).score_query is SeqRecModel.score_query:
            raise NotImplementedError(f"{type(self).__name__} implements neither score nor score_query")
        return self.score_items(self.score_query(batch), 0, self.n_items + 1)

    def score_query(self, batch) -> Any:
        """What scoring a range of items needs per user. Default: the full score(batch) (not memory-bounded)."""
        return self.score(batch)

    def score_items(self, query: Any, lo: int, hi: int) -> torch.Tensor:
        """[B, hi - lo] scores of items lo..hi-1 (item 0 = -inf). Default: a slice of the full scores."""
        return query[:, lo:hi]

    @property
    def history_len(self) -> int:
        return self.cfg.max_len

    @property
    def span_len(self) -> int:
        """Longest training span: max_len inputs + 1 target for causal models, max_len for cloze models."""
        return self.cfg.max_len + 1 if self.objective == "causal" else self.cfg.max_len

    def prepare(self, split) -> None:
        """Called by the trainer right after the model is built (and moved to its device), with the training
        Split: models that need statistics of the training data (MQSA-TED's transition matrix) build them here.
        Default: the item counts of a popularity negative sampler (model.negative_sampler=popularity), else
        nothing; a model that overrides it calls super().prepare(split). Scoring must not depend on it (a model
        loaded from a checkpoint is not prepared)."""
        if self.item_sampler is not None:
            param = next(self.parameters(), None)
            self.item_sampler.prepare(split, None if param is None else param.device)

    def forward(self, batch) -> torch.Tensor:
        return self.score(batch)

    def cloze_masking(self):
        """A seqrec.data.masking.ClozeMasking when training batches must be cloze-masked by the data pipeline."""
        return None

    def configure_optimizers(self, train_cfg) -> list[torch.optim.Optimizer]:
        return [make_optimizer(self.parameters(), train_cfg)]

    def manual_step(self, batch, opt) -> dict[str, torch.Tensor]:
        """Manual optimisation (automatic_optimization = False): run this batch's updates through `opt`
        (seqrec.train.manual.ManualOptimization) and return the terms to log."""
        raise NotImplementedError(f"{self.name} uses automatic optimisation")

    # --- helpers ------------------------------------------------------------------------------------------
    def item_loss(self, h: torch.Tensor, y: torch.Tensor, padding_class: bool = False,
                  norm: float | None = None) -> torch.Tensor:
        """The configured training loss over items (LossConfig keys: full CE, sampled softmax or gBCE) of hidden
        rows h [K, d] with targets y [K]: `seqrec.losses.item_loss` with this model's `item_logits(h)` and
        `item_rows(ids)` (the output-layer rows of those items), chunked by model.logits_chunk_rows; the sum over
        rows divided by norm (pass the batch's `target_norm`; None: K)."""
        return item_loss(h, y, self.item_logits, self.item_rows, self.cfg, self.item_sampler,
                         self.cfg.logits_chunk_rows, padding_class, norm)

    @staticmethod
    def mask_padding_column(scores: torch.Tensor) -> torch.Tensor:
        scores[:, 0] = float("-inf")
        return scores

    @staticmethod
    def item_range_logits(h: torch.Tensor, weight: torch.Tensor, lo: int, hi: int,
                          bias: torch.Tensor | None = None) -> torch.Tensor:
        """[B, hi - lo] h . weight[lo:hi]^T (+ bias[lo:hi]), the padding column (item 0) -inf when lo == 0."""
        s = h @ weight[lo:hi].T if bias is None else torch.nn.functional.linear(h, weight[lo:hi], bias[lo:hi])
        if lo == 0 and hi > 0:
            s[:, 0] = float("-inf")
        return s


def make_optimizer(params, train_cfg, lr: float | None = None) -> torch.optim.Optimizer:
    """Adam or AdamW as train_cfg says (lr: override of train_cfg.lr), with the fused implementation where the
    parameters' device supports it (one kernel for all parameters instead of several per tensor)."""
    params = list(params)
    cls = torch.optim.AdamW if train_cfg.optimizer == "adamw" else torch.optim.Adam
    fused = bool(params) and getattr(train_cfg, "fused_optimizer", True) and params[0].device.type in ("cpu", "cuda")
    return cls(params, lr=train_cfg.lr if lr is None else lr, weight_decay=train_cfg.weight_decay,
               fused=fused or None)


def init_normal(module: nn.Module, std: float = 0.02) -> None:
    """BERT-style init: Linear/Embedding ~ N(0, std), biases 0, LayerNorm 1/0."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def last_position(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, d] output at each row's last real position (right padding)."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]
