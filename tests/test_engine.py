"""The training engine: host-device syncs per step (a dispatch-mode counter), loss read-back only every N steps,
torch.compile of every model, gradient accumulation, LR schedules, the fp16 gradient scaler of the manual handle,
and the precision checks."""
from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch

from conftest import TINY
from seqrec.config import load_config, model_config_class
from seqrec.data.synthetic import make_synthetic
from seqrec.errors import ConfigError
from seqrec.train import Trainer
from seqrec.train.manual import ManualOptimization
from seqrec.train.syncs import SyncCounter
from seqrec.train.trainer import lr_factor

MODELS = ("sasrec", "bert4rec", "gru4rec", "cl4srec", "mclrec", "emkd", "mqsa_ted")
# the step of these draws its masks / occurrences on the device and finds them once (one sync allowed)
ONE_SYNC_ALLOWED = {"mclrec", "emkd", "mqsa_ted"}


def test_counter_sees_the_syncs_it_claims():
    x = torch.arange(6.0)
    with SyncCounter() as c:
        _ = x[x > 2]                  # boolean mask
        _ = float(x.sum())            # a value read
        _ = (x > 1).nonzero()
        _ = x[torch.tensor([0, 2])]   # an index gather: no sync
    assert len(c.ops) == 3, c.ops


def tiny_model_overrides(name: str, *extra: str) -> list[str]:
    """TINY's model keys that this model has, plus small ensemble settings for EMKD."""
    fields = {f.name for f in dataclasses.fields(model_config_class(name))}
    keep = [o for o in TINY if not o.startswith("model.") or o.split("=")[0][6:] in fields]
    more = {"emkd": ["model.n_networks=2", "model.n_views=2", "model.inner=32", "model.heads=1"],
            "gru4rec": ["model.hidden=16"]}.get(name, [])
    return keep + [f"model.name={name}"] + more + list(extra)


@functools.lru_cache(maxsize=1)
def synthetic_data():
    return make_synthetic(n_users=200, n_items=60)


def make_trainer(name: str, *extra: str) -> Trainer:
    return Trainer(load_config(None, tiny_model_overrides(name, *extra)), None, quiet=True, data=synthetic_data())


@pytest.mark.parametrize("examples", ["prefix", "sequence"])
@pytest.mark.parametrize("name", MODELS)
def test_host_syncs_per_training_step(name, examples):
    if examples == "sequence" and name in ("bert4rec", "emkd"):
        pytest.skip("cloze models take windows, not prefixes")
    trainer = make_trainer(name, f"train.examples={examples}")
    batches = trainer._epoch_batches(1)[:3]
    for batch in trainer.loader.epoch(1, batches):
        with SyncCounter() as counter:
            trainer.training_step(batch)
        allowed = 1 if name in ONE_SYNC_ALLOWED else 0
        assert len(counter.ops) <= allowed, f"{name}: {counter.ops}"


SAMPLED_LOSSES = [("sampled_softmax", "uniform", "batch"), ("sampled_softmax", "popularity", "batch"),
                  ("sampled_softmax", "in_batch", "batch"), ("gbce", "uniform", "batch"),
                  ("sampled_softmax", "popularity", "row")]       # per-row [K, N] draws and gathers


@pytest.mark.parametrize("loss, sampler, per", SAMPLED_LOSSES)
@pytest.mark.parametrize("name", ("sasrec", "gru4rec", "bert4rec", "cl4srec"))
def test_host_syncs_per_training_step_of_the_sampled_losses(name, loss, sampler, per):
    # negatives drawn on the device (randint / inverse-CDF searchsorted / the batch's targets): still no sync
    trainer = make_trainer(name, f"model.loss={loss}", f"model.negative_sampler={sampler}", "model.negatives=16",
                           f"model.negatives_per={per}")
    for batch in trainer.loader.epoch(1, trainer._epoch_batches(1)[:2]):
        with SyncCounter() as counter:
            trainer.training_step(batch)
        assert counter.ops == [], f"{name} {loss} {sampler} {per}: {counter.ops}"


