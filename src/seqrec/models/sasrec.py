"""SASRec (Kang & McAuley, 2018) as in RecBole / MCLRec: a causal transformer over the item sequence, full-softmax
cross entropy, scores = h . E^T with the input item embedding (tied)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from seqrec.config import check_choice
from seqrec.errors import ConfigError
from seqrec.losses import rows_at
from seqrec.models.base import DatasetInfo, ModelConfig, SeqRecModel, encoder_fields, init_normal, loss_fields
from seqrec.nn import SequenceEmbedding, TransformerEncoder
from seqrec.nn.transformer import FFN_ACTIVATIONS


@dataclass
@loss_fields()
@encoder_fields(d=64, layers=2, heads=2, inner=256, dropout=0.5, attn_dropout=0.5, init_std=0.02)
class SASRecConfig(ModelConfig):
    name: str = "sasrec"
    max_len: int = 50
    activation: str = "gelu"
    """gelu | relu | swiglu (the feed-forward's activation; swiglu: SwiGLU of hidden width `inner`, fc1 twice as
    wide, as LiGR / eSASRec)."""
    norm_first: bool = False
    """Pre-LN blocks (True) or post-LN as in RecBole/MCLRec (False)."""
    gated: bool = False
    """LiGR's gated residuals (eSASRec's layer): each block's attention and feed-forward branch is multiplied by
    sigmoid(Linear(residual stream)) before it is added (seqrec.nn.transformer.TransformerBlock). Needs
    norm_first: true."""
    final_norm: bool = False
    """A LayerNorm on the encoder's output (the usual end of a pre-LN stack; original SASRec, eSASRec)."""
    ce_padding_class: bool = False
    """Training CE only (model.loss=ce; the sampled losses never draw id 0): keep the padding id 0 in the softmax
    as a class that is never a target (its logit is h . E[0]), as the RecBole / official MCLRec code does. The CE
    then trains the padding row E[0], which is also the input at masked view positions (CL4SRec / MCLRec);
    nn.Embedding's padding_idx only blocks the lookup's gradient. False: the padding id is left out of the softmax
    and E[0] keeps its initial value. Scoring never ranks id 0."""

    def validate(self) -> None:
        super().validate()
        check_choice("model.activation", self.activation, FFN_ACTIVATIONS)
        if self.gated and not self.norm_first:
            raise ConfigError("model.gated: LiGR's gated residuals need model.norm_first: true (they gate pre-LN "
                             "branches); got norm_first false")


class SASRec(SeqRecModel):
    name = "sasrec"
    Config = SASRecConfig
    objective = "causal"

    def __init__(self, cfg: SASRecConfig, info: DatasetInfo):
        super().__init__(cfg, info)
        self.embed = SequenceEmbedding(info.n_items + 1, cfg.max_len, cfg.d, cfg.dropout, layer_norm=True)
        self.encoder = TransformerEncoder(cfg.layers, cfg.d, cfg.heads, cfg.inner, cfg.dropout, cfg.attn_dropout,
                                          causal=True, activation=cfg.activation, norm_first=cfg.norm_first,
                                          gated=cfg.gated, final_norm=cfg.final_norm)
        init_normal(self, cfg.init_std)

    def encode(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, T, d] hidden state at every position."""
        return self.encoder(self.embed(items, lengths), items != 0)

    def encode_last(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, d] hidden state at the last real item only (= encode(...)[b, lengths[b] - 1], less work)."""
        return self.encoder(self.embed(items, lengths), items != 0, only=lengths - 1)

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.embed.item.weight.T

    def item_rows(self, ids: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.embed.item.weight[ids], None

    def loss(self, batch) -> dict[str, torch.Tensor]:
        h, y = self.hidden_at_targets(batch)
        ce = self.ce_loss(h, y, batch.target_norm)
        return {"loss": ce, "ce": ce.detach()}

    def hidden_at_targets(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(h [K, d], y [K]): the hidden state at each target of the batch and the item to predict there."""
        if batch.targets_at == "last":        # 'prefix' examples: one target per row, at its end
            return self.encode_last(batch.items, batch.lengths), batch.target_items
        return rows_at(self.encode(batch.items, batch.lengths), batch.target_index), batch.target_items

    def ce_loss(self, h: torch.Tensor, y: torch.Tensor, norm: float | None = None) -> torch.Tensor:
        """The item loss of hidden rows h [K, d] with targets y [K]: full-softmax cross entropy by default, or the
        sampled loss model.loss asks for (SeqRecModel.item_loss); norm: the batch's `target_norm`. CL4SRec and
        MCLRec use it too."""
        return self.item_loss(h, y, padding_class=self.cfg.ce_padding_class, norm=norm)

    def represent(self, batch) -> torch.Tensor:
        """[B, d] sequence representation: the output at the last real item."""
        return self.encode_last(batch.items, batch.lengths)

    def score_query(self, batch) -> torch.Tensor:
        return self.represent(batch)

    def score_items(self, query: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return self.item_range_logits(query, self.embed.item.weight, lo, hi)
