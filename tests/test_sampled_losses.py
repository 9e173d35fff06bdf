"""The sampled item losses (model.loss = sampled_softmax | gbce) against naive float64 loops for fixed negatives,
values and gradients; the negative samplers' statistics; the default CE unchanged; models training with each loss;
the config checks. The loss keys (LossConfig) are in seqrec.models.base, the losses in seqrec.losses."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from seqrec.config import load_config, model_config_from_dict
from seqrec.errors import ConfigError
from seqrec.losses import (NegativeSampler, gbce_beta, gbce_loss, item_cross_entropy, item_loss,
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


def rows_fn(w, b):
    return lambda ids: (w[ids], None if b is None else b[ids])


def logit(h, w, b, k, i):
    s = h[k].double() @ w[i].double()
    return s + b[i].double() if b is not None else s


def naive_sampled_softmax(h, w, b, y, neg, log_q):
    """Per row: -log of exp(o+) / (exp(o+) + sum over negatives != target of exp(o_j)), o = logit - log Q."""
    vals = []
    for k in range(h.shape[0]):
        yk = int(y[k])
        pos = logit(h, w, b, k, yk) - log_q(yk)
        terms = [pos]
        for j in neg.tolist():
            if j != yk:
                terms.append(logit(h, w, b, k, j) - log_q(j))
        vals.append(torch.logsumexp(torch.stack(terms), 0) - pos)
    return torch.stack(vals).mean()


def naive_gbce(h, w, b, y, neg, beta):
    """Per row: -1/(N + 1) [beta log sigma(s+) + sum over negatives != target of log(1 - sigma(s_j))]."""
    vals = []
    for k in range(h.shape[0]):
        yk = int(y[k])
        total = beta * torch.log(torch.sigmoid(logit(h, w, b, k, yk)))
        for j in neg.tolist():
            if j != yk:
                total = total + torch.log(1 - torch.sigmoid(logit(h, w, b, k, j)))
        vals.append(-total / (len(neg) + 1))
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


@pytest.mark.parametrize("name, loss, sampler", [("sasrec", *ls) for ls in LOSSES] + [
    ("gru4rec", "gbce", "uniform"), ("bert4rec", "sampled_softmax", "popularity"),
    ("mqsa_ted", "sampled_softmax", "uniform"), ("cl4srec", "gbce", "uniform")])
def test_models_train_with_each_loss(name, loss, sampler):
    t = tiny_trainer(name, loss, sampler, "train.lr=0.01", "model.dropout=0", "model.attn_dropout=0")
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
    assert shared == {"loss": "ce", "negatives": 256, "negative_sampler": "uniform", "gbce_t": 0.75}
    for name in ("sasrec", "cl4srec", "mclrec", "gru4rec", "bert4rec", "mqsa_ted"):
        cfg = model_config_from_dict({"name": name})
        assert {k: getattr(cfg, k) for k in shared} == shared, name
        assert load_config(None, [f"model.name={name}"]).to_dict()["model"]["negatives"] == 256     # flat keys
    assert not hasattr(model_config_from_dict({"name": "emkd"}), "loss")
    assert "model.loss" in error(["model.loss=bpr"])
    assert "model.negative_sampler" in error(["model.negative_sampler=hard"])
    assert "model.negatives" in error(["model.negatives=0"])
    assert "model.gbce_t" in error(["model.gbce_t=1.5"])
    assert "uniform" in error(["model.loss=gbce", "model.negative_sampler=in_batch"])
    assert "uniform" in error(["model.loss=gbce", "model.negative_sampler=popularity"])
    assert "model.member.loss" in error(["model.name=emkd", "model.member={loss: gbce, negatives: 8}"])
    for msg in (error(["model.loss=gbce", "model.negative_sampler=in_batch"]), error(["model.negatives=-3"])):
        assert "\n" not in msg
    with pytest.raises(ConfigError, match="n_items - 1"):
        build_model(model_config_from_dict({"name": "sasrec", "loss": "gbce", "negatives": 30}), DatasetInfo(30))
    build_model(model_config_from_dict({"name": "sasrec", "loss": "gbce", "negatives": 29}), DatasetInfo(30))
