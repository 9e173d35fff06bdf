"""EMKD: every loss term against a naive per-sample reference, the masking rule, the ensemble scorer, the N = 1
reduction to BERT4Rec, the switches, and short training runs (BERT4Rec and SASRec backbones)."""
from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from seqrec.config import load_config
from seqrec.data.batch import Batch
from seqrec.data.dataset import ItemAttributes
from seqrec.data.masking import cloze_mask
from seqrec.errors import ConfigError
from seqrec.losses import multi_positive_info_nce
from seqrec.models import DatasetInfo, build_model

N_ITEMS = 30


def attributes(n_items: int = N_ITEMS, n_attr: int = 7, seed: int = 0) -> ItemAttributes:
    """1-3 random attributes per item (rows 0 and n_items + 1 have none)."""
    rng = np.random.default_rng(seed)
    counts = np.r_[0, rng.integers(1, 4, n_items), 0]
    ids = np.concatenate([rng.choice(np.arange(1, n_attr + 1), c, replace=False) for c in counts])
    return ItemAttributes(np.r_[0, np.cumsum(counts)].astype(np.int64), ids.astype(np.int64), n_attr)


def emkd(*overrides: str, attrs: bool = True, n_items: int = N_ITEMS):
    cfg = load_config(None, ["model.name=emkd", "model.d=8", "model.heads=2", "model.inner=16", "model.max_len=6",
                             "model.n_networks=3", "model.n_views=3", "model.dropout=0.1", "model.attn_dropout=0.1",
                             "model.tau=0.5", "model.kd_temperature=2.0", *overrides]).model
    torch.manual_seed(0)
    return build_model(cfg, DatasetInfo(n_items, attributes(n_items) if attrs else None))


def random_batch(b: int = 5, t: int = 6, n_items: int = N_ITEMS, seed: int = 1, min_len: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, t + 1, (b,), generator=g)
    lengths[0] = t
    items = torch.randint(1, n_items + 1, (b, t), generator=g)
    items[torch.arange(t)[None, :] >= lengths[:, None]] = 0
    return Batch(items, lengths)


# ------------------------------------------------------------------------------------------------- references


def left_padded(h: torch.Tensor, length: int, width: int) -> torch.Tensor:
    """One sequence's outputs [length, d] placed at the end of a zero [width, d] block, flattened."""
    out = torch.zeros(width, h.shape[1], dtype=torch.float64)
    out[width - length:] = h.double()
    return out.flatten()


def naive_nce(anchor, positives, negatives, tau, self_mode):
    """-log sum_p exp(cos(a, p)/tau) + log sum_{j} exp(cos(a, n_j)/tau), one anchor at a time."""
    cos = lambda x, y: float(x.double() @ y.double() / (x.double().norm() * y.double().norm()))
    total = 0.0
    for i in range(anchor.shape[0]):
        num = sum(math.exp(cos(anchor[i], positives[p, i]) / tau) for p in range(positives.shape[0]))
        den = 0.0
        for j in range(negatives.shape[0]):
            if j == i:
                den += 1.0 if self_mode == "zero" else 0.0
            else:
                den += math.exp(cos(anchor[i], negatives[j]) / tau)
        total += -math.log(num) + math.log(den)
    return total / anchor.shape[0]


