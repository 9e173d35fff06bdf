"""MQSA-TED: window mean, MQSA block, transition matrix, TED loss, towers, switches, a short training run.
Every reference below is an independent naive implementation (Python loops over rows / positions)."""
from __future__ import annotations


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqrec.data.batch import Batch
from seqrec.data.dataset import InteractionData, leave_one_out
from seqrec.data.transitions import split_transition_matrix, transition_matrix
from seqrec.models import DatasetInfo, build_model, model_config_from_dict
from seqrec.models.mqsa_ted import TransitionTeacher, ted_loss
from seqrec.nn import attention_mask
from seqrec.nn.windowed import MQSABlock, window_mean


def right_padded(lengths, t, n_items, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.zeros(len(lengths), t, dtype=torch.long)
    for b, n in enumerate(lengths):
        items[b, :n] = torch.randint(1, n_items + 1, (n,), generator=g)
    return items, torch.tensor(lengths)


def make_model(n_items=30, **over):
    cfg = model_config_from_dict({"name": "mqsa_ted", "d": 16, "max_len": 10, **over})
    cfg.validate()
    torch.manual_seed(0)
    return build_model(cfg, DatasetInfo(n_items))


# --- window mean -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("window", [1, 2, 3, 5])
def test_window_mean_matches_naive_loop(window):
    torch.manual_seed(1)
    lengths = [7, 1, 4, 0, 3]
    b, t, d = len(lengths), 7, 5
    x = torch.randn(b, t, d, dtype=torch.float64)
    keep = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    out = window_mean(x, keep, window)
    ref = torch.zeros_like(x)
    for i in range(b):
        for j in range(t):
            vals = [x[i, s] for s in range(max(0, j - window + 1), j + 1) if keep[i, s]]
            if vals:
                ref[i, j] = sum(vals) / len(vals)
    torch.testing.assert_close(out, ref)
    # at real positions the mean only uses real items: padding content must not matter
    x2 = x.clone()
    x2[~keep] = 1e3
    torch.testing.assert_close(window_mean(x2, keep, window)[keep], ref[keep])


# --- the block -------------------------------------------------------------------------------------------------
def test_mqsa_block_matches_formula():
    torch.manual_seed(2)
    d, t = 8, 6
    blk = MQSABlock(d, heads=2, dropout=0.3, attn_dropout=0.3).eval()
    for p in blk.parameters():
        torch.nn.init.normal_(p, 0, 0.5)
    lengths = [6, 3]
    keep = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    x = torch.randn(2, t, d) * keep[..., None]
    q = window_mean(x, keep, 3)
    out = blk(x, attention_mask(keep, causal=True), keep, q)

    def ln(v, mod):
        return (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + mod.eps) * mod.weight + mod.bias

    a = blk.attn
    for b in range(2):
        for i in range(lengths[b]):
            qi = ln(q[b, i], blk.norm_q)
            heads = []
            for h in range(2):
                sl = slice(4 * h, 4 * h + 4)
                qh = (a.q.weight @ qi + a.q.bias)[sl]
                s = torch.stack([(a.k.weight @ x[b, j] + a.k.bias)[sl] @ qh / 2.0 for j in range(i + 1)])
                w = torch.softmax(s, 0)
                heads.append(sum(w[j] * (a.v.weight @ x[b, j] + a.v.bias)[sl] for j in range(i + 1)))
            o = ln(torch.cat(heads) + qi, blk.norm_o)
            f = blk.ffn
            o = o + f.fc2.weight @ torch.relu(f.fc1.weight @ o + f.fc1.bias) + f.fc2.bias
            torch.testing.assert_close(out[b, i], o, rtol=1e-4, atol=1e-5)
        assert torch.all(out[b, lengths[b]:] == 0)


# --- transition matrix -----------------------------------------------------------------------------------------
def test_transition_matrix_hand_example():
    seqs = [[1, 2, 3, 2, 3], [2, 3], [4], [3, 1, 2]]
    flat = np.concatenate([np.array(s) for s in seqs])
    offsets = np.cumsum([0] + [len(s) for s in seqs])
    c = transition_matrix(flat, offsets, n_items=5).toarray()
    ref = np.zeros((6, 6))
    for a, b in [(1, 2), (2, 3), (3, 2), (2, 3), (2, 3), (3, 1), (1, 2)]:
        ref[a, b] += 1
    np.testing.assert_array_equal(c, ref)              # no pair across users (3 -> 2 at the 1st/2nd boundary...)
    # cut to the last 3 items of each sequence: [3, 2, 3], [2, 3], [4], [3, 1, 2]
    c3 = transition_matrix(flat, offsets, n_items=5, last=3).toarray()
    ref3 = np.zeros((6, 6))
    for a, b in [(3, 2), (2, 3), (2, 3), (3, 1), (1, 2)]:
        ref3[a, b] += 1
    np.testing.assert_array_equal(c3, ref3)


def test_transition_matrix_uses_training_items_only():
    rng = np.random.default_rng(0)
    n_users, base = 40, 20
    seqs = []
    for u in range(n_users):      # the last two items (valid, test targets) are sentinels used nowhere else
        body = rng.integers(1, base + 1, size=rng.integers(1, 8)).tolist()
        seqs.append(body + [base + 1 + 2 * u, base + 2 + 2 * u])
    data = InteractionData.from_sequences("s", [np.array(s) for s in seqs], n_items=base + 2 * n_users)
    split = leave_one_out(data)
    c = split_transition_matrix(split).toarray()
    assert c[base + 1:, :].sum() == 0 and c[:, base + 1:].sum() == 0
    assert c.sum() == sum(max(len(s) - 3, 0) for s in seqs)
    # the model's prepare() builds exactly this (here: all its training items fit the span)
    m = make_model(n_items=data.n_items, max_len=10)
    m.prepare(split)
    ref = TransitionTeacher(split_transition_matrix(split, last=10), m.cfg.tau)
    torch.testing.assert_close(m.teacher.base, ref.base)
    torch.testing.assert_close(m.teacher.coef.to_dense(), ref.coef.to_dense())
    assert not any("transition" in k for k in m.state_dict())


# --- TED loss --------------------------------------------------------------------------------------------------
def test_ted_loss_matches_dense_reference():
    torch.manual_seed(3)
    n, tau = 12, 0.1
    seqs = [[1, 2, 3, 1, 2, 5], [2, 2, 7, 1], [3, 4, 3, 4, 3]]       # item 5, 6.. have no outgoing transitions
    flat = np.concatenate([np.array(s) for s in seqs])
    c = transition_matrix(flat, np.cumsum([0] + [len(s) for s in seqs]), n)
    items = torch.tensor([1, 2, 2, 3, 5, 9, 1, 7, 4, 4])           # duplicates kept; 5 and 9: empty rows
    query = torch.randn(len(items), 6, requires_grad=True)
    emb = torch.randn(n, 6, requires_grad=True)
    loss = ted_loss(items, query, emb, TransitionTeacher(c, tau), tau)
    logits = (query.double() @ emb.double().T) / tau
    dense = c.toarray()
    ref = []
    for k, i in enumerate(items.tolist()):
        row = torch.tensor(dense[i, 1:], dtype=torch.float64)
        r = row / row.max() if row.max() > 0 else row
        p_t = torch.softmax(r / tau, 0)
        if row.max() == 0:
            torch.testing.assert_close(p_t, torch.full((n,), 1.0 / n, dtype=torch.float64))   # uniform teacher
        ref.append(-(p_t * torch.log_softmax(logits[k], 0)).sum())
    ref = torch.stack(ref).mean()
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-6)
    g = torch.autograd.grad(loss, (query, emb))
    g_ref = torch.autograd.grad(ref, (query, emb))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scale", [0.05, 40.0])