def test_losses_are_read_back_only_every_log_every_batches():
    trainer = make_trainer("sasrec", "train.log_every=4", "train.batch_size=16")
    n = len(trainer._epoch_batches(1))
    assert n >= 9
    reads, syncs_outside_reads = [], []
    original_read = trainer._read
    inside = {"read": False}

    def read(*a, **k):
        reads.append(a[4])            # the step it was called at
        inside["read"] = True
        try:
            return original_read(*a, **k)
        finally:
            inside["read"] = False

    trainer._read = read

    class Outside(SyncCounter):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            before = len(self.ops)
            out = super().__torch_dispatch__(func, types, args, kwargs)
            if len(self.ops) > before and not inside["read"]:
                syncs_outside_reads.append(self.ops[-1])
            return out

    with Outside():
        trainer.train_epoch(1)
    assert reads == [s for s in range(1, n + 1) if s % 4 == 0 or s == n]
    assert syncs_outside_reads == []


@pytest.mark.parametrize("name", MODELS)
def test_compile_runs_every_model(name, monkeypatch):
    # aot_eager traces and functionalises forward and backward exactly as the default backend does, without
    # generating C++ (that takes ~30 s per graph here; test_compile_with_inductor runs it once)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    torch._dynamo.reset()
    eager = make_trainer(name, "train.pad_multiple=8")
    compiled = make_trainer(name, "train.compile=true")
    batches = compiled._epoch_batches(1)[:2]
    for b_eager, b_comp in zip(eager.loader.epoch(1, batches), compiled.loader.epoch(1, batches)):
        assert b_comp.items.shape[1] % 8 == 0 or b_comp.items.shape[1] == compiled.model.span_len - (
            compiled.model.objective == "causal")
        torch.manual_seed(0)
        te = eager.training_step(b_eager)
        torch.manual_seed(0)
        tc = compiled.training_step(b_comp)
        assert te.keys() == tc.keys()
        for k in te:   # same weights, batches and random streams: the same loss
            torch.testing.assert_close(tc[k], te[k], rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


def test_compile_with_inductor_matches_eager():
    # with dropout: on a CPU the trainer has inductor draw from ATen's generator (fallback_random), eager's stream
    torch._dynamo.reset()
    eager = make_trainer("sasrec", "train.pad_multiple=8")
    compiled = make_trainer("sasrec", "train.compile=true")
    batches = compiled._epoch_batches(1)[:2]
    for b_eager, b_comp in zip(eager.loader.epoch(1, batches), compiled.loader.epoch(1, batches)):
        torch.manual_seed(0)
        te = eager.training_step(b_eager)
        torch.manual_seed(0)
        tc = compiled.training_step(b_comp)
        torch.testing.assert_close(tc["loss"], te["loss"], rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


def test_accumulation_equals_one_step_on_the_summed_batches():
    # no dropout: the loss is a deterministic function of the weights and the batch
    acc = make_trainer("sasrec", "train.accumulate=2", "model.dropout=0", "model.attn_dropout=0")
    ref = make_trainer("sasrec", "model.dropout=0", "model.attn_dropout=0")
    ref.model.load_state_dict(acc.model.state_dict())
    b1, b2 = list(acc.loader.epoch(1, acc._epoch_batches(1)[:2]))
    before = {k: v.clone() for k, v in acc.model.state_dict().items()}
    acc.training_step(b1, group_size=2, step_now=False)
    assert all(torch.equal(v, acc.model.state_dict()[k]) for k, v in before.items())     # no step yet
    acc.training_step(b2, group_size=2, step_now=True)
    # reference: the mean of the two batches' losses, one backward, one Adam step
    opt = ref.optimizers[0]
    opt.zero_grad()
    (0.5 * ref.model.loss(b1)["loss"] + 0.5 * ref.model.loss(b2)["loss"]).backward()
    opt.step()
    for k, v in ref.model.state_dict().items():
        torch.testing.assert_close(acc.model.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def test_lr_schedules_hand_computed():
    assert [lr_factor(s, 10, 0, "constant") for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    assert [lr_factor(s, 10, 4, "constant") for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert [lr_factor(s, 10, 0, "linear") for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert lr_factor(2, 10, 2, "linear") == 1.0 and lr_factor(6, 10, 2, "linear") == 0.5
    assert lr_factor(0, 10, 0, "cosine") == 1.0 and abs(lr_factor(5, 10, 0, "cosine") - 0.5) < 1e-12
    assert abs(lr_factor(10, 10, 0, "cosine")) < 1e-12


def test_trainer_applies_the_schedule_per_optimiser_step():
    t = make_trainer("sasrec", "train.schedule=linear", "train.warmup_steps=2", "train.accumulate=2",
                     "train.max_epochs=2")
    steps_per_epoch = math.ceil(t.batches_per_epoch / 2)
    total = 2 * steps_per_epoch
    lrs = []
    for batch_no, batch in enumerate(t.loader.epoch(1, t._epoch_batches(1)[:4]), 1):
        lrs.append(t.optimizers[0].param_groups[0]["lr"])
        t.training_step(batch, group_size=2, step_now=batch_no % 2 == 0)
    lr = t.cfg.train.lr
    assert lrs == pytest.approx([lr * 0.5, lr * 0.5, lr * 1.0, lr * 1.0])      # warmup 1/2, 2/2 per step
    # after two optimiser steps the schedule is at step 2 of `total`: warmup done, linear decay starting
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(lr * lr_factor(2, total, 2, "linear"))
    assert lr_factor(3, total, 2, "linear") < 1.0


def test_manual_handle_scales_and_skips_non_finite_steps():
    # the fp16 GradScaler logic of the handle, exercised on the CPU (fp16 itself is refused on CPUs)
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    handle = ManualOptimization([opt], scaler=scaler)
    handle.zero_grad()
    handle.backward((w * 2).sum(), [w])
    assert torch.equal(w.grad, torch.full((3,), 16.0))               # scaled by 8
    handle.step(opt, [w])
    assert torch.allclose(w.detach(), torch.full((3,), 0.8))         # unscaled gradient 2, lr 0.1
    handle.zero_grad()
    handle.backward((w * float("inf")).sum(), [w])
    handle.step(opt, [w])                                            # skipped, scale halved
    assert torch.allclose(w.detach(), torch.full((3,), 0.8)) and scaler.get_scale() == 4.0


def test_precision_checks(monkeypatch):
    import seqrec.train.precision as precision
    cpu = torch.device("cpu")
    assert precision.resolve_precision("fp32", cpu) == "fp32"
    assert precision.resolve_precision("auto", cpu) == "fp32"        # measured faster than bf16 on CPUs
    with pytest.raises(ConfigError, match="fp16 is for GPUs"):
        precision.resolve_precision("fp16", cpu)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="emulated"):
        precision.resolve_precision("bf16", cpu)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_precision("bf16", cpu) == "bf16"


def test_native_bf16_detection_reads_cpu_flags(tmp_path, monkeypatch):
    import seqrec.train.precision as precision
    flags = (tmp_path / "cpuinfo")
    for line, expected in (("flags : fpu avx512f avx512_bf16", True), ("flags : fpu amx_bf16 amx_tile", True),
                           ("flags : fpu avx2 avx512f", False)):
        flags.write_text(f"processor : 0\n{line}\n")
        assert precision.native_bf16_in_flags(flags) is expected


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("name, extra", [
    ("bert4rec", ()),                                                   # masks drawn by the batch loader
    ("mclrec", ()),                                                     # manual optimisation, two optimisers
    ("sasrec", ("train.schedule=cosine", "train.warmup_steps=3", "train.accumulate=2")),
    ("sasrec", ("model.loss=sampled_softmax", "model.negative_sampler=popularity", "model.negatives=16")),  # negatives
])
def test_exact_resume_of_the_new_engine_state(name, extra, tmp_path, monkeypatch):
    cfg = load_config(None, tiny_model_overrides(name, "train.max_epochs=3", *extra))
    Trainer(cfg, tmp_path / "a", quiet=True, data=synthetic_data()).fit()

    # the same run, killed right after its first checkpoint, then resumed
    save = Trainer._save_state

    def save_then_die(self, finished):
        save(self, finished)
        raise Interrupted

    monkeypatch.setattr(Trainer, "_save_state", save_then_die)
    with pytest.raises(Interrupted):
        Trainer(cfg, tmp_path / "b", quiet=True, data=synthetic_data()).fit()
    monkeypatch.setattr(Trainer, "_save_state", save)
    Trainer(cfg, tmp_path / "b", quiet=True, resume=True, data=synthetic_data()).fit()

    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert [h["train"] for h in a["history"]] == [h["train"] for h in b["history"]]
    for k, v in a["model"].items():
        assert torch.equal(b["model"][k], v), f"{name}: {k} differs after resume"
    assert a["schedulers"] == b["schedulers"]
