"""The model protocol every model follows. Models describe computations; the trainer (seqrec.train) owns
optimisation: autocast, backward, gradient scaling, clipping, accumulation, optimiser and LR-scheduler steps, DDP.

* `loss(batch) -> dict[str, Tensor]`: named loss terms plus their weighted total under "loss" (logged per term).
  The batch describes where its targets are (`Batch.targets_at`, `target_index`), so no loss has to find them on
  the device.
* `score(batch) -> Tensor [B, n_items + 1]`: next-item scores for a batch of histories; column 0 (padding) is -inf.
  `forward` is `score` (inference).
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
        if hasattr(self, "init_std"):
            check_range("model.init_std", self.init_std, lo=0, lo_open=True)


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
    types = typing.get_type_hints(EncoderConfig)
    unknown = sorted(set(defaults) - set(types))
    if unknown:
        raise TypeError(f"encoder_fields: {unknown[0]!r} is not an EncoderConfig field ({', '.join(types)})")

    def add(cls: type) -> type:
        own = inspect.get_annotations(cls)
        clash = sorted(set(own) & set(defaults))
        if clash:
            raise TypeError(f"{cls.__name__}.{clash[0]}: an EncoderConfig field, set by encoder_fields")
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

    # --- the protocol -------------------------------------------------------------------------------------
    def loss(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def score(self, batch) -> torch.Tensor:
        raise NotImplementedError

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
        Default: nothing. Scoring must not depend on it (a model loaded from a checkpoint is not prepared)."""

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
    @staticmethod
    def mask_padding_column(scores: torch.Tensor) -> torch.Tensor:
        scores[:, 0] = float("-inf")
        return scores


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