@pytest.mark.parametrize("chunk", [0, 4])
def test_official_ted_form_matches_naive_guarded_log(scale, chunk):
    """form='official' is -sum p_T log(softmax + 1e-24) (a naive loop in float64); at scale 0.05 every student
    probability is far above 1e-24 and it equals the exact form, at scale 40 some underflow and it differs."""
    torch.manual_seed(4)
    n, tau = 12, 0.1
    seqs = [[1, 2, 3, 1, 2, 5], [2, 2, 7, 1], [3, 4, 3, 4, 3]]
    flat = np.concatenate([np.array(s) for s in seqs])
    c = transition_matrix(flat, np.cumsum([0] + [len(s) for s in seqs]), n)
    teacher = TransitionTeacher(c, tau)
    items = torch.tensor([1, 2, 2, 3, 5, 9, 1, 7, 4, 4])
    query = (scale * torch.randn(len(items), 6)).requires_grad_()
    emb = torch.randn(n, 6, requires_grad=True)
    loss = ted_loss(items, query, emb, teacher, tau, chunk_rows=chunk, form="official")
    logits = (query.double() @ emb.double().T) / tau
    dense_teacher = teacher.base.double()[items, None] + teacher.coef.to_dense().double()[items]
    ref = torch.stack([-(dense_teacher[k] * torch.log(torch.softmax(logits[k], 0) + 1e-24)).sum()
                       for k in range(len(items))]).mean()
    torch.testing.assert_close(loss.double(), ref, rtol=1e-5, atol=1e-5)
    g = torch.autograd.grad(loss, (query, emb))
    g_ref = torch.autograd.grad(ref, (query, emb))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-5)
    exact = ted_loss(items, query, emb, teacher, tau, form="exact")
    if scale < 1:
        torch.testing.assert_close(exact, loss, rtol=1e-5, atol=1e-6)
    else:
        assert torch.softmax(logits, 1).min() < 1e-24 and exact.item() > loss.item() + 1.0


