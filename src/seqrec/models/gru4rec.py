"""GRU4Rec (Hidasi et al., 2016) as in RecBole: item embedding -> dropout -> GRU -> Linear to d, full-softmax
cross entropy with the tied item embedding."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seqrec.losses import rows_at
from seqrec.models.base import DatasetInfo, ModelConfig, SeqRecModel, encoder_fields, last_position, loss_fields
from seqrec.nn import Dropout


@dataclass
@loss_fields()
@encoder_fields(d=64, layers=1, dropout=0.3)
class GRU4RecConfig(ModelConfig):
    """`d` is the item embedding size (the GRU's input and, through the projection, its output width), `layers`
    the GRU layers, `dropout` the dropout on the item embeddings."""
    name: str = "gru4rec"
    max_len: int = 50
    hidden: int = 128
    """GRU hidden size."""


class GRU4Rec(SeqRecModel):
    name = "gru4rec"
    Config = GRU4RecConfig
    objective = "causal"

    def __init__(self, cfg: GRU4RecConfig, info: DatasetInfo):
        super().__init__(cfg, info)
        self.item = nn.Embedding(info.n_items + 1, cfg.d, padding_idx=0)
        self.dropout = Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.d, cfg.hidden, cfg.layers, batch_first=True, bias=False)
        self.proj = nn.Linear(cfg.hidden, cfg.d)
        nn.init.xavier_normal_(self.item.weight)
        for w in self.gru.parameters():
            nn.init.xavier_uniform_(w)

    def encode(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # right padding: a GRU reading left to right reaches each real position before any padding
        h, _ = self.gru(self.dropout(self.item(items)))
        return self.proj(h)

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.item.weight.T

    def item_rows(self, ids: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.item.weight[ids], None

    def loss(self, batch) -> dict[str, torch.Tensor]:
        h = rows_at(self.encode(batch.items, batch.lengths), batch.target_index)
        ce = self.item_loss(h, batch.target_items, norm=batch.target_norm)
        return {"loss": ce, "ce": ce.detach()}

    def score_query(self, batch) -> torch.Tensor:
        return last_position(self.encode(batch.items, batch.lengths), batch.lengths)

    def score_items(self, query: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return self.item_range_logits(query, self.item.weight, lo, hi)
