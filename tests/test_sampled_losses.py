"""The sampled item losses (model.loss = sampled_softmax | gbce) against naive float64 loops for fixed negatives,
values and gradients; the negative samplers' statistics; the default CE unchanged; models training with each loss;
the config checks. The loss keys (LossConfig) are in seqrec.models.base, the losses in seqrec.losses."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from seqrec.config import load_config, model_config_from_dict
from seqrec.errors import ConfigError
from seqrec.losses import (NegativeSampler, gbce_beta, gbce_loss, gbce_shift, item_cross_entropy, item_loss,
                           sampled_softmax_loss)
from seqrec.models import DatasetInfo, build_model


def make_inputs(bias: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n, d = 12, 5
    h = torch.randn(7, d, generator=g, dtype=torch.float64).float().requires_grad_()
    w = torch.randn(n + 1, d, generator=g).requires_grad_()
    b = torch.randn(n + 1, generator=g).requires_grad_() if bias else None
    y = torch.tensor([3, 1, 12, 5, 3, 7, 9])
    neg = torch.tensor([5, 2, 3, 11, 5, 8])          # 5 and 3 are targets of some rows (accidental hits), 5 twice
    return h, w, b, y, neg


# per-row negatives [K, N] for make_inputs' targets y = [3, 1, 12, 5, 3, 7, 9]: hits (twice in row 0), another row's
# target that is no hit in this row (3 in row 1), a row whose negatives are all hits (row 5), a row without hits
ROW_NEGATIVES = torch.tensor([[3, 2, 5, 3, 11],
                              [3, 2, 4, 6, 8],
                              [12, 1, 1, 10, 5],
                              [6, 7, 8, 9, 10],
                              [5, 3, 2, 4, 11],
                              [7, 7, 7, 7, 7],
                              [1, 12, 9, 2, 4]])


def negatives_of_row(neg, k):
    """Row k's negatives: neg [N] shared by all rows, or neg [K, N] per row."""
    return (neg[k] if neg.dim() == 2 else neg).tolist()


def rows_fn(w, b):
    return lambda ids: (w[ids], None if b is None else b[ids])


def logit(h, w, b, k, i):
    s = h[k].double() @ w[i].double()
    return s + b[i].double() if b is not None else s


def naive_sampled_softmax(h, w, b, y, neg, log_q):
    """Per row: -log of exp(o+) / (exp(o+) + sum over the row's negatives != target of exp(o_j)),
    o = logit - log Q."""
    vals = []
    for k in range(h.shape[0]):
        yk = int(y[k])
        pos = logit(h, w, b, k, yk) - log_q(yk)
        terms = [pos]
        for j in negatives_of_row(neg, k):
            if j != yk:
                terms.append(logit(h, w, b, k, j) - log_q(j))
        vals.append(torch.logsumexp(torch.stack(terms), 0) - pos)
    return torch.stack(vals).mean()


def naive_gbce(h, w, b, y, neg, beta, shift=0.0):
    """Per row: -1/(N + 1) [beta log sigma(s+ + c) + sum over the row's negatives != target of
    log(1 - sigma(s_j + c))], c = shift."""
    vals = []
    for k in range(h.shape[0]):
        yk = int(y[k])
        total = beta * torch.log(torch.sigmoid(logit(h, w, b, k, yk) + shift))
        row = negatives_of_row(neg, k)
        for j in row:
            if j != yk:
                total = total + torch.log(1 - torch.sigmoid(logit(h, w, b, k, j) + shift))
        vals.append(-total / (len(row) + 1))
    return torch.stack(vals).mean()


