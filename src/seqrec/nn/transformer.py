"""Transformer block and encoder: post-LN (SASRec/RecBole), pre-LN (BERT4Rec/EMKD) or LiGR's gated pre-LN (eSASRec)
as switches."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.nn.dropout import Dropout

from seqrec.nn.attention import MultiHeadAttention, key_padding_mask

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}
FFN_ACTIVATIONS = (*ACTIVATIONS, "swiglu")


class SwiGLU(nn.Module):
    """silu(a) * b for the two halves [a, b] of the last dimension (Shazeer 2020, "GLU variants")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=-1)
        return F.silu(a) * b


class FeedForward(nn.Module):
    """fc2(dropout(act(fc1(x)))), width `inner`. activation 'swiglu': fc1 maps to 2 * inner (value and gate
    halves) and act is SwiGLU, so the hidden width is still `inner` (LiGR / eSASRec's feed-forward, with biases)."""

    def __init__(self, d: int, inner: int, dropout: float, activation: str = "gelu"):
        super().__init__()
        if activation not in FFN_ACTIVATIONS:
            raise ValueError(f"activation must be one of {FFN_ACTIVATIONS}, got {activation!r}")
        glu = activation == "swiglu"
        self.fc1 = nn.Linear(d, 2 * inner if glu else inner)
        self.act = SwiGLU() if glu else ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(inner, d)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class TransformerBlock(nn.Module):
    """Self-attention + feed-forward with residuals.

    norm_first=False (post-LN): x = LN(x + drop(attn(x))); x = LN(x + drop(ffn(x)))
    norm_first=True  (pre-LN):  x = x + drop(attn(LN(x))); x = x + drop(ffn(LN(x)))
    gated=True (LiGR, arXiv 2502.03417, the layer eSASRec uses; needs norm_first): each residual branch is scaled by a
    learned gate of the residual stream, x = x + sigmoid(G1 x) * drop(attn(LN(x))); x = x + sigmoid(G2 x) *
    drop(ffn(LN(x))) (G1, G2: d x d Linear layers with bias).
    `query` (optional) replaces x as the attention query (keys and values stay x); its residual is the query.
    `mask` / `is_causal` are MultiHeadAttention's (is_causal only with query=None).
    """

    def __init__(self, d: int, heads: int, inner: int, dropout: float, attn_dropout: float,
                 activation: str = "gelu", norm_first: bool = False, ln_eps: float = 1e-12, gated: bool = False):
        super().__init__()
        if gated and not norm_first:
            raise ValueError("gated (LiGR) residuals need norm_first=True")
        self.attn = MultiHeadAttention(d, heads, attn_dropout)
        self.ffn = FeedForward(d, inner, dropout, activation)
        self.norm1 = nn.LayerNorm(d, eps=ln_eps)
        self.norm2 = nn.LayerNorm(d, eps=ln_eps)
        self.drop1 = Dropout(dropout)
        self.drop2 = Dropout(dropout)
        self.norm_first = norm_first
        self.gate1 = nn.Linear(d, d) if gated else None
        self.gate2 = nn.Linear(d, d) if gated else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, query: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        q = x if query is None else query
        if self.norm_first:
            qn = self.norm1(q)
            kv = qn if query is None else self.norm1(x)
            a = self.drop1(self.attn(qn, kv, mask, is_causal))
            h = q + (a if self.gate1 is None else torch.sigmoid(self.gate1(q)) * a)
            f = self.drop2(self.ffn(self.norm2(h)))
            return h + (f if self.gate2 is None else torch.sigmoid(self.gate2(h)) * f)
        h = self.norm1(q + self.drop1(self.attn(q, x, mask, is_causal)))
        return self.norm2(h + self.drop2(self.ffn(h)))


class TransformerEncoder(nn.Module):
    """A stack of TransformerBlocks over right-padded sequences; padding outputs are zeroed.

    final_norm: a LayerNorm on the last block's outputs (what pre-LN stacks usually end with: the original SASRec,
    RecTools' SASRec and eSASRec; a pre-LN block's output is otherwise an unnormalised residual sum)."""

    def __init__(self, n_layers: int, d: int, heads: int, inner: int, dropout: float, attn_dropout: float,
                 causal: bool, activation: str = "gelu", norm_first: bool = False, ln_eps: float = 1e-12,
                 gated: bool = False, final_norm: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(d, heads, inner, dropout, attn_dropout, activation,
                                                     norm_first, ln_eps, gated) for _ in range(n_layers))
        self.causal = causal
        self.final_norm = nn.LayerNorm(d, eps=ln_eps) if final_norm else None

    def forward(self, x: torch.Tensor, padding: torch.Tensor, attn_mask: torch.Tensor | None = None,
                only: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, d], padding [B, T] True at positions whose outputs are kept (real items).
        attn_mask [B, 1, T, T] (True = may attend) replaces the default padding (+ causal) mask, e.g. for
        CL4SRec's masked views whose hidden items are not keys but keep their outputs.
        only [B] (optional): return just the output at position only[b] of each row, [B, d] (a kept position).
        The last block then runs its query, feed-forward and norms for that one position (its keys and values
        still come from every position), which is the same function at a fraction of the last block's cost:
        what a model needs when only the last position is scored (prefix training examples, ranking).

        Without attn_mask no [B, 1, T, T] mask is built: a causal encoder uses SDPA's is_causal (the sequences are
        right-padded, so every key s <= t of a real query t is real and the padding part of the mask changes
        nothing at kept positions; padding rows may differ but are zeroed), a bidirectional one the key-padding
        mask [B, 1, 1, T]."""
        is_causal = attn_mask is None and self.causal
        if attn_mask is not None:
            mask = attn_mask
        else:
            mask = None if self.causal else key_padding_mask(padding)
        keep = padding.unsqueeze(-1).to(x.dtype)
        blocks = list(self.blocks)
        if only is not None and blocks:
            blocks, last = blocks[:-1], blocks[-1]
        for block in blocks:
            x = block(x, mask, is_causal=is_causal) * keep
        if only is None:
            return x if self.final_norm is None else self.final_norm(x) * keep
        rows = torch.arange(x.shape[0], device=x.device)
        if len(blocks) == len(self.blocks):          # no blocks at all
            return self._final(x[rows, only])
        query = x[rows, only].unsqueeze(1)                   # [B, 1, d]
        # [B, 1, 1, T]: that query's row of the (padding & causal, or given) mask
        if attn_mask is not None:
            query_mask = attn_mask[rows, 0, only][:, None, None, :]
        elif self.causal:     # keys s <= only[b]; is_causal would align a single query to key 0
            before = torch.arange(x.shape[1], device=x.device)[None, :] <= only[:, None]
            query_mask = key_padding_mask(padding & before)
        else:
            query_mask = key_padding_mask(padding)
        return self._final(last(x, query_mask, query=query).squeeze(1))

    def _final(self, h: torch.Tensor) -> torch.Tensor:
        return h if self.final_norm is None else self.final_norm(h)
