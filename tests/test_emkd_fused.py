"""EMKD's fused, chunked item losses (seqrec.losses.ensemble_item_losses) against the dense implementation they
replace (per-view CE with F.cross_entropy and the one-pass KD `ensemble_symmetric_kl`, itself held against the
pairwise `symmetric_kl` in test_emkd.py): values and gradients of each term and of the total, for chunk sizes that
divide the rows or not, several temperatures and ensemble sizes, with and without an output bias; the model's loss
and every parameter gradient on both paths; that no [K, n_items] tensor is formed; KD accuracy against float64 where
the members nearly agree; no-grad, autocast and recomputed encoders."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from seqrec.errors import ConfigError
from seqrec.losses import ensemble_item_losses
from seqrec.models.emkd import ensemble_symmetric_kl
from test_emkd import emkd, random_batch

K, N_ITEMS, D, N_VIEWS = 23, 17, 6, 5


def inputs(n_members: int, bias: bool = True, seed: int = 0, spread: float = 1.0):
    """Rows, output layers, targets and the views of the rows (view 4 has none), float32, leaves."""
    g = torch.Generator().manual_seed(seed)
    hidden = [torch.randn(K, D, generator=g).requires_grad_() for _ in range(n_members)]
    weights = [(spread * torch.randn(N_ITEMS, D, generator=g)).requires_grad_() for _ in range(n_members)]
    biases = [torch.randn(N_ITEMS, generator=g).requires_grad_() if bias else None for _ in range(n_members)]
    targets = torch.randint(0, N_ITEMS, (K,), generator=g)
    view_of = torch.randint(0, N_VIEWS - 1, (K,), generator=g)
    return hidden, weights, biases, targets, view_of


def row_weight(view_of: torch.Tensor) -> torch.Tensor:
    per_view = torch.zeros(N_VIEWS).index_add_(0, view_of, torch.ones(len(view_of))).clamp(min=1)
    return (1.0 / per_view)[view_of]


def dense(hidden, weights, biases, targets, view_of, temperature, kd_weight, use_kd=True):
    """The dense path (EMKD._dense_item_losses on given rows): (ce + kd_weight * kd, ce, kd), all [K, n] logits."""
    logits = [F.linear(h, w, b) for h, w, b in zip(hidden, weights, biases)]
    per_view = torch.zeros(N_VIEWS).index_add_(0, view_of, torch.ones(len(view_of))).clamp(min=1)
    ce = sum((torch.zeros(N_VIEWS).index_add_(0, view_of, F.cross_entropy(z, targets, reduction="none"))
              / per_view).sum() for z in logits)
    kd = ce * 0.0
    if use_kd and len(logits) > 1:
        kd = ensemble_symmetric_kl(logits, view_of, N_VIEWS, temperature)
    return ce + kd_weight * kd, ce, kd


def fused(hidden, weights, biases, targets, view_of, temperature, kd_weight, use_kd=True, chunk=0):
    return ensemble_item_losses(hidden, weights, biases, targets, row_weight(view_of), temperature, kd_weight,
                                use_kd, chunk)


def gradients(loss: torch.Tensor, leaves: list) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, [t for t in leaves if t is not None], retain_graph=True))


@pytest.mark.parametrize("n_members", [1, 2, 3])
@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_of_each_term_match_the_dense_path(n_members, temperature, bias):
    hidden, weights, biases, targets, view_of = inputs(n_members, bias)
    leaves = [*hidden, *weights, *biases]
    args = (hidden, weights, biases, targets, view_of, temperature)
    ref_total, ref_ce, ref_kd = dense(*args, kd_weight=0.4)
    ref_grad_ce = gradients(ref_ce, leaves)
    ref_grad_total = gradients(ref_total, leaves)
    if n_members > 1:
        assert float(ref_kd) > 0.05                      # the members disagree: KD is not trivially 0
    for chunk in (0, 1, 5, 7, K, 64):                    # 5 and 7 do not divide K = 23
        total, ce, kd = fused(*args, kd_weight=0.4, chunk=chunk)
        torch.testing.assert_close(ce, ref_ce.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(kd, ref_kd.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(total.detach(), ref_total.detach(), rtol=1e-5, atol=1e-6)
        assert not ce.requires_grad and not kd.requires_grad
        grad_total = gradients(total, leaves)
        for got, want in zip(grad_total, ref_grad_total):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        # each term's gradient: CE alone (kd_weight 0), KD alone as the difference (kd_weight 0.4 minus 0)
        grad_ce = gradients(fused(*args, kd_weight=0.0, chunk=chunk)[0], leaves)
        for got, want in zip(grad_ce, ref_grad_ce):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        if n_members > 1:
            ref_grad_kd = gradients(dense(*args, kd_weight=0.0)[2], leaves)
            for got_total, got_ce, want in zip(grad_total, grad_ce, ref_grad_kd):
                torch.testing.assert_close((got_total - got_ce) / 0.4, want, rtol=1e-4, atol=1e-5)


def test_kd_switched_off_leaves_the_cross_entropy():
    hidden, weights, biases, targets, view_of = inputs(3)
    args = (hidden, weights, biases, targets, view_of, 0.5)
    total, ce, kd = fused(*args, kd_weight=0.4, use_kd=False, chunk=4)
    assert float(kd) == 0.0
    ref_ce = dense(*args, kd_weight=0.0)[1]
    torch.testing.assert_close(total.detach(), ref_ce.detach(), rtol=1e-5, atol=1e-6)
    leaves = [*hidden, *weights, *biases]
    for got, want in zip(gradients(total, leaves), gradients(ref_ce, leaves)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_incoming_gradient_scales_every_gradient():
    # the trainer divides by the accumulation steps and a GradScaler multiplies: backward must scale by it
    hidden, weights, biases, targets, view_of = inputs(3)
    leaves = [*hidden, *weights, *biases]
    base = gradients(fused(hidden, weights, biases, targets, view_of, 0.5, 0.4, chunk=6)[0], leaves)
    scaled = gradients(-2.5 * fused(hidden, weights, biases, targets, view_of, 0.5, 0.4, chunk=6)[0], leaves)
    for a, b in zip(base, scaled):
        torch.testing.assert_close(b, -2.5 * a)


class LargestOutput(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_tensor_of_all_rows_by_all_items_is_formed():
    g = torch.Generator().manual_seed(1)
    k, n, d, chunk = 40, 31, 4, 6
    hidden = [torch.randn(k, d, generator=g).requires_grad_() for _ in range(3)]
    weights = [torch.randn(n, d, generator=g).requires_grad_() for _ in range(3)]
    biases = [torch.randn(n, generator=g).requires_grad_() for _ in range(3)]
    targets = torch.randint(0, n, (k,), generator=g)
    with LargestOutput() as seen:
        total, _, _ = ensemble_item_losses(hidden, weights, biases, targets, torch.rand(k, generator=g), 0.5, 0.1,
                                           True, chunk)
        total.backward()
    assert seen.largest <= chunk * n < k * n          # the work blocks of one chunk ([rows, n]) are the largest


def test_kd_is_accurate_where_the_members_nearly_agree():
    # members 3e-4 apart: KD ~1e-5, where subtracting large similar numbers in float32 loses digits; the fused form
    # multiplies the small member differences instead (float64 naive pairwise reference)
    g = torch.Generator().manual_seed(2)
    h = torch.randn(K, D, generator=g)
    w = torch.randn(N_ITEMS, D, generator=g)
    hidden = [h + 3e-4 * torch.randn(K, D, generator=g) for _ in range(3)]
    targets = torch.randint(0, N_ITEMS, (K,), generator=g)
    view_of = torch.randint(0, N_VIEWS - 1, (K,), generator=g)
    _, _, kd = fused(hidden, [w] * 3, [None] * 3, targets, view_of, 0.3, 0.001, chunk=7)
    q = [torch.log_softmax(x.double() @ w.double().T / 0.3, dim=1) for x in hidden]
    rows = sum(0.5 * ((q[c].exp() * (q[c] - q[a])).sum(1) + (q[a].exp() * (q[a] - q[c])).sum(1))
               for a, c in itertools.combinations(range(3), 2))
    want = float((row_weight(view_of).double() * rows).sum())
    assert 1e-7 < want < 1e-4
    assert float(kd) == pytest.approx(want, rel=2e-4)          # the dense float32 path is ~1e-2 off here


def test_without_gradients_the_values_are_the_same():
    hidden, weights, biases, targets, view_of = inputs(3)
    want = [float(x) for x in fused(hidden, weights, biases, targets, view_of, 0.5, 0.4, chunk=5)]
    with torch.no_grad():
        got = fused(hidden, weights, biases, targets, view_of, 0.5, 0.4, chunk=5)
    assert [float(x) for x in got] == want and not got[0].requires_grad


def parameter_gradients(model, batch, seed: int = 5):
    torch.manual_seed(seed)
    out = model.loss(batch)
    model.zero_grad()
    out["loss"].backward()
    return ({k: float(v.detach()) for k, v in out.items()},
            {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("overrides", [
    ["model.logits_chunk_rows=0"], ["model.logits_chunk_rows=1"], ["model.logits_chunk_rows=4"],
    ["model.logits_chunk_rows=64", "model.kd_temperature=1.0"], ["model.member={tied: true}", "model.n_networks=2"],
    ["model.backbone=sasrec", "model.logits_chunk_rows=5"]])
def test_model_loss_and_parameter_gradients_match_the_dense_path(overrides):
    # init_std 0.5: members disagree (KD well above float32 noise); dropout on: both paths draw the same masks
    batch = random_batch(b=6, t=6, min_len=2)
    model = emkd("model.init_std=0.5", "model.kd_weight=0.5", *overrides)
    values, grads = {}, {}
    for path in (False, True):
        model.fused_item_losses = path
        values[path], grads[path] = parameter_gradients(model, batch)
    assert values[False]["kd"] > 1e-3
    for k in values[False]:
        assert values[True][k] == pytest.approx(values[False][k], rel=1e-5, abs=1e-6), k
    assert grads[True].keys() == grads[False].keys()
    scale = max(float(g.abs().max()) for g in grads[False].values())
    for k in grads[False]:
        torch.testing.assert_close(grads[True][k], grads[False][k], rtol=1e-4, atol=1e-6 * scale, msg=k)


def test_recomputed_encoders_give_the_same_loss_and_gradients():
    batch = random_batch(b=6, t=6)
    model = emkd("model.init_std=0.5", "model.dropout=0.3", "model.attn_dropout=0.3")
    want_values, want = parameter_gradients(model, batch)
    model.cfg.recompute_encoders = True                # the dropout masks are drawn again, the same
    got_values, got = parameter_gradients(model, batch)
    assert got_values == pytest.approx(want_values, rel=1e-6)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-7, msg=k)


def test_autocast_bfloat16_is_close_to_the_dense_path():
    batch = random_batch(b=6, t=6)
    model = emkd("model.init_std=0.5", "model.logits_chunk_rows=4").eval()
    values = {}
    for path in (False, True):
        model.fused_item_losses = path
        torch.manual_seed(3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.loss(batch)
        out["loss"].backward()
        values[path] = {k: float(v.detach()) for k, v in out.items()}
    for k in ("loss", "ce", "kd"):
        assert values[True][k] == pytest.approx(values[False][k], rel=3e-2), k


@pytest.mark.parametrize("bias", [True, False])
def test_autocast_bfloat16_gradients_follow_the_float32_ones(bias):
    # Under autocast the fused path casts its operands once and runs the three products per member in bfloat16,
    # everything else in float32: values and every gradient within bfloat16 rounding of the float32 path (a
    # gradient missing its row weights or a member's KD share would be off by far more).
    hidden, weights, biases, targets, view_of = inputs(3, bias=bias, seed=5)
    leaves = [*hidden, *weights, *biases]
    want = fused(hidden, weights, biases, targets, view_of, 0.3, 0.5, chunk=6)
    want_grads = gradients(want[0], leaves)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fused(hidden, weights, biases, targets, view_of, 0.3, 0.5, chunk=6)
    got_grads = gradients(got[0], leaves)
    for name, a, b in zip(("total", "ce", "kd"), got, want):
        assert a.dtype == torch.float32 and float(a) == pytest.approx(float(b), rel=2e-2), name
    for i, (a, b) in enumerate(zip(got_grads, want_grads)):
        assert a.dtype == torch.float32
        assert float((a - b).norm() / b.norm()) < 3e-2, i


def test_autocast_float16_keeps_small_row_weights_in_the_gradients():
    # float16 (GPUs without bfloat16) runs the logit products in float16 but the two gradient products in float32:
    # the gradients are formed in forward, before a GradScaler's scale reaches them, so float16 operands would flush
    # row-weighted rows (here w ~ 1e-6, where h * w falls to float16's subnormals: dW was 10% off that way).
    hidden, weights, biases, targets, view_of = inputs(3, seed=5)
    leaves = [*hidden, *weights, *biases]
    small = row_weight(view_of) * 1e-6
    want = ensemble_item_losses(hidden, weights, biases, targets, small, 0.3, 0.5, True, 6)
    want_grads = gradients(want[0], leaves)
    with torch.autocast("cpu", dtype=torch.float16):
        got = ensemble_item_losses(hidden, weights, biases, targets, small, 0.3, 0.5, True, 6)
    got_grads = gradients(got[0], leaves)
    assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-2)
    for i, (a, b) in enumerate(zip(got_grads, want_grads)):
        assert a.dtype == torch.float32
        assert float((a - b).norm() / b.norm()) < 1e-2, i


def test_logits_chunk_rows_is_a_checked_emkd_key():
    assert emkd().cfg.logits_chunk_rows == 64
    assert emkd("model.logits_chunk_rows=0").cfg.logits_chunk_rows == 0
    with pytest.raises(ConfigError, match="model.logits_chunk_rows"):
        emkd("model.logits_chunk_rows=-1")