def test_ted_loss_small_tau_is_finite():
    c = transition_matrix(np.array([1, 2, 1, 3, 1, 2]), np.array([0, 6]), 4)
    loss = ted_loss(torch.tensor([1, 2, 3]), torch.randn(3, 5), torch.randn(4, 5), TransitionTeacher(c, 0.005),
                    tau=0.005)
    assert torch.isfinite(loss)


def test_model_ted_uses_tau_and_embeddings():
    m = make_model(n_items=12, dropout=0.0)
    c = transition_matrix(np.array([1, 2, 3, 1, 2, 4]), np.array([0, 6]), 12)
    m.set_transitions(c)
    items = torch.tensor([[1, 2, 3, 0], [4, 1, 0, 0]])
    e = m.embed.item.weight
    occ = torch.tensor([1, 2, 3, 4, 1])
    torch.testing.assert_close(m.ted(items), ted_loss(occ, e[occ] * 4.0, e[1:], TransitionTeacher(c, 0.1), 0.1))


# --- towers and switches ---------------------------------------------------------------------------------------
def batch_of(lengths, t=10, n_items=30, seed=0):
    items, lengths = right_padded(lengths, t, n_items, seed)
    targets = torch.zeros_like(items)
    targets[:, :-1] = items[:, 1:]
    return Batch(items, lengths, targets)


def test_alpha_one_ignores_long_tower():
    m = make_model(alpha=0.5).eval()
    b = batch_of([10, 4, 1])
    s_mixed = m.score(b)
    m.alpha = 1.0
    s1 = m.score(b)
    with torch.no_grad():
        for p in m.long.parameters():
            p.add_(torch.randn_like(p))
    torch.testing.assert_close(m.score(b), s1)
    assert not torch.allclose(s_mixed[:, 1:], s1[:, 1:])
    # a model built with alpha = 1 has no long tower and gives the same scores with the same remaining weights
    m1 = make_model(alpha=1.0).eval()
    assert m1.long is None
    missing, unexpected = m1.load_state_dict(m.state_dict(), strict=False)
    assert not missing and all(k.startswith("long.") for k in unexpected)
    torch.testing.assert_close(m1.score(b), s1)


def test_towers_combined_before_item_product():
    m = make_model(alpha=0.3).eval()
    b = batch_of([9, 5])
    keep = b.items != 0
    x = m.embed(b.items, b.lengths)
    mask = attention_mask(keep, True)
    hs, hl = m.short(x, mask, keep), m.long(x, mask, keep)
    e = m.embed.item.weight
    last = hs[torch.arange(2), b.lengths - 1], hl[torch.arange(2), b.lengths - 1]
    ref = 0.3 * last[0] @ e.T + 0.7 * last[1] @ e.T
    torch.testing.assert_close(m.score(b)[:, 1:], ref[:, 1:])
    assert torch.isneginf(m.score(b)[:, 0]).all()


def test_embedding_right_aligned_positions_and_padding_width():
    # x0 = E[item] * sqrt(d) + P[slot of a left-padded max_len window], no LayerNorm, padding rows 0
    m = make_model(max_len=10).eval()
    b = batch_of([4, 2], t=6)
    x = m.embed(b.items, b.lengths)
    e, p = m.embed.item.weight, m.embed.position.weight
    for i, n in enumerate(b.lengths.tolist()):
        for j in range(6):
            ref = e[b.items[i, j]] * 4.0 + p[10 - n + j] if j < n else torch.zeros(16)
            torch.testing.assert_close(x[i, j], ref)
    assert torch.all(e[0] == 0)
    wide = Batch(F.pad(b.items, (0, 4)), b.lengths)
    torch.testing.assert_close(m.score(b), m.score(wide))


