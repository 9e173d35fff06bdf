"""SASRec (Kang & McAuley, 2018) as in RecBole / MCLRec: a causal transformer over the item sequence, full-softmax
cross entropy, scores = h . E^T with the input item embedding (tied)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from seqrec.config import check_choice
from seqrec.losses import cross_entropy_at_targets
from seqrec.models.base import DatasetInfo, ModelConfig, SeqRecModel, init_normal, targets_at_last_position
from seqrec.nn import SequenceEmbedding, TransformerEncoder


@dataclass
class SASRecConfig(ModelConfig):
    name: str = "sasrec"
    max_len: int = 50
    d: int = 64
    """Hidden size."""
    layers: int = 2
    """Transformer blocks."""
    heads: int = 2
    """Attention heads."""
    inner: int = 256
    """Feed-forward width."""
    dropout: float = 0.5
    """Dropout on embeddings, residual branches and the feed-forward."""
    attn_dropout: float = 0.5
    """Dropout on attention probabilities."""
    activation: str = "gelu"
    """gelu | relu."""
    norm_first: bool = False
    """Pre-LN blocks (True) or post-LN as in RecBole/MCLRec (False)."""
    init_std: float = 0.02
    """Std of the normal init of Linear and Embedding weights."""
    ce_padding_class: bool = False
    """Training CE only: keep the padding id 0 in the softmax as a class that is never a target (its logit is
    h . E[0]), as the RecBole / official MCLRec code does. The CE then trains the padding row E[0], which is also the
    input at masked view positions (CL4SRec / MCLRec); nn.Embedding's padding_idx only blocks the lookup's gradient.
    False: the padding id is left out of the softmax and E[0] keeps its initial value. Scoring never ranks id 0."""

    def validate(self) -> None:
        super().validate()
        check_choice("model.activation", self.activation, ("gelu", "relu"))


class SASRec(SeqRecModel):
    name = "sasrec"
    Config = SASRecConfig
    objective = "causal"

    def __init__(self, cfg: SASRecConfig, info: DatasetInfo):
        super().__init__(cfg, info)
        self.embed = SequenceEmbedding(info.n_items + 1, cfg.max_len, cfg.d, cfg.dropout, layer_norm=True)
        self.encoder = TransformerEncoder(cfg.layers, cfg.d, cfg.heads, cfg.inner, cfg.dropout, cfg.attn_dropout,
                                          causal=True, activation=cfg.activation, norm_first=cfg.norm_first)
        init_normal(self, cfg.init_std)

    def encode(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, T, d] hidden state at every position."""
        return self.encoder(self.embed(items, lengths), items != 0)

    def encode_last(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, d] hidden state at the last real item only (= encode(...)[b, lengths[b] - 1], less work)."""
        return self.encoder(self.embed(items, lengths), items != 0, only=lengths - 1)

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.embed.item.weight.T

    def loss(self, batch) -> dict[str, torch.Tensor]:
        last_targets = targets_at_last_position(batch)
        if last_targets is not None:        # 'prefix' examples: one target per row, at its end
            h, y = self.encode_last(batch.items, batch.lengths)[:, None], last_targets[:, None]
        else:
            h, y = self.encode(batch.items, batch.lengths), batch.targets
        ce = self.ce_loss(h, y)
        return {"loss": ce, "ce": ce.detach()}

    def ce_loss(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Full-softmax cross entropy of hidden h [B, T, d] at its targets y [B, T] (0 = no target)."""
        return cross_entropy_at_targets(h, y, self.item_logits, self.cfg.logits_chunk_rows,
                                        padding_class=self.cfg.ce_padding_class)

    def represent(self, batch) -> torch.Tensor:
        """[B, d] sequence representation: the output at the last real item."""
        return self.encode_last(batch.items, batch.lengths)

    def score(self, batch) -> torch.Tensor:
        return self.mask_padding_column(self.item_logits(self.represent(batch)))
