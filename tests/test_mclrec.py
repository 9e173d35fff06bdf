"""CL4SRec / MCLRec: losses against naive loops, the masked-view encoder, the three-step update, switches, configs
and a short training run on synthetic data."""
import glob
import math

import pytest
import torch

from seqrec.train.manual import ManualOptimization
from seqrec.config import Config, load_config
from seqrec.data.batch import Batch
from seqrec.data.dataset import leave_one_out
from seqrec.data.synthetic import make_synthetic
from seqrec.eval.baselines import Popularity
from seqrec.eval.evaluator import evaluate
from seqrec.losses import contrastive_margin_regularizer, info_nce
from seqrec.models import DatasetInfo, build_model, model_config_from_dict

torch.set_num_threads(1)
N_ITEMS = 40


def make(name="mclrec", **kw):
    cfg = model_config_from_dict({"name": name, "d": 16, "layers": 1, "heads": 2, "inner": 32, "max_len": 12,
                                  **kw})
    cfg.validate()
    torch.manual_seed(0)
    return build_model(cfg, DatasetInfo(N_ITEMS))


def batch(b=8, t=10, seed=0, prefix=True):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t
    items = torch.randint(1, N_ITEMS + 1, (b, t), generator=g)
    inside = torch.arange(t)[None] < lengths[:, None]
    items = items * inside
    nxt = torch.randint(1, N_ITEMS + 1, (b, t), generator=g) * inside
    if prefix:
        targets = torch.zeros_like(items)
        targets[torch.arange(b), lengths - 1] = nxt[torch.arange(b), lengths - 1]
    else:
        targets = nxt
    return Batch(items, lengths, targets)


# --- losses against naive per-row loops ------------------------------------------------------------------------
def naive_pairs(a, b):
    z = torch.cat([a, b]).double()
    n, bs = z.shape[0], a.shape[0]
    out = []
    for i in range(n):
        j = (i + bs) % n
        pos = float(z[i] @ z[j])
        negs = [float(z[i] @ z[k]) for k in range(n) if k not in (i, j)]
        out.append((pos, negs))
    return out


def test_info_nce_against_naive_loop():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    ref = 0.0
    for pos, negs in naive_pairs(a, b):
        ref += -pos + math.log(math.exp(pos) + sum(math.exp(s) for s in negs))
    assert float(info_nce(a, b, 1.0, "dot")) == pytest.approx(ref / 10, rel=1e-5)


def test_regulariser_against_naive_loop():
    g = torch.Generator().manual_seed(2)
    for trial in range(3):
        a, b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
        if trial == 2:
            b = a + 0.01 * b                    # positives above every negative
        first, second, count = 0.0, 0.0, 0
        pairs = naive_pairs(a, b)
        for pos, negs in pairs:
            o_min, o_max = min(pos, max(negs)), max(pos, max(negs))
            first += max(pos - o_min, 0.0)
            for s in negs:
                second += max(o_max - s, 0.0)
                count += 1
        ref = first / len(pairs) + second / count
        assert float(contrastive_margin_regularizer(a, b)) == pytest.approx(ref, rel=1e-5, abs=1e-6)


# --- the masked-view encoder -----------------------------------------------------------------------------------
def test_encode_views_equals_sasrec_encode_without_masked_items():
    m = make().eval()
    bt = batch()
    assert torch.allclose(m.encode_views(bt.items, bt.lengths), m.encode(bt.items, bt.lengths), atol=1e-6)


def test_encode_views_with_masked_items_against_per_row_reference():
    m = make().eval()
    items = torch.tensor([[0, 5, 6, 0, 7], [3, 0, 0, 0, 0], [4, 9, 0, 0, 0], [0, 0, 8, 2, 0]])
    lengths = torch.tensor([5, 2, 3, 4])          # masked zeros inside; row 1 and 2 have their last item masked
    out = m.encode_views(items, lengths)
    assert torch.isfinite(out).all()
    for r in range(items.shape[0]):
        n = int(lengths[r])
        row = items[r:r + 1, :n]
        allowed = torch.zeros(1, 1, n, n, dtype=torch.bool)
        for q in range(n):
            for k in range(q + 1):
                allowed[0, 0, q, k] = bool(row[0, k] != 0)
            if not allowed[0, 0, q].any():
                allowed[0, 0, q, :q + 1] = True
        # official RecBole input: LayerNorm(E[item] + P[t]) at every position < length, masked ones included
        # (E[0] is the padding row, randomly initialised like every row), so a masked position carries E[0] + P[t]
        x = m.embed.norm(m.embed.item(row) + m.embed.position(torch.arange(n))[None])
        assert (x[0, row[0] == 0].abs().sum(dim=-1) > 0).all()
        for block in m.encoder.blocks:
            x = block(x, allowed)
        assert torch.allclose(out[r, :n], x[0], atol=1e-5), r
        assert (out[r, n:] == 0).all()
        # the representation at length - 1 is a real output even when that item is masked
        assert out[r, n - 1].abs().sum() > 0


