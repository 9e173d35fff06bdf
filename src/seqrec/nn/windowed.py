"""Windowed multi-query attention (MQSA-TED, Zhu et al., WSDM 2024).

* `window_mean(x, keep, L)`: the L-query of position t, the mean of x_{t-L+1..t} over the real (non-padding)
  positions of that causal window, vectorised with a cumulative sum (no loop over positions or over L).
* `MQSABlock`: one block of the official TensorFlow code, built from MultiHeadAttention and FeedForward:
      q_in = LN(q);  o = Attn(Q = q_in, K = V = x) + q_in;  o = LN(o);
      o = o + Dropout(W2 Dropout(ReLU(W1 o)));  o *= mask
  (no output projection in the attention; the query is normalised but keys / values are not; FFN width d).
  With q = x it is the official SASRec block (the short-query tower), with q = window_mean(x) the long-query one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.nn.attention import MultiHeadAttention
from seqrec.nn.dropout import Dropout
from seqrec.nn.transformer import FeedForward


def window_mean(x: torch.Tensor, keep: torch.Tensor, window: int) -> torch.Tensor:
    """[B, T, d] causal window means: out[b, t] = mean of x[b, s] over s in [t - window + 1, t] with keep[b, s].

    keep [B, T] (bool or 0/1) marks real items; positions whose window holds no real item get 0.
    window = 1 returns x * keep."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    m = keep.to(x.dtype).unsqueeze(-1)                    # [B, T, 1]
    if window == 1:
        return x * m
    xm = x * m
    # prefix sums with a leading zero: S[t + 1] - S[t + 1 - window] = sum over the window ending at t
    cs = F.pad(torch.cumsum(xm, dim=1), (0, 0, 1, 0))     # [B, T + 1, d]
    cm = F.pad(torch.cumsum(m, dim=1), (0, 0, 1, 0))      # [B, T + 1, 1]
    t = x.shape[1]
    hi = torch.arange(1, t + 1, device=x.device)
    lo = (hi - window).clamp(min=0)
    total = cs[:, hi] - cs[:, lo]
    count = cm[:, hi] - cm[:, lo]
    return total / count.clamp(min=1.0)


class MQSABlock(nn.Module):
    """One (multi-)query self-attention block of MQSA-TED (see the module docstring).

    forward(x, mask, keep, query=None): x [B, T, d] keys/values (and the query when `query` is None), mask the
    boolean attention mask [B, 1, T, T] (attention_mask(keep, causal=True)) or None for plain causal attention
    (SDPA's is_causal; the same outputs at the real positions of right-padded rows, whose keys s <= t are all
    real), keep [B, T] real items. `query` is [B, T, d] like x (one query per position), so is_causal applies."""

    def __init__(self, d: int, heads: int, dropout: float, attn_dropout: float, inner: int | None = None,
                 ln_eps: float = 1e-8):
        super().__init__()
        self.norm_q = nn.LayerNorm(d, eps=ln_eps)
        self.attn = MultiHeadAttention(d, heads, attn_dropout, bias=True, out_proj=False)
        self.norm_o = nn.LayerNorm(d, eps=ln_eps)
        self.ffn = FeedForward(d, inner or d, dropout, "relu")
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, keep: torch.Tensor,
                query: torch.Tensor | None = None) -> torch.Tensor:
        q_in = self.norm_q(x if query is None else query)
        o = self.norm_o(self.attn(q_in, x, mask, is_causal=mask is None) + q_in)
        o = o + self.drop(self.ffn(o))
        return o * keep.unsqueeze(-1).to(o.dtype)
