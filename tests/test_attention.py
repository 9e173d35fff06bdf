"""Attention through F.scaled_dot_product_attention (is_causal / key-padding masks) gives the outputs of the old
explicit boolean [B, 1, T, T] mask. The reference is an independent naive softmax(Q K^T / sqrt(dh)) V with that
mask, swapped in for MultiHeadAttention.forward while the same blocks run with attention_mask(...)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from seqrec.models import DatasetInfo, build_model, model_config_from_dict
from seqrec.nn import MultiHeadAttention, TransformerEncoder, attention_mask, key_padding_mask

ATOL = 1e-5


def naive_attention(self: MultiHeadAttention, query, kv, mask=None, is_causal=False):
    """Reference MultiHeadAttention.forward: explicit scores, boolean mask (True = may attend), softmax."""
    assert mask is not None and not is_causal, "the reference runs with the explicit old mask only"
    b, tq, d = query.shape
    h = self.heads
    q, k, v = (lin(z).view(b, -1, h, d // h).transpose(1, 2) for lin, z in ((self.q, query), (self.k, kv),
                                                                             (self.v, kv)))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return self.out((probs @ v).transpose(1, 2).reshape(b, tq, d))


@pytest.fixture
def naive(monkeypatch):
    """Calling naive() makes every MultiHeadAttention use the reference (for the rest of the test)."""
    return lambda: monkeypatch.setattr(MultiHeadAttention, "forward", naive_attention)


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Records (attn_mask shape or None, is_causal) of every scaled_dot_product_attention call."""
    calls, sdpa = [], F.scaled_dot_product_attention

    def spy(*args, attn_mask=None, is_causal=False, **kw):
        calls.append((None if attn_mask is None else tuple(attn_mask.shape), is_causal))
        return sdpa(*args, attn_mask=attn_mask, is_causal=is_causal, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return calls


def right_padded_batch(seed=0, b=6, t=9, d=16):
    """x [B, T, d], padding [B, T] with varied lengths (a full row and a length-1 row among them), lengths [B]."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.cat([torch.tensor([t, 1]), torch.randint(1, t + 1, (b - 2,), generator=g)])
    padding = torch.arange(t)[None, :] < lengths[:, None]
    return torch.randn(b, t, d, generator=g), padding, lengths


def reference_encoder(enc: TransformerEncoder, x, padding, mask):
    """enc's blocks run with an explicit mask (call under `naive`), every position's output."""
    keep = padding.unsqueeze(-1).to(x.dtype)
    for block in enc.blocks:
        x = block(x, mask) * keep
    return x


def make_encoder(causal: bool, norm_first: bool) -> TransformerEncoder:
    torch.manual_seed(0)
    return TransformerEncoder(2, 16, 2, 32, 0.1, 0.1, causal=causal, norm_first=norm_first).eval()


@pytest.mark.parametrize("causal,norm_first", [(True, False), (False, True)])
def test_encoder_matches_old_mask(causal, norm_first, naive, sdpa_calls):
    enc = make_encoder(causal, norm_first)
    x, padding, lengths = right_padded_batch()
    b, t = padding.shape
    rows = torch.arange(b)
    with torch.no_grad():
        out = enc(x, padding)
        picks = (lengths - 1, torch.randint(0, t, (b,), generator=torch.Generator().manual_seed(1)) % lengths)
        onlys = [enc(x, padding, only=only) for only in picks]
    # no [B, 1, T, T] mask: is_causal without a mask, or the broadcastable key-padding mask
    expected = (None, True) if causal else ((b, 1, 1, t), False)
    assert sdpa_calls[:len(enc.blocks)] == [expected] * len(enc.blocks)
    assert all(shape[-2:] != (t, t) for shape, _ in sdpa_calls if shape is not None)
    assert torch.isfinite(out).all()
    naive()
    with torch.no_grad():
        ref = reference_encoder(enc, x, padding, attention_mask(padding, causal))
    torch.testing.assert_close(out[padding], ref[padding], atol=ATOL, rtol=0)
    assert (out[~padding] == 0).all()
    for only, part in zip(picks, onlys):              # only=: lengths - 1 and arbitrary kept positions
        torch.testing.assert_close(part, ref[rows, only], atol=ATOL, rtol=0)


def test_explicit_attn_mask_kept(naive):
    """CL4SRec-style views: items hidden as keys inside the sequence, a query without keys falls back to its
    prefix; the given [B, 1, T, T] mask is used as it is (full output and only=)."""
    enc = make_encoder(True, False)
    x, inside, lengths = right_padded_batch(seed=2)
    hidden = torch.rand(inside.shape, generator=torch.Generator().manual_seed(3)) < 0.3
    hidden[:, 0] = True                               # position 0 of every row hidden: exercises the fallback
    allowed = attention_mask(inside & ~hidden, causal=True)
    mask = allowed | (~allowed.any(-1, keepdim=True) & attention_mask(inside, causal=True))
    rows = torch.arange(len(lengths))
    with torch.no_grad():
        out = enc(x, inside, attn_mask=mask)
        last = enc(x, inside, attn_mask=mask, only=lengths - 1)
    naive()
    with torch.no_grad():
        ref = reference_encoder(enc, x, inside, mask)
    torch.testing.assert_close(out[inside], ref[inside], atol=ATOL, rtol=0)
    torch.testing.assert_close(last, ref[rows, lengths - 1], atol=ATOL, rtol=0)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 0.0])
def test_mqsa_ted_encode_matches_old_mask(alpha, naive, sdpa_calls, monkeypatch):
    cfg = model_config_from_dict({"name": "mqsa_ted", "d": 16, "heads": 2, "layers": 2, "max_len": 9,
                                  "window": 3, "alpha": alpha, "lambda_kd": 0.0})
    cfg.validate()
    torch.manual_seed(0)
    m = build_model(cfg, DatasetInfo(30)).eval()
    _, keep, lengths = right_padded_batch(seed=4)
    items = torch.randint(1, 31, keep.shape, generator=torch.Generator().manual_seed(5)) * keep
    import seqrec.models.mqsa_ted as mq

    def no_dense_mask(*args, **kw):
        raise AssertionError("the causal path builds no [B, 1, T, T] mask")

    # raising=False: the check stays valid if the module stops importing attention_mask at all
    monkeypatch.setattr(mq, "attention_mask", no_dense_mask, raising=False)
    with torch.no_grad():
        h = m.encode(items, lengths)
    assert sdpa_calls and all(call == (None, True) for call in sdpa_calls)
    monkeypatch.undo()                                # restores attention_mask (and the SDPA spy)
    naive()
    mask = attention_mask(keep, causal=True)
    with torch.no_grad():
        x = m.embed(items, lengths)
        towers = [(w, tower(x, mask, keep)) for w, tower in ((alpha, m.short), (1 - alpha, m.long)) if tower]
        ref = sum(w * out for w, out in towers)
    torch.testing.assert_close(h[keep], ref[keep], atol=ATOL, rtol=0)


def test_multi_head_attention_causal_flag():
    torch.manual_seed(6)
    mha = MultiHeadAttention(8, 2, 0.0).eval()
    q, kv = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    tril = torch.ones(5, 5, dtype=torch.bool).tril()[None, None]
    with torch.no_grad():
        torch.testing.assert_close(mha(q, kv, is_causal=True), naive_attention(mha, q, kv, tril.expand(3, 1, 5, 5)),
                                   atol=ATOL, rtol=0)
        padding = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
        torch.testing.assert_close(mha(q, kv, key_padding_mask(padding)),
                                   naive_attention(mha, q, kv, attention_mask(padding, causal=False)),
                                   atol=ATOL, rtol=0)
    with pytest.raises(ValueError):
        mha(q[:, :1], kv, is_causal=True)             # SDPA would align one query to key 0, not to the last key
    with pytest.raises(ValueError):
        mha(q, kv, tril, is_causal=True)


@pytest.mark.parametrize("kind", ["causal", "key_padding", "explicit"])
def test_cpu_attention_dropout_path_matches_sdpa_without_dropout_and_is_unbiased(kind, monkeypatch):
    """On the CPU, training-mode attention dropout runs seqrec's math path (rand-based mask instead of SDPA's
    bernoulli_). With the mask forced to ones it is SDPA without dropout; with p = 0.5 its mean over many draws is
    the no-dropout output (inverted dropout is unbiased)."""
    import seqrec.nn.attention as attention
    g = torch.Generator().manual_seed(3)
    b, h, t, dh = 3, 2, 5, 4
    q, k, v = (torch.randn(b, h, t, dh, generator=g) for _ in range(3))
    padding = torch.arange(t)[None, :] < torch.tensor([5, 3, 1])[:, None]
    mask, causal = {"causal": (None, True), "key_padding": (key_padding_mask(padding), False),
                    "explicit": (attention_mask(padding, causal=True), False)}[kind]
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    with monkeypatch.context() as m:
        m.setattr(attention, "dropout_mask", lambda x, p: torch.ones_like(x))
        torch.testing.assert_close(attention._attention_with_dropout(q, k, v, mask, causal, 0.5), reference)
    torch.manual_seed(0)
    draws = torch.stack([attention._attention_with_dropout(q, k, v, mask, causal, 0.5) for _ in range(4000)])
    standard_error = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - reference).abs() <= 5 * standard_error + 1e-6).all()
    assert (draws.std(0) > 0).any()                      # it did drop something


def test_ligr_encoder_matches_a_reference_written_from_primitives(naive):
    """gated=True (LiGR, eSASRec's layer) with a SwiGLU feed-forward and a final LayerNorm, against the layer
    written out by hand from the module's weights: h = x + sigmoid(G1 x) * attn(LN1 x);
    out = h + sigmoid(G2 h) * W2(silu(a) * b), [a, b] = W1 LN2(h); LN_final at the end; padding rows 0."""
    torch.manual_seed(0)
    enc = TransformerEncoder(2, 16, 2, 24, 0.0, 0.0, causal=True, activation="swiglu", norm_first=True,
                             gated=True, final_norm=True).double().eval()
    for p in enc.parameters():            # non-trivial biases and norm affines, so every term is exercised
        torch.nn.init.normal_(p, 0.0, 0.3)
    x, padding, lengths = right_padded_batch(seed=4)
    x = x.double()
    with torch.no_grad():
        out = enc(x, padding)
        last = enc(x, padding, only=lengths - 1)
    naive()
    mask = attention_mask(padding, True)
    keep = padding.unsqueeze(-1).double()

    def ln(norm, v):
        mu = v.mean(-1, keepdim=True)
        var = ((v - mu) ** 2).mean(-1, keepdim=True)
        return (v - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

    def lin(layer, v):
        return v @ layer.weight.T + layer.bias

    ref = x
    with torch.no_grad():
        for blk in enc.blocks:
            n1 = ln(blk.norm1, ref)
            h = ref + torch.sigmoid(lin(blk.gate1, ref)) * blk.attn(n1, n1, mask)
            a, b = lin(blk.ffn.fc1, ln(blk.norm2, h)).split(24, dim=-1)
            f = lin(blk.ffn.fc2, a * torch.sigmoid(a) * b)
            ref = (h + torch.sigmoid(lin(blk.gate2, h)) * f) * keep
        ref = ln(enc.final_norm, ref) * keep
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(last, ref[torch.arange(len(lengths)), lengths - 1], atol=1e-10, rtol=0)


def test_gated_residuals_need_pre_ln():
    with pytest.raises(ValueError, match="norm_first"):
        TransformerEncoder(1, 16, 2, 32, 0.0, 0.0, causal=True, gated=True)