# --- CL4SRec ---------------------------------------------------------------------------------------------------
def test_cl4srec_ce_term_equals_sasrec_loss():
    m = make("cl4srec").eval()
    s = build_model(model_config_from_dict({"name": "sasrec", "d": 16, "layers": 1, "heads": 2, "inner": 32,
                                            "max_len": 12}), DatasetInfo(N_ITEMS)).eval()
    s.load_state_dict(m.state_dict())
    bt = batch(prefix=False)
    terms = m.loss(bt)
    assert float(terms["ce"]) == pytest.approx(float(s.loss(bt)["ce"]), rel=1e-5)
    assert float(terms["loss"].detach()) == pytest.approx(float(terms["ce"] + 0.1 * terms["cl1"]), rel=1e-5)


def test_cl4srec_views_loss_matches_separate_encodes():
    m = make("cl4srec").eval()
    bt = batch()
    torch.manual_seed(3)
    views = m.augment(bt)
    _, _, h1, h2 = m.encode_with_views(bt, views)
    r1 = m.encode_views(views.items1, views.lengths1)[torch.arange(8), views.lengths1 - 1]
    r2 = m.encode_views(views.items2, views.lengths2)[torch.arange(8), views.lengths2 - 1]
    assert torch.allclose(h1, r1, atol=1e-5) and torch.allclose(h2, r2, atol=1e-5)
    assert float(m.loss(bt, views)["cl1"]) == pytest.approx(float(info_nce(r1, r2)), rel=1e-5)


