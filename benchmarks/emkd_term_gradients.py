"""How much does each of EMKD's loss terms move the weights? Per term, the share of the step's gradient.

EMKD's total loss is a weighted sum (docs/methods/emkd.md): CE + kd_weight KD + attr_weight ATTR + icl_weight ICL +
ccl_weight CCL. A term's gradient is the total's gradient minus the gradient of the total without it, on the same
batch with the same masked views and dropout (the RNG is reset before each of the three backward passes; none of the
switched-off terms draws random numbers, which the benchmark checks: the losses must differ by exactly the term).
For the untrained model and each given checkpoint, over the first --batches training batches of epoch 0 (the
trainer's own batches, training mode), per term group (KD; ICL + CCL):
* its loss as a share of the total loss,
* the norm of its weighted gradient over all parameters against the total gradient's norm,
* the cosine between its gradient and the total gradient (how much of it survives in the step).

    python benchmarks/emkd_term_gradients.py --checkpoints RUN/best.pt [...] [--batches 4]
The model's config is the first checkpoint's (the untrained model has that config and the trainer's seed).
Writes benchmarks/results/emkd_term_gradients_cpu.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import provenance, write_result  # noqa: E402

from seqrec.config import config_from_dict  # noqa: E402
from seqrec.train import Trainer  # noqa: E402
from seqrec.train.checkpoint import load_checkpoint, upgrade_config  # noqa: E402

# term groups: name -> the EMKDConfig switches that turn the group off
GROUPS = {"kd": {"use_kd": False}, "icl+ccl": {"use_icl": False, "use_ccl": False}}


def gradient(model, batch, seed: int, **switches) -> tuple[torch.Tensor, float]:
    """(all parameters' gradients as one vector, loss) of model.loss(batch) with the given config switches."""
    cfg = model.cfg
    saved = {k: getattr(cfg, k) for k in switches}
    for k, v in switches.items():
        setattr(cfg, k, v)
    try:
        model.zero_grad(set_to_none=False)
        torch.manual_seed(seed)                     # the same masked views and dropout in every pass
        loss = model.loss(batch)["loss"]
        loss.backward()
    finally:
        for k, v in saved.items():
            setattr(cfg, k, v)
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).clone(), float(loss.detach())


def measure(trainer: Trainer, batches: int) -> dict:
    model = trainer.model.train()
    sums = {g: {"loss_share": 0.0, "norm_ratio": 0.0, "cosine": 0.0} for g in GROUPS}
    n = 0
    for i, batch in enumerate(trainer.loader.epoch(0, trainer._epoch_batches(0)[:batches])):
        g_all, loss_all = gradient(model, batch, seed=1000 + i)
        for group, switches in GROUPS.items():
            g_without, loss_without = gradient(model, batch, seed=1000 + i, **switches)
            g_term = g_all - g_without
            sums[group]["loss_share"] += (loss_all - loss_without) / loss_all
            sums[group]["norm_ratio"] += float(g_term.norm() / g_all.norm())
            sums[group]["cosine"] += float(torch.nn.functional.cosine_similarity(g_term, g_all, dim=0))
        n += 1
    return {g: {k: v / n for k, v in s.items()} for g, s in sums.items()} | {"batches": n}


def check_same_draws(trainer: Trainer) -> float:
    """The loss without KD must be the total minus kd_weight x KD of the same pass (same views and dropout)."""
    model = trainer.model.train()
    batch = next(iter(trainer.loader.epoch(0, trainer._epoch_batches(0)[:1])))
    torch.manual_seed(7)
    with torch.no_grad():
        full = model.loss(batch)
    _, loss_without = gradient(model, batch, seed=7, use_kd=False)
    expected = float(full["loss"]) - model.cfg.kd_weight * float(full["kd"])
    return abs(loss_without - expected) / abs(expected)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", nargs="+", required=True, help="EMKD checkpoints (best.pt / last.pt)")
    ap.add_argument("--batches", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    first = load_checkpoint(args.checkpoints[0])
    cfg = config_from_dict(upgrade_config(first["config"]), source=f"{args.checkpoints[0]} (config)")
    if cfg.model.name != "emkd":
        raise SystemExit(f"emkd_term_gradients.py: {args.checkpoints[0]} is a {cfg.model.name} checkpoint; "
                         f"expected emkd")
    cfg.train = dataclasses.replace(cfg.train, threads=1, prefetch=0)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp) / "run", quiet=True)
        draws = check_same_draws(trainer)
        if not draws < 1e-4:
            raise SystemExit(f"emkd_term_gradients.py: switching KD off changed the pass (relative {draws:.2e}); "
                             f"the terms cannot be separated this way")
        rows["untrained"] = measure(trainer, args.batches)
        for path in args.checkpoints:
            ckpt = load_checkpoint(path)
            trainer.model.load_state_dict(ckpt["model"])
            rows[f"{path} (epoch {ckpt.get('epoch', '?')})"] = measure(trainer, args.batches)
    m = cfg.model
    out = {"kind": "measurement", "name": "emkd_term_gradients_cpu",
           "description": f"EMKD (N {m.n_networks}, M {m.n_views}, d {m.d}; kd_weight {m.kd_weight}, icl/ccl weight "
                          f"{m.icl_weight}/{m.ccl_weight}): each term group's share of the loss, its weighted "
                          f"gradient's norm against the total gradient's, and their cosine, over the first "
                          f"{args.batches} training batches of Beauty (training mode)",
           "summary": {f"{row} {g}": {"loss share": v[g]["loss_share"], "gradient norm ratio": v[g]["norm_ratio"],
                                      "cosine": v[g]["cosine"]} for row, v in rows.items() for g in GROUPS},
           "rows": rows, "same_draws_relative_error": draws, "seconds": time.time() - t0,
           "config": cfg.to_dict(), **provenance(threads=1)}
    write_result(out)


if __name__ == "__main__":
    main()
