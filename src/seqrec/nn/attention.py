"""Multi-head attention whose queries and keys may differ (the windowed multi-query attention of MQSA-TED feeds
a window mean as query), and the padding / causal masks.

Attention runs through F.scaled_dot_product_attention. Causal attention over right-padded sequences passes
is_causal=True and no mask: a real query t only has real keys s <= t, so the plain causal mask equals the padding
& causal one at every real position, and fused (flash) kernels can be used. Bidirectional attention passes the
broadcastable key-padding mask [B, 1, 1, T] rather than an expanded [B, 1, T, T] one."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.nn.dropout import dropout_mask


def attention_mask(key_padding: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean mask [B, 1, T, T], True where query t may attend to key s: s is a real item (and s <= t if causal).

    With right padding every query row keeps key 0 (a real item), so no row is fully masked."""
    b, t = key_padding.shape
    mask = key_padding[:, None, None, :].expand(b, 1, t, t)
    if causal:
        mask = mask & torch.ones(t, t, dtype=torch.bool, device=key_padding.device).tril()[None, None]
    return mask


def key_padding_mask(key_padding: torch.Tensor) -> torch.Tensor:
    """Boolean mask [B, 1, 1, T], True at the real keys; it broadcasts over heads and queries."""
    return key_padding[:, None, None, :]


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

    def forward(self, query: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        """query [B, Tq, d], kv [B, Tk, d] -> [B, Tq, d].

        mask: boolean, broadcastable to [B, 1, Tq, Tk], True where a query may attend to a key (None: all keys).
        is_causal: query t attends to keys s <= t (no mask allowed with it). Only for Tq == Tk: SDPA aligns its
        causal mask to the top-left corner, which is not "s <= t" for queries that are a suffix of the keys."""
        b, t, d = query.shape
        h = self.heads
        if is_causal and (mask is not None or t != kv.shape[1]):
            raise ValueError("is_causal needs mask=None and as many queries as keys")

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, -1, h, d // h).transpose(1, 2)

        q, k, v = split(self.q(query)), split(self.k(kv)), split(self.v(kv))
        p = self.attn_dropout if self.training else 0.0
        if p > 0 and q.device.type == "cpu":
            y = _attention_with_dropout(q, k, v, mask, is_causal, p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


def _attention_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                            is_causal: bool, p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(dh) masked) with dropout p on the probabilities, times v: what SDPA computes on a CPU
    in training (no fused CPU kernel takes dropout, so SDPA runs this math too), but with the rand-based dropout
    mask: SDPA draws it with bernoulli_, which took 17% of a SASRec Beauty step here (46 ms for [256, 2, 50, 50])."""
    scores = q @ k.transpose(-2, -1) * (q.shape[-1] ** -0.5)
    if is_causal:
        t = scores.shape[-1]
        mask = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return (probs * dropout_mask(probs, p)) @ v