def check_against(got, ref, params):
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)
    for a, r in zip(torch.autograd.grad(got, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(a.double(), r.double(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk", [0, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_sampled_softmax_with_log_q_matches_loop(bias, chunk):
    h, w, b, y, neg = make_inputs(bias)
    q = torch.rand(13, generator=torch.Generator().manual_seed(3)) + 0.1
    q = q / q[1:].sum()                                                      # any proposal over items 1..12
    log_q = torch.log(q)
    got = sampled_softmax_loss(h, y, rows_fn(w, b), neg, log_q[y], log_q[neg], chunk_rows=chunk)
    ref = naive_sampled_softmax(h, w, b, y, neg, lambda i: float(log_q[i]))
    check_against(got, ref, [p for p in (h, w, b) if p is not None])


@pytest.mark.parametrize("chunk", [0, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_gbce_matches_loop(bias, chunk):
    h, w, b, y, neg = make_inputs(bias, seed=1)
    beta = gbce_beta(len(neg), 12, 0.75)
    got = gbce_loss(h, y, rows_fn(w, b), neg, beta, chunk_rows=chunk)
    check_against(got, naive_gbce(h, w, b, y, neg, beta), [p for p in (h, w, b) if p is not None])


@pytest.mark.parametrize("chunk", [0, 3])
@pytest.mark.parametrize("per_row", [False, True])
def test_gbce_with_a_logit_shift_matches_loop(per_row, chunk):
    h, w, b, y, neg = make_inputs(True, seed=6)
    if per_row:
        neg = ROW_NEGATIVES
    beta = gbce_beta(neg.shape[-1], 12, 0.75)
    c = gbce_shift(beta, neg.shape[-1], "equilibrium")
    assert c == pytest.approx(math.log(beta / neg.shape[-1])) and gbce_shift(beta, 5, "none") == 0.0
    got = gbce_loss(h, y, rows_fn(w, b), neg, beta, chunk_rows=chunk, shift=c)
    check_against(got, naive_gbce(h, w, b, y, neg, beta, shift=c), [h, w, b])


def test_gbce_equilibrium_shift_leaves_no_shared_gradient_at_zero_logits():
    """At initialisation-like zero logits, the equilibrium shift log(beta / N) makes the loss flat along a shift
    shared by all logits (the sum of the item-bias gradients is that derivative); without it the loss pulls every
    logit down. Negatives distinct from the targets (no accidental hits), so every row has N negative terms."""
    n_items, k, n = 40, 6, 16
    h, w = torch.zeros(k, 4), torch.randn(n_items + 1, 4)
    y = torch.arange(1, k + 1)
    neg = torch.arange(k + 1, k + 1 + n)
    beta = gbce_beta(n, n_items, 0.75)
    shared = {}
    for kind in ("equilibrium", "none"):
        b = torch.zeros(n_items + 1, requires_grad=True)
        gbce_loss(h, y, rows_fn(w, b), neg, beta, shift=gbce_shift(beta, n, kind)).backward()
        shared[kind] = float(b.grad.sum())
    assert abs(shared["equilibrium"]) < 1e-6
    # (N sigma(0) - beta sigma(0)) / (N + 1) per row, mean over rows: all logits pushed down
    assert shared["none"] == pytest.approx((n - beta) * 0.5 / (n + 1), rel=1e-5)


def test_gbce_learns_with_the_equilibrium_shift_and_collapses_without():
    """The behaviour the shift exists for (docs/losses.md): SASRec on the embedded synthetic data with gbce and 64
    negatives reaches several times the validation NDCG@10 of the paper's unshifted form after one epoch."""
    from seqrec.train import Trainer
    ndcg = {}
    for kind in ("equilibrium", "none"):
        cfg = load_config(None, ["model.loss=gbce", "model.negatives=64", f"model.gbce_shift={kind}",
                                 "train.max_epochs=1", "train.patience=0", "train.threads=1",
                                 "train.seed=2020"])
        ndcg[kind] = Trainer(cfg, None, quiet=True).fit()["metrics"]["valid"]["NDCG@10"]
    assert ndcg["equilibrium"] > 0.25 and ndcg["equilibrium"] > 3 * ndcg["none"], ndcg


@pytest.mark.parametrize("chunk", [0, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_per_row_sampled_softmax_with_log_q_matches_loop(bias, chunk):
    h, w, b, y, _ = make_inputs(bias, seed=4)
    neg = ROW_NEGATIVES
    q = torch.rand(13, generator=torch.Generator().manual_seed(5)) + 0.1
    log_q = torch.log(q / q[1:].sum())
    got = sampled_softmax_loss(h, y, rows_fn(w, b), neg, log_q[y], log_q[neg], chunk_rows=chunk)   # 3 does not divide 7
    ref = naive_sampled_softmax(h, w, b, y, neg, lambda i: float(log_q[i]))
    check_against(got, ref, [p for p in (h, w, b) if p is not None])


@pytest.mark.parametrize("chunk", [0, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_per_row_gbce_matches_loop(bias, chunk):
    h, w, b, y, _ = make_inputs(bias, seed=5)
    beta = gbce_beta(ROW_NEGATIVES.shape[1], 12, 0.75)
    got = gbce_loss(h, y, rows_fn(w, b), ROW_NEGATIVES, beta, chunk_rows=chunk)
    check_against(got, naive_gbce(h, w, b, y, ROW_NEGATIVES, beta), [p for p in (h, w, b) if p is not None])


def test_per_row_negatives_repeated_per_row_are_the_shared_ones():
    h, w, b, y, neg = make_inputs(True, seed=6)
    log_q = torch.log(torch.rand(13, generator=torch.Generator().manual_seed(7)) + 0.1)
    rows = neg.expand(len(y), -1)
    for chunk in (0, 3):
        torch.testing.assert_close(
            sampled_softmax_loss(h, y, rows_fn(w, b), rows, log_q[y], log_q[rows], chunk),
            sampled_softmax_loss(h, y, rows_fn(w, b), neg, log_q[y], log_q[neg], chunk))
        torch.testing.assert_close(gbce_loss(h, y, rows_fn(w, b), rows, 0.4, chunk),
                                   gbce_loss(h, y, rows_fn(w, b), neg, 0.4, chunk))
    with pytest.raises(ValueError, match="shape"):
        sampled_softmax_loss(h, y, rows_fn(w, b), rows, log_q[y], log_q[neg])


def test_per_row_negatives_are_gathered_one_chunk_at_a_time():
    # with chunk_rows, each checkpointed chunk gathers only its own rows' [rows, N] negatives (forward and recompute)
    h, w, b, y, _ = make_inputs(True, seed=8)
    sizes = []

    def rows(ids):
        sizes.append(ids.numel())
        return w[ids], b[ids]
    gbce_loss(h, y, rows, ROW_NEGATIVES, 0.5, chunk_rows=3).backward()
    assert max(sizes) == 3 * ROW_NEGATIVES.shape[1]
    assert sizes.count(3 * ROW_NEGATIVES.shape[1]) == 4                   # 2 full chunks, forward + recompute


def test_per_row_accidental_hits_are_masked_per_row():
    # row 0's negatives are all its own target: no negative term; row 1 gets the same item, which is a negative there
    h, w, _, _, _ = make_inputs(False)
    h, y = h[:2], torch.tensor([4, 6])
    neg = torch.tensor([[4, 4, 4], [4, 4, 4]])
    zero = torch.zeros(3)
    per_row = [sampled_softmax_loss(h[k:k + 1], y[k:k + 1], rows_fn(w, None), neg[k:k + 1], zero[:1],
                                    zero[None, :]).item() for k in (0, 1)]
    s = h.double() @ w.double().T
    assert per_row[0] == 0.0
    assert per_row[1] == pytest.approx(float(torch.logsumexp(torch.stack([s[1, 6]] + [s[1, 4]] * 3), 0) - s[1, 6]),
                                       rel=1e-5)
    pos_only = F.softplus(-s[0, 4]) * 0.5 / 4                              # row 0: beta softplus(-s+) / (N + 1)
    both = (0.5 * F.softplus(-s[1, 6]) + 3 * F.softplus(s[1, 4])) / 4
    assert gbce_loss(h, y, rows_fn(w, None), neg, 0.5).item() == pytest.approx(float(pos_only + both) / 2, rel=1e-5)


def test_gbce_beta_is_the_papers():
    # alpha = k / (|I| - 1); beta = alpha (t (1 - 1/alpha) + 1/alpha)
    alpha = 6 / 99
    assert gbce_beta(6, 100, 0.0) == pytest.approx(1.0)                     # plain BCE
    assert gbce_beta(6, 100, 1.0) == pytest.approx(alpha)
    assert gbce_beta(6, 100, 0.75) == pytest.approx(alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha))
    assert gbce_beta(99, 100, 0.3) == pytest.approx(1.0)                     # every item a negative: alpha = 1


def test_in_batch_softmax_is_the_usual_one():
    # in_batch: negatives = the batch's targets, log Q = their batch frequency, duplicates of the target masked
    h, w, b, y, _ = make_inputs(False, seed=2)
    neg, lq_neg, lq_pos = NegativeSampler("in_batch", 12, 1).sample(y)
    assert torch.equal(neg, y)
    freq = {i: y.tolist().count(i) / len(y) for i in set(y.tolist())}
    torch.testing.assert_close(lq_pos, torch.tensor([math.log(freq[i]) for i in y.tolist()]))
    got = sampled_softmax_loss(h, y, rows_fn(w, b), neg, lq_pos, lq_neg)
    # reference: row k's softmax over its own target and the batch's other (different) items, each - log freq
    vals = []
    for k in range(len(y)):
        yk = int(y[k])
        others = {int(j) for j in y if int(j) != yk}
        pos = logit(h, w, b, k, yk) - math.log(freq[yk])
        terms = [pos] + [logit(h, w, b, k, j) - math.log(freq[j]) for j in y.tolist() if j in others]
        vals.append(torch.logsumexp(torch.stack(terms), 0) - pos)
    check_against(got, torch.stack(vals).mean(), [h, w])


def test_item_loss_default_is_the_full_ce_exactly():
    h, w, _, y, _ = make_inputs(False)
    cfg = model_config_from_dict({"name": "sasrec"})
    assert cfg.loss == "ce" and NegativeSampler.from_config(cfg, 12) is None
    for chunk, pad in ((0, False), (3, True)):
        a = item_loss(h, y, lambda x: x @ w.T, rows_fn(w, None), cfg, None, chunk, pad)
        ref = item_cross_entropy(h, y, lambda x: x @ w.T, chunk, pad)
        assert torch.equal(a, ref)


def test_sampled_losses_of_no_rows_are_zero_with_a_graph():
    w = torch.randn(5, 3, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.long)
    for kind in ("sampled_softmax", "gbce"):
        cfg = model_config_from_dict({"name": "sasrec", "loss": kind, "negatives": 2})
        loss = item_loss(torch.zeros(0, 3), empty, None, rows_fn(w, None), cfg, NegativeSampler.from_config(cfg, 4))
        assert loss.item() == 0.0


# --- samplers -------------------------------------------------------------------------------------------------------
def test_uniform_sampler_covers_every_item_and_never_padding():
    torch.manual_seed(0)
    s = NegativeSampler("uniform", 20, 20000)
    neg, lq_neg, lq_pos = s.sample(torch.tensor([1, 2]))
    assert neg.min() >= 1 and neg.max() <= 20 and set(neg.tolist()) == set(range(1, 21))
    assert torch.allclose(lq_neg, torch.tensor(-math.log(20))) and lq_pos.shape == (2,)


def test_popularity_sampler_follows_the_counts():
    counts = torch.tensor([0, 5, 0, 1, 10, 4, 0, 30])          # items 2 and 6 never seen: never drawn
    s = NegativeSampler("popularity", 7, 100_000)
    with pytest.raises(RuntimeError, match="prepare"):
        s.sample(torch.tensor([1]))
    s.set_counts(counts)
    torch.manual_seed(0)
    neg, lq_neg, lq_pos = s.sample(torch.tensor([4, 7]))
    freq = torch.bincount(neg, minlength=8).double() / len(neg)
    p = counts.double() / counts.sum()
    assert freq[0] == 0 and freq[2] == 0 and freq[6] == 0
    torch.testing.assert_close(freq, p, rtol=0, atol=0.005)                # 100k draws: std <= 0.0016
    torch.testing.assert_close(lq_pos, torch.log(p[[4, 7]]).float())
    torch.testing.assert_close(lq_neg, torch.log(p[neg]).float())


def test_popularity_counts_come_from_the_training_items(synthetic_split):
    import numpy as np
    s = NegativeSampler("popularity", synthetic_split.n_items, 4)
    s.prepare(synthetic_split)
    flat, _ = synthetic_split.train_sequences_csr()
    c = np.bincount(flat, minlength=synthetic_split.n_items + 1)[1:]
    torch.testing.assert_close(s.cdf, torch.from_numpy(np.cumsum(c) / c.sum()))


def test_negatives_come_from_the_global_rng():
    s = NegativeSampler("uniform", 50, 8)
    torch.manual_seed(7)
    a = s.sample(torch.tensor([1]))[0]
    torch.manual_seed(7)
    assert torch.equal(a, s.sample(torch.tensor([1]))[0])
    pop = NegativeSampler("popularity", 50, 8, per="row")
    pop.set_counts(torch.arange(51))
    for per_row in (NegativeSampler("uniform", 50, 8, per="row"), pop):
        y = torch.tensor([1, 2, 3])
        torch.manual_seed(7)
        a = per_row.sample(y)[0]
        torch.manual_seed(7)
        assert torch.equal(a, per_row.sample(y)[0])
        assert not torch.equal(a, per_row.sample(y)[0])                        # the RNG moved on


def test_default_batch_negatives_are_drawn_as_before():
    # negatives_per=batch (the default) makes the very draws of the shared sampler: one [N] randint / rand per batch
    cfg = model_config_from_dict({"name": "sasrec", "loss": "sampled_softmax", "negatives": 8})
    assert cfg.negatives_per == "batch" and NegativeSampler.from_config(cfg, 50).per == "batch"
    assert NegativeSampler("uniform", 50, 8).per == "batch"
    y = torch.tensor([1, 2, 3])
    torch.manual_seed(3)
    neg, lq_neg, lq_pos = NegativeSampler.from_config(cfg, 50).sample(y)
    torch.manual_seed(3)
    assert torch.equal(neg, torch.randint(1, 51, (8,))) and lq_neg.shape == (8,) and lq_pos.shape == (3,)
    pop = NegativeSampler("popularity", 50, 8)
    pop.set_counts(torch.arange(51))
    torch.manual_seed(3)
    neg = pop.sample(y)[0]
    torch.manual_seed(3)
    assert torch.equal(neg, torch.searchsorted(pop.cdf, torch.rand(8, dtype=torch.float64), right=True) + 1)


def test_per_row_uniform_sampler_shapes_and_range():
    torch.manual_seed(0)
    y = torch.tensor([1, 2, 3, 4])
    neg, lq_neg, lq_pos = NegativeSampler("uniform", 20, 5000, per="row").sample(y)
    assert neg.shape == lq_neg.shape == (4, 5000) and lq_pos.shape == (4,) and neg.dtype == torch.long
    assert neg.min() >= 1 and neg.max() <= 20
    assert all(set(row.tolist()) == set(range(1, 21)) for row in neg)     # every row covers every item
    assert not torch.equal(neg[0], neg[1])                                 # rows draw their own
    assert torch.allclose(lq_neg, torch.tensor(-math.log(20))) and torch.allclose(lq_pos, torch.tensor(-math.log(20)))


def test_per_row_popularity_sampler_follows_the_counts():
    counts = torch.tensor([0, 5, 0, 1, 10, 4, 0, 30])
    s = NegativeSampler("popularity", 7, 50_000, per="row")
    s.set_counts(counts)
    torch.manual_seed(0)
    neg, lq_neg, lq_pos = s.sample(torch.tensor([4, 7]))
    assert neg.shape == lq_neg.shape == (2, 50_000) and lq_pos.shape == (2,)
    p = counts.double() / counts.sum()
    for row in neg:                                                        # 50k draws a row: std <= 0.0023
        freq = torch.bincount(row, minlength=8).double() / len(row)
        assert freq[0] == 0 and freq[2] == 0 and freq[6] == 0
        torch.testing.assert_close(freq, p, rtol=0, atol=0.01)
    torch.testing.assert_close(lq_pos, torch.log(p[[4, 7]]).float())
    torch.testing.assert_close(lq_neg, torch.log(p[neg]).float())


def test_per_row_sampler_refuses_in_batch():
    with pytest.raises(ValueError, match="in_batch"):
        NegativeSampler("in_batch", 10, 4, per="row")
    with pytest.raises(ValueError, match="per row"):
        NegativeSampler("uniform", 10, 4, per="position")


# --- models ---------------------------------------------------------------------------------------------------------
LOSSES = [("sampled_softmax", "uniform"), ("sampled_softmax", "popularity"), ("sampled_softmax", "in_batch"),
          ("gbce", "uniform")]


def tiny_trainer(name: str, loss: str, sampler: str, *extra: str):
    from conftest import TINY
    from seqrec.config import model_config_class
    from seqrec.data.synthetic import make_synthetic
    from seqrec.train import Trainer
    fields = {f.name for f in dataclasses.fields(model_config_class(name))}
    keep = [o for o in TINY + list(extra) if not o.startswith("model.") or o.split("=")[0][6:] in fields]
    more = {"gru4rec": ["model.hidden=16"]}.get(name, [])
    cfg = load_config(None, keep + [f"model.name={name}", f"model.loss={loss}", f"model.negative_sampler={sampler}",
                                    "model.negatives=16", *more])
    return Trainer(cfg, None, quiet=True, data=make_synthetic(n_users=200, n_items=60))


@pytest.mark.parametrize("name, loss, sampler, extra", [("sasrec", *ls, ()) for ls in LOSSES] + [
    ("gru4rec", "gbce", "uniform", ()), ("bert4rec", "sampled_softmax", "popularity", ()),
    ("mqsa_ted", "sampled_softmax", "uniform", ()), ("cl4srec", "gbce", "uniform", ()),
    # per-row negatives; one with sequence examples (K = rows x positions) in row chunks that do not divide K
    ("sasrec", "sampled_softmax", "popularity", ("model.negatives_per=row",)),
    ("sasrec", "gbce", "uniform", ("model.negatives_per=row", "train.examples=sequence",
                                   "model.logits_chunk_rows=100")),
    ("gru4rec", "sampled_softmax", "uniform", ("model.negatives_per=row",)),
    ("gru4rec", "gbce", "uniform", ("model.negatives_per=row",))],
    ids=lambda v: (",".join(o.split(".")[-1] for o in v) or "defaults") if isinstance(v, tuple) else None)
def test_models_train_with_each_loss(name, loss, sampler, extra):
    t = tiny_trainer(name, loss, sampler, "train.lr=0.01", "model.dropout=0", "model.attn_dropout=0", *extra)
    assert t.model.item_sampler.per == ("row" if "model.negatives_per=row" in extra else "batch")
    if sampler == "popularity":
        assert t.model.item_sampler.cdf is not None                     # prepared by the trainer
    first = t.train_epoch(1)["terms"]["loss"]
    for e in (2, 3):
        last = t.train_epoch(e)["terms"]["loss"]
    assert math.isfinite(last) and last < first, (first, last)


def test_sampled_losses_change_no_module_state():
    # the sampler is no module state: checkpoints of either loss load into the other
    info = DatasetInfo(30)
    ce = build_model(model_config_from_dict({"name": "sasrec"}), info)
    pop = build_model(model_config_from_dict({"name": "sasrec", "loss": "sampled_softmax",
                                              "negative_sampler": "popularity"}), info)
    assert set(ce.state_dict()) == set(pop.state_dict())
    pop.load_state_dict(ce.state_dict())


# --- config ---------------------------------------------------------------------------------------------------------
def error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides).validate()
    return str(e.value)


def test_loss_keys_are_shared_and_validated():
    from seqrec.models.base import LossConfig
    shared = {f.name: f.default for f in dataclasses.fields(LossConfig)}
    assert shared == {"loss": "ce", "negatives": 256, "negative_sampler": "uniform", "negatives_per": "batch",
                      "gbce_t": 0.75, "gbce_shift": "equilibrium"}
    for name in ("sasrec", "cl4srec", "mclrec", "gru4rec", "bert4rec", "mqsa_ted"):
        cfg = model_config_from_dict({"name": name})
        assert {k: getattr(cfg, k) for k in shared} == shared, name
        assert load_config(None, [f"model.name={name}"]).to_dict()["model"]["negatives"] == 256     # flat keys
    assert not hasattr(model_config_from_dict({"name": "emkd"}), "loss")
    assert "model.loss" in error(["model.loss=bpr"])
    assert "model.negative_sampler" in error(["model.negative_sampler=hard"])
    assert "model.negatives" in error(["model.negatives=0"])
    assert "model.negatives_per" in error(["model.negatives_per=position"])
    row_in_batch = error(["model.negatives_per=row", "model.negative_sampler=in_batch"])
    assert "model.negatives_per" in row_in_batch and "in_batch" in row_in_batch and "\n" not in row_in_batch
    load_config(None, ["model.negatives_per=row", "model.negative_sampler=popularity"]).validate()
    assert "model.gbce_t" in error(["model.gbce_t=1.5"])
    assert "model.gbce_shift" in error(["model.gbce_shift=auto"])
    assert "uniform" in error(["model.loss=gbce", "model.negative_sampler=in_batch"])
    assert "uniform" in error(["model.loss=gbce", "model.negative_sampler=popularity"])
    assert "model.member.loss" in error(["model.name=emkd", "model.member={loss: gbce, negatives: 8}"])
    for msg in (error(["model.loss=gbce", "model.negative_sampler=in_batch"]), error(["model.negatives=-3"])):
        assert "\n" not in msg
    with pytest.raises(ConfigError, match="n_items - 1"):
        build_model(model_config_from_dict({"name": "sasrec", "loss": "gbce", "negatives": 30}), DatasetInfo(30))
    build_model(model_config_from_dict({"name": "sasrec", "loss": "gbce", "negatives": 29}), DatasetInfo(30))
