"""Multi-head attention whose queries and keys may differ (the windowed multi-query attention of MQSA-TED feeds
a window mean as query), and the padding / causal mask."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention_mask(key_padding: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean mask [B, 1, T, T], True where query t may attend to key s: s is a real item (and s <= t if causal).

    With right padding every query row keeps key 0 (a real item), so no row is fully masked."""
    b, t = key_padding.shape
    mask = key_padding[:, None, None, :].expand(b, 1, t, t)
    if causal:
        mask = mask & torch.ones(t, t, dtype=torch.bool, device=key_padding.device).tril()[None, None]
    return mask


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention over `heads` heads with separate query / key-value inputs."""

    def __init__(self, d: int, heads: int, attn_dropout: float, bias: bool = True, out_proj: bool = True):
        super().__init__()
        if d % heads:
            raise ValueError(f"hidden size {d} is not divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(d, d, bias=bias)
        self.k = nn.Linear(d, d, bias=bias)
        self.v = nn.Linear(d, d, bias=bias)
        # out_proj=False: no output projection (the TensorFlow SASRec / MQSA-TED attention returns A V directly)
        self.out = nn.Linear(d, d, bias=bias) if out_proj else nn.Identity()
        self.attn_dropout = attn_dropout

    def forward(self, query: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = query.shape
        h = self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, -1, h, d // h).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q(query)), split(self.k(kv)), split(self.v(kv)),
                                           attn_mask=mask, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, d))
