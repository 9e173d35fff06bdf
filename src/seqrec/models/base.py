"""The model protocol every model follows.

* `loss(batch) -> dict[str, Tensor]`: named loss terms plus their weighted total under "loss" (logged per term).
* `score(batch) -> Tensor [B, n_items + 1]`: next-item scores for a batch of histories; column 0 (padding) is -inf.
* `training_step(batch, optimizers)`: one optimisation step; the default backpropagates `loss` once. Models that
  need several steps per batch (MCLRec) override it; the trainer never special-cases a model.

`objective` tells the trainer how training spans become batches ('causal': input span[:-1] and next-item targets;
'cloze': the span itself, masked by the model). `history_len` is how many of the most recent items `score` uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

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


@dataclass
class DatasetInfo:
    """What a model needs to know about the data to be built."""
    n_items: int
    attributes: ItemAttributes | None = None


class SeqRecModel(nn.Module):
    name: ClassVar[str] = ""
    Config: ClassVar[type] = ModelConfig
    objective: ClassVar[str] = "causal"

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

    def forward(self, batch) -> dict[str, torch.Tensor]:
        # forward() is the loss so that DistributedDataParallel's hooks see the training computation
        return self.loss(batch)

    def configure_optimizers(self, train_cfg) -> list[torch.optim.Optimizer]:
        return [make_optimizer(self.parameters(), train_cfg)]

    def training_step(self, batch, optimizers: list[torch.optim.Optimizer], forward=None,
                      clip: float | None = None) -> dict[str, torch.Tensor]:
        """One step. `forward` is the (possibly DDP-wrapped) module to call instead of self.loss."""
        terms = (forward or self)(batch)
        opt = optimizers[0]
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(self.parameters(), clip)
        opt.step()
        return terms

    # --- helpers ------------------------------------------------------------------------------------------
    @staticmethod
    def mask_padding_column(scores: torch.Tensor) -> torch.Tensor:
        scores[:, 0] = float("-inf")
        return scores


def make_optimizer(params, train_cfg) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if train_cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)


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


def targets_at_last_position(batch) -> torch.Tensor | None:
    """[B] the target at each row's last real position when that is the batch's only target position ('prefix'
    training examples), else None (targets elsewhere, or none). Lets a model compute its output there only."""
    t = batch.targets
    if t is None:
        return None
    last = last_position(t, batch.lengths)
    # one host sync: every row has exactly one target and it is the last one
    return last if bool((((t > 0).sum(dim=1) == 1) & (last > 0)).all()) else None