# --- MCLRec update procedure -----------------------------------------------------------------------------------
def snapshot(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def changed(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


def aug_names(model):
    return {k for k, _ in model.named_parameters() if k.startswith("aug")}


def test_three_steps_touch_only_their_parameter_sets():
    m = make(beta=0.5, cl_weight=0.1).train()
    tc = Config().train
    opts = m.configure_optimizers(tc)
    assert len(opts) == 2
    snaps, which = [], []
    for i, o in enumerate(opts):
        o.register_step_pre_hook(lambda opt, a, k: snaps.append(snapshot(m)))
        o.register_step_post_hook(lambda opt, a, k, i=i: (snaps.append(snapshot(m)), which.append(i)))
    calls = {"augment": 0, "encode": []}
    orig_aug, orig_enc = m.augment, m.encode_with_views

    def counting_augment(*a, **k):
        calls["augment"] += 1
        return orig_aug(*a, **k)

    def recording_encode(bt, views, original=True):
        calls["encode"].append((id(views), original))
        return orig_enc(bt, views, original)

    m.augment, m.encode_with_views = counting_augment, recording_encode
    terms = m.manual_step(batch(), ManualOptimization(opts))
    assert not m.automatic_optimization
    assert which == [0, 1, 0]
    aug = aug_names(m)
    assert aug and len(aug) < len(snaps[0])
    enc1, augstep, enc2 = (changed(snaps[2 * i], snaps[2 * i + 1]) for i in range(3))
    assert enc1 and enc1.isdisjoint(aug)
    assert augstep == aug
    assert enc2 and enc2.isdisjoint(aug)
    # one augmentation, three fresh encoder forwards on the same views (the augmenter step without the original)
    assert calls["augment"] == 1
    assert len({v for v, _ in calls["encode"]}) == 1 and [o for _, o in calls["encode"]] == [True, False, True]
    assert {"loss", "ce", "cl1", "cl2", "reg", "aug_loss"} <= set(terms)
    assert all(not t.requires_grad for t in terms.values())


@pytest.mark.parametrize("padding_class", [False, True])
def test_ce_padding_class_trains_the_padding_row(padding_class):
    # official RecBole CE: the padding row is a class (never a target), so the encoder steps move E[0], which is
    # also the masked positions' input; without the switch E[0] keeps its initial value
    m = make(beta=0.5, ce_padding_class=padding_class).train()
    opts = m.configure_optimizers(Config().train)
    before = m.embed.item.weight[0].detach().clone()
    m.manual_step(batch(), ManualOptimization(opts))
    moved = not torch.equal(before, m.embed.item.weight[0].detach())
    assert moved == padding_class


def test_augmenter_step_builds_no_encoder_graph():
    m = make(beta=0.5).train()
    bt = batch()
    views = m.augment(bt)
    out = m.augmenter_loss(bt, views)
    out["loss"].backward()
    for k, p in m.named_parameters():
        if k.startswith("aug"):
            assert p.grad is not None and p.grad.abs().sum() > 0, k
        else:
            assert p.grad is None, k


def test_augmenter_loss_is_cl2_plus_weighted_reg():
    m = make(beta=0.5).eval()
    bt = batch()
    views = m.augment(bt)
    out = m.augmenter_loss(bt, views)
    _, _, h1, h2 = m.encode_with_views(bt, views)
    z1, z2 = m.aug1(h1), m.aug2(h2)
    assert torch.allclose(z1.norm(dim=1), torch.ones(8), atol=1e-5)
    pairs = ((h1, z2), (h2, z1), (z1, z2))
    ref = sum(info_nce(a, b) for a, b in pairs) + 0.1 * sum(contrastive_margin_regularizer(a, b) for a, b in pairs)
    assert float(out["loss"].detach()) == pytest.approx(float(ref), rel=1e-5)
    enc = m.loss(bt, views)
    ce = m.ce_loss(*m.encode_with_views(bt, views)[:2])
    assert float(enc["loss"].detach()) == pytest.approx(float(ce + 0.5 * ref), rel=1e-5)   # lambda 0 by default


def test_joint_variant_updates_both_in_one_step():
    m = make(beta=0.5, joint=True).train()
    opts = m.configure_optimizers(Config().train)
    assert len(opts) == 1
    steps = []
    opts[0].register_step_post_hook(lambda *a: steps.append(1))
    before = snapshot(m)
    assert m.automatic_optimization                  # MCLRec-J is an ordinary model: the trainer steps its loss
    m.loss(batch())["loss"].backward()
    opts[0].step()
    diff = changed(before, snapshot(m))
    assert steps == [1]
    assert aug_names(m) <= diff and diff - aug_names(m)


def test_ablation_switches():
    bt = batch()
    m = make(shared_augmenter=True)
    assert m.aug1 is m.aug2
    assert len(m.augmenter_parameters()) == len(list(m.aug1.parameters()))
    m = make(use_cl2=False, beta=0.5).train()
    terms = m.loss(bt)
    assert "cl2" not in terms and "reg" in terms and "cl1" not in terms
    m = make(use_reg=False, cl_weight=0.2, beta=0.5).train()
    terms = m.loss(bt)
    assert "reg" not in terms and "cl2" in terms and "cl1" in terms
    # neither term: the augmenters have no loss, the augmenter step is skipped and they never change
    m = make(use_cl2=False, use_reg=False, cl_weight=0.1).train()
    opts = m.configure_optimizers(Config().train)
    before = snapshot(m)
    terms = m.manual_step(bt, ManualOptimization(opts))
    diff = changed(before, snapshot(m))
    assert "aug_loss" not in terms and diff and diff.isdisjoint(aug_names(m))


def test_configs_load():
    paths = sorted(glob.glob("configs/mclrec/*.yaml")) + ["configs/cl4srec/beauty.yaml"]
    assert len(paths) == 6
    expect = {"beauty": (0.0, 0.05, 0.5), "sports": (0.04, 0.4, 0.5), "yelp": (0.03, 0.1, 0.5),
              "ml-1m": (0.0, 0.01, 0.1), "toys": (0.01, 0.1, 0.5)}
    for p in paths:
        cfg = load_config(p)
        assert cfg.train.examples == "prefix" and cfg.eval.exclude == "none" and cfg.train.metric == "MRR@10"
        assert (cfg.model.d, cfg.model.layers, cfg.model.heads, cfg.model.inner, cfg.model.max_len) == \
            (64, 2, 2, 256, 50)
        if "mclrec" in p:
            key = p.split("/")[-1][:-5]
            c = cfg.model
            assert (c.cl_weight, c.beta, c.dropout) == expect[key], p
            assert c.ce_padding_class, p      # the official CE (docs/methods/mclrec.md)


# --- a short training run --------------------------------------------------------------------------------------
@pytest.mark.parametrize("examples", ["prefix", "sequence"])
def test_short_training_run_learns(examples):
    from seqrec.train import train
    data = make_synthetic(n_users=300, n_items=100)
    cfg = Config(model=model_config_from_dict({"name": "mclrec", "d": 16, "layers": 1, "heads": 2, "inner": 32,
                                               "max_len": 20, "dropout": 0.1, "attn_dropout": 0.1,
                                               "cl_weight": 0.05, "beta": 0.1}))
    cfg.train.examples = examples
    cfg.train.max_epochs = 4 if examples == "prefix" else 12
    cfg.train.batch_size = 128
    cfg.train.threads = 1
    cfg.train.lr = 3e-3
    cfg.validate()
    r = train(cfg, None, quiet=True, data=data)
    hist = r["history"]
    assert hist[-1]["train"]["ce"] < hist[0]["train"]["ce"]
    assert hist[-1]["train"]["loss"] < hist[0]["train"]["loss"]
    split = leave_one_out(data)
    pop = evaluate(Popularity(split), split, "test")["metrics"]["NDCG@10"]
    assert r["metrics"]["test"]["NDCG@10"] > pop