def test_lambda_zero_skips_ted(monkeypatch):
    m = make_model(lambda_kd=0.0)
    data = InteractionData.from_sequences("s", [np.arange(1, 8), np.arange(3, 12)], n_items=30)
    m.prepare(leave_one_out(data))
    assert m.teacher is None
    monkeypatch.setattr(m, "ted", lambda *a: (_ for _ in ()).throw(AssertionError("TED computed")))
    out = m.loss(batch_of([6, 3]))
    assert set(out) == {"loss", "ce"}
    torch.testing.assert_close(out["loss"].detach(), out["ce"])


def test_lambda_kd_without_prepare_raises():
    m = make_model(lambda_kd=0.1)
    with pytest.raises(RuntimeError, match="prepare"):
        m.loss(batch_of([3]))


def test_loss_total_and_ce_only_at_targets():
    m = make_model(lambda_kd=0.5)
    data = InteractionData.from_sequences("s", [np.arange(1, 8), np.arange(3, 12)], n_items=30)
    m.prepare(leave_one_out(data))
    b = batch_of([6, 3])
    torch.manual_seed(0)
    out = m.loss(b)
    torch.testing.assert_close(out["loss"].detach(), out["ce"] + 0.5 * out["ted"])
    m.eval()
    h = m.encode(b.items, b.lengths)
    logits = h @ m.embed.item.weight.T
    terms = [F.cross_entropy(logits[i, j, 1:], b.targets[i, j] - 1) for i in range(2) for j in range(10)
             if b.targets[i, j] > 0]
    ce = m.loss(b)["ce"]
    torch.testing.assert_close(ce, torch.stack(terms).mean())


def test_official_cut_training_spans():
    from seqrec.data.batch import build_examples, causal_batch
    m = make_model(max_len=10)
    assert m.span_len == 10
    assert make_model(max_len=10, official_cut=False).span_len == 11
    data = InteractionData.from_sequences("s", [np.arange(1, 30)], n_items=30)
    split = leave_one_out(data)                                 # 27 training items 1..27
    ex = build_examples(split, "sequence", m.span_len)
    b = causal_batch(data.items, ex, np.arange(len(ex)))
    assert b.items[0].tolist() == list(range(18, 27))           # cut = last 10 = 18..27, input cut[:-1]
    assert b.targets[0].tolist() == list(range(19, 28))


# --- end to end ------------------------------------------------------------------------------------------------
def test_short_training_run_lowers_loss():
    from seqrec.config import load_config
    from seqrec.data.synthetic import make_synthetic
    from seqrec.train import train
    data = make_synthetic(n_users=300, n_items=100)
    cfg = load_config(None, ["model.name=mqsa_ted", "model.d=32", "model.max_len=20", "model.dropout=0.2",
                             "model.attn_dropout=0.2", "train.examples=sequence", "train.max_epochs=6",
                             "train.lr=0.005", "train.threads=1", "train.patience=0", "train.weight_decay=0.0001",
                             "eval.exclude=history", "train.metric=NDCG@20"])
    r = train(cfg, quiet=True, data=data)
    hist = r["history"]
    assert hist[-1]["train"]["loss"] < hist[0]["train"]["loss"]
    assert hist[-1]["train"]["ted"] < hist[0]["train"]["ted"]
    assert hist[-1]["train"]["ce"] < hist[0]["train"]["ce"]
    assert r["metrics"]["valid"]["NDCG@20"] > 0.1               # popularity alone gives much less on this data
    assert r["method"] == "mqsa_ted" and r["protocol"]["exclude"] == "history"


def test_logits_chunk_rows_gives_the_same_loss_and_gradients():
    """model.logits_chunk_rows chunks the rec loss and TED's log-partition with recomputation: same numbers."""
    c = transition_matrix(np.array([1, 2, 3, 1, 2, 4, 5, 1]), np.array([0, 8]), 30)
    b = batch_of([10, 4, 7, 2])
    out = []
    for chunk in (0, 5):
        m = make_model(dropout=0.0, attn_dropout=0.0, logits_chunk_rows=chunk)
        m.set_transitions(c)
        terms = m.loss(b)
        grads = torch.autograd.grad(terms["loss"], list(m.parameters()))
        out.append((terms, grads))
    (t0, g0), (t1, g1) = out
    for k in ("ce", "ted", "loss"):
        torch.testing.assert_close(t0[k], t1[k])
    for a, b_ in zip(g0, g1):
        torch.testing.assert_close(a, b_, rtol=1e-4, atol=1e-6)


def test_emkd_accepts_logits_chunk_rows():
    # EMKD's fused CE + KD chunk their rows too (same numbers: tests/test_emkd_fused.py)
    cfg = model_config_from_dict({"name": "emkd", "logits_chunk_rows": 16})
    cfg.validate()
    assert cfg.logits_chunk_rows == 16