def naive_terms(model, batch, seed, attrs: ItemAttributes):
    """Every EMKD term computed one sequence at a time (eval mode: no dropout), with the model's own views."""
    cfg = model.cfg
    torch.manual_seed(seed)
    views, vlen, labels, chosen = model.make_views(batch.items, batch.lengths, None)
    b, m, n, width = batch.items.shape[0], cfg.n_views, cfg.n_networks, batch.items.shape[1]
    table = torch.from_numpy(attrs.dense(model.n_items + 2)).double()
    enc = lambda net, row, ln: net.encode(row[None, :ln], torch.tensor([ln]))[0]       # [ln, d]
    hv = [[enc(net, views[r], int(vlen[r])) for r in range(m * b)] for net in model.members]
    hp = [[enc(net, batch.items[i], int(batch.lengths[i])) for i in range(b)] for net in model.members]
    kd_t = cfg.kd_temperature

    ce = 0.0
    kd = 0.0
    for v in range(m):
        rows = [(v * b + i, t) for i in range(b) for t in range(int(vlen[v * b + i])) if labels[v * b + i, t] > 0]
        if not rows:
            continue
        for k in range(n):
            losses = []
            for r, t in rows:
                z = model.members[k].item_logits(hv[k][r][t]).double()[1:]
                losses.append(float(-(z - torch.logsumexp(z, 0))[labels[r, t] - 1]))
            ce += sum(losses) / len(losses)
        for a, c in itertools.combinations(range(n), 2):
            vals = []
            for r, t in rows:
                pa = torch.softmax(model.members[a].item_logits(hv[a][r][t]).double()[1:] / kd_t, 0)
                pc = torch.softmax(model.members[c].item_logits(hv[c][r][t]).double()[1:] / kd_t, 0)
                vals.append(0.5 * float((pc * (pc / pa).log()).sum() + (pa * (pa / pc).log()).sum()))
            kd += sum(vals) / len(vals)

    attr = 0.0
    last = [(i, t) for i in range(b) for t in range(int(batch.lengths[i])) if chosen[(m - 1) * b + i, t]]
    for k in range(n):
        vals = []
        for i, t in last:
            x = model.attr_heads[k](hp[k][i][t]).double()
            y = table[batch.items[i, t]]
            sig = torch.sigmoid(x)
            vals.extend((-(y * sig.log() + (1 - y) * (1 - sig).log())).tolist())
        attr += sum(vals) / len(vals)

    anchors = [torch.stack([left_padded(hp[k][i], int(batch.lengths[i]), width) for i in range(b)])
               for k in range(n)]
    positives = [torch.stack([left_padded(hv[k][r], int(vlen[r]), width) for r in range(m * b)]).view(m, b, -1)
                 for k in range(n)]
    icl = sum(naive_nce(anchors[k], positives[k], anchors[k], cfg.tau, cfg.contrastive_self) for k in range(n))
    ccl = sum(naive_nce(anchors[k], positives[u], anchors[u], cfg.tau, cfg.contrastive_self)
              for k, u in itertools.permutations(range(n), 2))
    total = ce + cfg.kd_weight * kd + cfg.attr_weight * attr + cfg.icl_weight * icl + cfg.ccl_weight * ccl
    return {"loss": total, "ce": ce, "kd": kd, "attr": attr, "icl": icl, "ccl": ccl}


