"""BERT4Rec (Sun et al., 2019) as in BERT4Rec-VAE-Pytorch / EMKD: a bidirectional pre-LN transformer trained with
the cloze task (masked items predicted from both sides); inference appends a [MASK] after the history."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seqrec.config import check_range
from seqrec.data.masking import ClozeMasking, masked_batch
from seqrec.losses import rows_at
from seqrec.models.base import DatasetInfo, ModelConfig, SeqRecModel, encoder_fields, init_normal, loss_fields
from seqrec.nn import SequenceEmbedding, TransformerEncoder


@dataclass
@loss_fields()
@encoder_fields(d=64, layers=2, heads=2, inner=256, dropout=0.2, attn_dropout=0.2, init_std=0.02)
class BERT4RecConfig(ModelConfig):
    name: str = "bert4rec"
    max_len: int = 50
    """Window length including the trailing [MASK] at inference."""
    mask_prob: float = 0.15
    """Probability that an item is chosen for prediction (then 80% [MASK], 10% random item, 10% unchanged)."""
    tied: bool = False
    """Score with the input embedding (True) or with a separate Linear(d, n_items + 1) output layer (False)."""

    def validate(self) -> None:
        super().validate()
        check_range("model.mask_prob", self.mask_prob, lo=0, hi=1, lo_open=True)
        check_range("model.max_len", self.max_len, lo=2)


class BERT4Rec(SeqRecModel):
    name = "bert4rec"
    Config = BERT4RecConfig
    objective = "cloze"

    def __init__(self, cfg: BERT4RecConfig, info: DatasetInfo):
        super().__init__(cfg, info)
        self.mask_token = info.n_items + 1
        # positions counted from the end, like the official left-padded windows: [MASK] is always at max_len - 1
        self.embed = SequenceEmbedding(info.n_items + 2, cfg.max_len, cfg.d, cfg.dropout, layer_norm=False,
                                       positions_from_end=True)
        self.encoder = TransformerEncoder(cfg.layers, cfg.d, cfg.heads, cfg.inner, cfg.dropout, cfg.attn_dropout,
                                          causal=False, norm_first=True, ln_eps=1e-6)
        self.out = None if cfg.tied else nn.Linear(cfg.d, info.n_items + 1)
        init_normal(self, cfg.init_std)

    def encode(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embed(items, lengths), items != 0)

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.out is None:
            return h @ self.embed.item.weight[: self.n_items + 1].T
        return self.out(h)

    def item_rows(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.out is None:
            return self.embed.item.weight[ids], None
        return self.out.weight[ids], self.out.bias[ids]

    def cloze_masking(self) -> ClozeMasking:
        return ClozeMasking(self.cfg.mask_prob, self.mask_token, self.n_items)

    def loss(self, batch) -> dict[str, torch.Tensor]:
        """The item loss (CE by default, model.loss) at the masked positions. The trainer's batches come
        masked from the data pipeline (targets_at 'masked'); a raw batch is masked here with the global RNG (a
        convenience for direct calls: finding the masked positions on a GPU costs a host sync)."""
        if batch.targets_at != "masked":
            batch = masked_batch(batch.to("cpu"), self.cloze_masking()).to(batch.items.device)
        h = rows_at(self.encode(batch.items, batch.lengths), batch.target_index)
        ce = self.item_loss(h, batch.target_items, norm=batch.target_norm)
        return {"loss": ce, "ce": ce.detach()}

    @property
    def history_len(self) -> int:
        return self.cfg.max_len - 1

    def with_mask_token(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The history (right-padded, at most max_len - 1 items) followed by [MASK]."""
        if batch.items.shape[1] > self.history_len:
            raise ValueError(f"history width {batch.items.shape[1]} exceeds {self.history_len}")
        items = torch.nn.functional.pad(batch.items, (0, 1))
        items[torch.arange(items.shape[0], device=items.device), batch.lengths] = self.mask_token
        return items, batch.lengths + 1

    def score_query(self, batch) -> torch.Tensor:
        items, lengths = self.with_mask_token(batch)
        # only the [MASK] position is scored: the encoder's last block runs for that query alone
        return self.encoder(self.embed(items, lengths), items != 0, only=lengths - 1)

    def score_items(self, query: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        hi = min(hi, self.n_items + 1)          # the tied table has a [MASK] row n_items + 1: never scored
        if self.out is None:
            return self.item_range_logits(query, self.embed.item.weight, lo, hi)
        return self.item_range_logits(query, self.out.weight, lo, hi, self.out.bias)
