"""The model protocol on the three base models: loss terms, score shape and padding column, causality, the cloze
rule's proportions, and SASRec's all-positions loss = the mean of per-prefix losses."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqrec.config import load_config
from seqrec.data.batch import build_examples, causal_batch, history_batch, span_batch
from seqrec.data.masking import cloze_mask
from seqrec.models import DatasetInfo, build_model

TINY = {"sasrec": ["model.d=16", "model.layers=2", "model.heads=2", "model.inner=32", "model.max_len=12"],
        "bert4rec": ["model.d=16", "model.layers=2", "model.heads=2", "model.inner=32", "model.max_len=12"],
        "gru4rec": ["model.d=16", "model.hidden=24", "model.max_len=12"]}


def make(name: str, n_items: int, *extra: str, seed: int = 0):
    torch.manual_seed(seed)
    cfg = load_config(None, [f"model.name={name}"] + TINY[name] + list(extra))
    return build_model(cfg.model, DatasetInfo(n_items))


def train_batch(model, split, n: int = 24, mode: str = "sequence"):
    ex = build_examples(split, mode, model.span_len, min_len=2 if model.objective == "causal" else 1)
    idx = np.arange(min(n, len(ex)))
    maker = causal_batch if model.objective == "causal" else span_batch
    return maker(split.data.items, ex, idx)


@pytest.mark.parametrize("name", ["sasrec", "bert4rec", "gru4rec"])
def test_loss_terms_and_score_shape(synthetic_split, name):
    split = synthetic_split
    model = make(name, split.n_items)
    assert model.name == name and model.objective in ("causal", "cloze")
    batch = train_batch(model, split)
    if model.objective == "causal":
        assert batch.targets is not None
    terms = model.loss(batch)
    assert "loss" in terms and len(terms) >= 2, f"named terms missing: {list(terms)}"
    assert terms["loss"].requires_grad and terms["loss"].dim() == 0
    for k, v in terms.items():
        assert torch.isfinite(v), k
        if k != "loss":
            assert not v.requires_grad, f"{k} is logged: it should be a detached copy"
    # an untrained model predicts roughly uniformly: CE near log(n_items)
    assert abs(float(terms["loss"].detach()) - math.log(split.n_items)) < 1.0

    starts, lengths, _ = split.eval_inputs("test")
    hb = history_batch(split.data.items, starts[:9], lengths[:9], model.history_len)
    model.eval()
    with torch.no_grad():
        s = model.score(hb)
    assert s.shape == (9, split.n_items + 1)
    assert torch.isneginf(s[:, 0]).all()
    assert torch.isfinite(s[:, 1:]).all()

    # one training step moves the weights and the loss goes down on the same batch after a few steps
    model.train()
    opt = model.configure_optimizers(load_config(None, ["train.lr=0.01"]).train)[0]
    torch.manual_seed(1)

    def step() -> float:         # what the trainer does for an automatic-optimisation model, in fp32
        loss = model.loss(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    first = step()
    for _ in range(15):
        last = step()
    assert last < first


def encode(model, items: torch.Tensor) -> torch.Tensor:
    lengths = (items != 0).sum(1)
    with torch.no_grad():
        return model.encode(items, lengths)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_causal_models_do_not_look_ahead(name):
    model = make(name, 30).eval()
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, 31, (4, 10), generator=g)
    base = encode(model, items)
    for j in (3, 9):
        changed = items.clone()
        changed[:, j] = (changed[:, j] % 30) + 1
        out = encode(model, changed)
        assert torch.allclose(out[:, :j], base[:, :j], atol=1e-6), f"position < {j} changed"
        assert not torch.allclose(out[:, j], base[:, j], atol=1e-4), "the changed position itself must change"
    # right padding does not change the real positions either
    padded = torch.nn.functional.pad(items, (0, 2))
    assert torch.allclose(encode(model, padded)[:, :10], base, atol=1e-6)


def test_bert4rec_is_bidirectional():
    """The counter-check: the same probe sees a bidirectional model look ahead."""
    model = make("bert4rec", 30).eval()
    items = torch.randint(1, 31, (4, 10), generator=torch.Generator().manual_seed(0))
    changed = items.clone()
    changed[:, 9] = (changed[:, 9] % 30) + 1
    assert not torch.allclose(encode(model, changed)[:, :9], encode(model, items)[:, :9], atol=1e-4)


def test_cloze_mask_proportions():
    g = torch.Generator().manual_seed(0)
    n_items, mask_token = 1000, 1001
    lengths = torch.randint(1, 51, (4000,), generator=g)
    items = torch.randint(1, n_items + 1, (4000, 50), generator=g)
    items[torch.arange(50)[None, :] >= lengths[:, None]] = 0
    masked, labels = cloze_mask(items, lengths, 0.15, mask_token, n_items, generator=g)
    real = items != 0
    chosen = labels != 0
    assert not (chosen & ~real).any()                                  # padding is never chosen
    assert torch.equal(labels[chosen], items[chosen])                  # labels are the original items
    assert torch.equal(masked[~chosen], items[~chosen])                # unchosen items stay as they are
    frac = chosen.sum().item() / real.sum().item()
    assert abs(frac - 0.15) < 0.005, frac
    n = chosen.sum().item()
    to_mask = (masked == mask_token) & chosen
    randomised = (masked != mask_token) & (masked != items) & chosen
    kept = (masked == items) & chosen                 # includes the rare random pick of the original item
    assert abs(to_mask.sum().item() / n - 0.8) < 0.015
    assert abs(randomised.sum().item() / n - 0.1) < 0.01
    assert abs(kept.sum().item() / n - 0.1) < 0.01
    assert ((masked[randomised] >= 1) & (masked[randomised] <= n_items)).all()
    assert not (masked == mask_token)[~chosen].any()


def test_sasrec_sequence_loss_is_mean_of_prefix_losses(synthetic_split):
    """'sequence' examples (every position supervised) and per-prefix examples give the same targets: the
    all-positions CE equals the mean CE of each prefix run on its own (eval mode, no dropout)."""
    split = synthetic_split
    model = make("sasrec", split.n_items, "model.max_len=60").eval()     # every training part fits in one span
    assert split.train_length.max() <= model.span_len
    users = np.arange(12)
    seq = build_examples(split, "sequence", model.span_len, min_len=2)
    keep = np.flatnonzero(np.isin(seq.users, users))
    with torch.no_grad():
        all_positions = float(model.loss(causal_batch(split.data.items, seq, keep))["loss"])
    per_prefix = []
    with torch.no_grad():
        for i in keep:
            span = split.data.items[seq.starts[i]:seq.starts[i] + seq.lengths[i]]
            for p in range(1, len(span)):
                b = history_batch(span, np.array([0]), np.array([p]), model.history_len)
                logits = model.score(b)[0, 1:]
                per_prefix.append(float(-F.log_softmax(logits.double(), -1)[span[p] - 1]))
    assert len(per_prefix) == sum(int(split.train_length[u]) - 1 for u in users if split.train_length[u] >= 2)
    assert all_positions == pytest.approx(float(np.mean(per_prefix)), rel=1e-5)
    # and the 'prefix' examples batched by the library give the same number
    pre = build_examples(split, "prefix", model.span_len, min_len=2)
    pk = np.flatnonzero(np.isin(pre.users, users))
    with torch.no_grad():
        prefix_loss = float(model.loss(causal_batch(split.data.items, pre, pk))["loss"])
    assert prefix_loss == pytest.approx(all_positions, rel=1e-5)


@pytest.mark.parametrize("causal,norm_first,ligr", [(True, False, False), (False, True, False), (True, True, True)])
def test_encoder_only_positions_equal_full_outputs_and_gradients(causal, norm_first, ligr):
    """TransformerEncoder(only=...) computes the last block for one query per row: same outputs and gradients
    (w.r.t. the input and every parameter) as the full encoder read at those positions."""
    from seqrec.nn import TransformerEncoder
    torch.manual_seed(0)
    extra = dict(activation="swiglu", gated=True, final_norm=True) if ligr else {}
    enc = TransformerEncoder(2, 16, 2, 32, 0.0, 0.0, causal=causal, norm_first=norm_first, **extra).double()
    lengths = torch.tensor([7, 3, 1, 5, 6])
    padding = torch.arange(7)[None] < lengths[:, None]
    x = torch.randn(5, 7, 16, dtype=torch.double, requires_grad=True)
    weight = torch.randn(5, 16, dtype=torch.double)
    params = [x, *enc.parameters()]
    for only in (lengths - 1, torch.tensor([2, 0, 0, 4, 1])):
        full = enc(x, padding)[torch.arange(5), only]
        part = enc(x, padding, only=only)
        assert part.shape == (5, 16)
        assert torch.allclose(part, full, atol=1e-12)
        g_full = torch.autograd.grad((full * weight).sum(), params)
        g_part = torch.autograd.grad((part * weight).sum(), params)
        for a, b in zip(g_full, g_part):
            assert torch.allclose(a, b, atol=1e-10)


def test_batch_describes_where_its_targets_are():
    from seqrec.data.batch import Batch
    items = torch.tensor([[3, 4, 5], [6, 7, 0]])
    lengths = torch.tensor([3, 2])
    prefix = Batch(items, lengths, torch.tensor([[0, 0, 9], [0, 8, 0]]))
    assert prefix.targets_at == "last"
    assert prefix.target_index.tolist() == [2, 4] and prefix.target_items.tolist() == [9, 8]
    every = Batch(items, lengths, torch.tensor([[4, 5, 9], [7, 8, 0]]))       # 'sequence' examples
    assert every.targets_at == "every" and every.target_index.tolist() == [0, 1, 2, 3, 4]
    elsewhere = Batch(items, lengths, torch.tensor([[0, 9, 0], [0, 8, 0]]))   # one target, not at the end
    assert elsewhere.targets_at == "every" and elsewhere.target_index.tolist() == [1, 4]
    assert Batch(items, lengths).targets_at == "none"