# ------------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("self_mode", ["remove", "zero"])
def test_multi_positive_info_nce_matches_loop(self_mode):
    g = torch.Generator().manual_seed(3)
    a, p, neg = torch.randn(6, 10, generator=g), torch.randn(4, 6, 10, generator=g), torch.randn(6, 10, generator=g)
    got = float(multi_positive_info_nce(a, p, neg, 0.3, self_mode))
    assert got == pytest.approx(naive_nce(a, p, neg, 0.3, self_mode), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("self_mode", ["remove", "zero"])
def test_every_term_matches_naive_per_sequence_reference(self_mode):
    # init_std 0.5: logits far from uniform, so that per-view means, KD and BCE differ from trivial values
    model = emkd(f"model.contrastive_self={self_mode}", "model.init_std=0.5", "model.kd_weight=0.5", "model.icl_weight=0.3",
                 "model.ccl_weight=0.2", "model.attr_weight=0.7")
    model.eval()                                   # no dropout: the batched and the per-row passes agree
    batch = random_batch(b=5, t=6)
    torch.manual_seed(11)
    got = {k: float(v.detach()) for k, v in model.loss(batch).items()}
    with torch.no_grad():                          # the reference needs values only
        ref = naive_terms(model, batch, seed=11, attrs=attributes())
    assert ref["kd"] > 0.01 and ref["icl"] != 0 and ref["ccl"] != 0 and ref["attr"] > 0
    for k in ("ce", "kd", "attr", "icl", "ccl", "loss"):
        assert got[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-5), k


def test_logits_at_all_gives_the_same_loss():
    # both on the dense path (logits_at=all always takes it); the fused path is held against it in test_emkd_fused
    batch = random_batch(b=6, t=6)
    values = {}
    for where in ("masked", "all"):
        model = emkd(f"model.logits_at={where}").eval()
        model.fused_item_losses = False
        torch.manual_seed(4)
        values[where] = {k: float(v.detach()) for k, v in model.loss(batch).items()}
    for k in values["masked"]:
        assert values["all"][k] == pytest.approx(values["masked"][k], rel=1e-5, abs=1e-6), k


def test_cloze_mask_proportions():
    n_items, p = 100_000, 0.15
    lengths = torch.randint(1, 51, (4000,), generator=torch.Generator().manual_seed(0))
    items = torch.randint(1, n_items + 1, (4000, 50), generator=torch.Generator().manual_seed(1))
    items[torch.arange(50)[None, :] >= lengths[:, None]] = 0
    torch.manual_seed(5)
    masked, labels = cloze_mask(items, lengths, p, n_items + 1, n_items)
    real = items != 0
    chosen = labels > 0
    n_real, n_chosen = int(real.sum()), int(chosen.sum())
    assert not bool((chosen & ~real).any()) and bool((masked[~real] == 0).all())
    assert bool((labels[chosen] == items[chosen]).all()) and bool((masked[~chosen] == items[~chosen]).all())
    # binomial standard errors: chosen ~ 0.0007 here, the 80/10/10 split ~ 0.002; allow about 5 of them
    assert abs(n_chosen / n_real - p) < 0.004
    frac_mask = float((masked[chosen] == n_items + 1).float().mean())
    frac_same = float((masked[chosen] == items[chosen]).float().mean())
    frac_rand = 1 - frac_mask - frac_same
    assert abs(frac_mask - 0.8) < 0.01 and abs(frac_same - 0.1) < 0.008 and abs(frac_rand - 0.1) < 0.008


def test_views_are_masked_independently_and_shared_by_networks():
    model = emkd("model.n_views=4", "model.mask_prob=0.3")
    batch = random_batch(b=400, t=6, seed=2)
    torch.manual_seed(0)
    views, vlen, labels, chosen = model.make_views(batch.items, batch.lengths, None)
    assert views.shape == (4 * 400, 6) and bool((vlen.view(4, 400) == batch.lengths).all())
    c = chosen.view(4, 400, 6)[:, batch.items != 0]          # [M, real positions]
    both = float((c[0] & c[1]).float().mean())
    assert abs(float(c.float().mean()) - 0.3) < 0.02 and abs(both - 0.09) < 0.02       # independent: p^2


def test_sasrec_views_use_random_items_not_a_mask_token():
    model = emkd("model.backbone=sasrec", "model.mask_prob=0.5")
    batch = random_batch(b=200, t=7, seed=3, min_len=2)
    inputs, lengths, targets = model.split_inputs(batch)
    assert bool((inputs[:, :][torch.arange(6)[None, :] < lengths[:, None]] > 0).all())
    assert bool((targets[torch.arange(6)[None, :] < lengths[:, None]] > 0).all())
    assert bool((targets[torch.arange(6)[None, :] >= lengths[:, None]] == 0).all())
    torch.manual_seed(0)
    views, vlen, labels, chosen = model.make_views(inputs, lengths, targets)
    assert int(views.max()) <= N_ITEMS and bool((labels == targets.repeat(3, 1)).all())
    changed = (views != inputs.repeat(3, 1))
    assert bool((changed <= chosen).all()) and float(changed[chosen].float().mean()) > 0.8


def test_ensemble_scorer_sum_of_logits_and_mean_of_probs():
    model = emkd().eval()
    batch = random_batch(b=4, t=5)
    with torch.no_grad():
        parts = model.member_scores(batch)                       # [N, B, n + 1]
        summed = model.score(batch)
        model.cfg.combine = "probs"
        probs = model.score(batch)
    assert parts.shape == (3, 4, N_ITEMS + 1) and bool(torch.isneginf(summed[:, 0]).all())
    assert bool(torch.isneginf(probs[:, 0]).all())
    # sum of logits = log of the product of the softmaxes + a per-row constant: identical ranking
    log_prod = torch.log_softmax(parts[..., 1:].double(), -1).sum(0)
    diff = summed[:, 1:].double() - log_prod
    assert torch.allclose(diff, diff[:, :1].expand_as(diff), atol=1e-4)
    assert bool((summed[:, 1:].argsort(1) == log_prod.argsort(1)).all())
    # probs: exp(score) is the mean of the members' distributions
    mean_p = torch.softmax(parts[..., 1:].double(), -1).mean(0)
    assert torch.allclose(probs[:, 1:].double().exp(), mean_p, atol=1e-6)
    assert torch.allclose(probs[:, 1:].double().exp().sum(1), torch.ones(4, dtype=torch.float64), atol=1e-5)


def test_single_network_without_distillation_is_bert4rec():
    cfg_b = load_config(None, ["model.name=bert4rec", "model.d=8", "model.heads=2", "model.inner=16",
                               "model.max_len=6", "model.dropout=0.2", "model.attn_dropout=0.2"]).model
    info = DatasetInfo(N_ITEMS, attributes())
    torch.manual_seed(0)
    bert = build_model(cfg_b, info)
    model = emkd("model.n_networks=1", "model.n_views=1", "model.use_kd=false", "model.use_icl=false",
                 "model.use_ccl=false", "model.use_attr=false", "model.dropout=0.2", "model.attn_dropout=0.2")
    model.members[0].load_state_dict(bert.state_dict())
    batch = random_batch(b=8, t=6)
    for seed in (0, 1, 2):                                       # train mode: dropout draws must line up too
        torch.manual_seed(seed)
        want = bert.loss(batch)["loss"]
        torch.manual_seed(seed)
        got = model.loss(batch)
        assert float(got["loss"].detach()) == pytest.approx(float(want.detach()), rel=1e-6)
        assert float(got["kd"]) == float(got["icl"]) == float(got["ccl"]) == float(got["attr"]) == 0.0
    model.eval()
    bert.eval()
    with torch.no_grad():
        hist = Batch(batch.items[:, :5], batch.lengths.clamp(max=5))
        hist.items[torch.arange(5)[None, :] >= hist.lengths[:, None]] = 0
        assert torch.equal(model.score(hist), bert.score(hist))


def test_switches_turn_terms_off_and_heads_exist_only_when_used():
    batch = random_batch(b=6, t=6)
    model = emkd("model.use_kd=false", "model.use_icl=false", "model.use_ccl=false", "model.use_attr=false")
    assert model.attr_heads is None
    terms = model.loss(batch)
    assert set(terms) == {"loss", "ce", "kd", "attr", "icl", "ccl"}
    assert float(terms["loss"].detach()) == pytest.approx(float(terms["ce"]))
    on = emkd().loss(batch)
    assert all(float(on[k]) != 0 for k in ("kd", "attr", "icl", "ccl"))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        no_attr = emkd(attrs=False)
    assert no_attr.attr_heads is None and any("attribute" in str(x.message) for x in w)
    assert float(no_attr.loss(batch)["attr"]) == 0.0
    # every parameter gets a gradient when all terms are on (DDP-safe), and the table is not checkpointed
    model = emkd()
    model.loss(batch)["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())
    assert "attr_table" not in model.state_dict()


def test_identical_encoder_init_quirk():
    same = emkd("model.identical_encoder_init=true")
    diverse = emkd()
    enc = lambda m, k: torch.cat([p.flatten() for p in m.members[k].encoder.parameters()])
    assert torch.equal(enc(same, 0), enc(same, 2)) and not torch.equal(enc(diverse, 0), enc(diverse, 1))
    assert not torch.equal(same.members[0].embed.item.weight, same.members[1].embed.item.weight)


def test_member_config_keys():
    model = emkd("model.member={tied: true, init_std: 0.05}")
    assert model.members[0].cfg.tied and model.members[0].out is None and model.members[0].cfg.d == 8
    assert model.members[0].cfg.init_std == 0.05 and model.members[0].cfg.mask_prob == 0.15
    with pytest.raises(ConfigError, match="model.member.*unknown key 'bogus'"):
        emkd("model.member={bogus: 1}")
    with pytest.raises(ConfigError, match="model.backbone"):
        emkd("model.backbone=emkd")
    with pytest.raises(ConfigError, match="model.combine"):
        emkd("model.combine=max")


@pytest.mark.parametrize("backbone", ["bert4rec", "sasrec"])
def test_short_training_run_lowers_the_loss(backbone):
    from seqrec.data.synthetic import make_synthetic
    from seqrec.train import train
    data = make_synthetic(n_users=300, n_items=100)
    cfg = load_config(None, ["model.name=emkd", f"model.backbone={backbone}", "model.d=16", "model.heads=2",
                             "model.inner=32", "model.max_len=8", "model.n_views=2", "model.dropout=0.1",
                             "model.attn_dropout=0.1", "model.tau=1.0", "train.examples=windows",
                             "train.window_step=2", "train.max_epochs=4", "train.threads=1", "train.lr=0.005",
                             "train.batch_size=128", "train.patience=0", "train.eval_start=4",
                             "eval.exclude=window", "eval.ks=[1,5,10,20]"])
    result = train(cfg, None, quiet=True, data=data)
    losses = [h["train"]["loss"] for h in result["history"]]
    ces = [h["train"]["ce"] for h in result["history"]]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] and ces[-1] < ces[0]
    assert result["method"] == "emkd" and result["protocol"]["exclude"] == "window"
    assert result["metrics"]["test"]["HR@20"] > 0.2                # popularity alone is far below on this data


def test_ensemble_symmetric_kl_equals_pairwise_sum():
    """The one-pass ensemble KD equals the sum over network pairs and views of losses.symmetric_kl (value and
    gradients), for 2, 3 and 4 networks, views of unequal sizes."""
    from seqrec.losses import symmetric_kl
    from seqrec.models.emkd import ensemble_symmetric_kl
    g = torch.Generator().manual_seed(5)
    view_of = torch.tensor([0, 0, 0, 1, 2, 2, 1, 0])
    for n in (2, 3, 4):
        logits = [(2 * torch.randn(8, 11, generator=g)).requires_grad_() for _ in range(n)]
        got = ensemble_symmetric_kl(logits, view_of, 4, 0.7)      # view 3 has no rows
        ref = sum(symmetric_kl(logits[a][view_of == v], logits[c][view_of == v], 0.7)
                  for a in range(n) for c in range(a + 1, n) for v in range(3))
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
        for x, y in zip(torch.autograd.grad(got, logits), torch.autograd.grad(ref, logits)):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)
