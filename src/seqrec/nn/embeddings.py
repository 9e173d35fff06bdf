"""Item + position embedding of right-padded sequences."""
from __future__ import annotations

import math

import torch
from torch import nn

from seqrec.nn.dropout import Dropout


def position_ids(lengths: torch.Tensor, width: int, max_len: int, from_end: bool) -> torch.Tensor:
    """[B, width] position ids of right-padded rows.

    from_end=False: the t-th item of a row has position t (RecBole / MCLRec: sequences aligned at the start).
    from_end=True: the last real item has position max_len - 1, the one before max_len - 2, ... (identical to
    the slot index of a left-padded max_len window, as in BERT4Rec, EMKD and MQSA-TED). Padding gets 0.
    """
    t = torch.arange(width, device=lengths.device)[None, :]
    if not from_end:
        return t.expand(lengths.shape[0], width)
    pos = max_len - lengths[:, None] + t
    return torch.where(t < lengths[:, None], pos, torch.zeros_like(pos)).clamp_(min=0)


class SequenceEmbedding(nn.Module):
    """x = dropout(norm(E[items] * scale + P[positions])), padding rows zeroed.

    Which rows count as padding: by default those with item id 0; `forward(..., keep=...)` overrides this (CL4SRec /
    MCLRec keep masked items, id 0 inside the sequence, as norm(E[0] + P[t]) like the official RecBole model; E[0], the
    padding row, is N(0, std)-initialised like every row by the models' init and gets no gradient from the lookup).

    layer_norm: apply LayerNorm after the sum (SASRec/RecBole) or not (BERT4Rec).
    scale_by_sqrt_d: multiply item embeddings by sqrt(d) (pmixer SASRec, MQSA-TED).
    """

    def __init__(self, n_tokens: int, max_len: int, d: int, dropout: float, layer_norm: bool = True,
                 scale_by_sqrt_d: bool = False, positions_from_end: bool = False, ln_eps: float = 1e-12):
        super().__init__()
        self.item = nn.Embedding(n_tokens, d, padding_idx=0)
        self.position = nn.Embedding(max_len, d)
        self.norm = nn.LayerNorm(d, eps=ln_eps) if layer_norm else nn.Identity()
        self.dropout = Dropout(dropout)
        self.scale = math.sqrt(d) if scale_by_sqrt_d else 1.0
        self.max_len = max_len
        self.positions_from_end = positions_from_end

    def forward(self, items: torch.Tensor, lengths: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """items [B, T] right-padded, lengths [B]; keep [B, T] bool: rows left non-zero (default items != 0)."""
        if items.shape[1] > self.max_len:
            raise ValueError(f"sequence of width {items.shape[1]} exceeds max_len {self.max_len}")
        pos = position_ids(lengths, items.shape[1], self.max_len, self.positions_from_end)
        x = self.item(items) * self.scale + self.position(pos)
        x = self.dropout(self.norm(x))
        keep = items != 0 if keep is None else keep
        return x * keep.unsqueeze(-1).to(x.dtype)
