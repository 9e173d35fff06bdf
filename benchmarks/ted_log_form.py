"""When does MQSA-TED's official TED form, -sum p_T log(softmax(s) + 1e-24), start to differ from the exact
log-softmax (`model.ted_form`: official | exact)?

For the untrained model and each given checkpoint, on the first --batches training batches of epoch 0 (the
trainer's own batches; dropout off so that both forms see the same student): both TED losses, their relative
difference, and the share of student probabilities p_S below 1e-24 (where the official form caps the term at
-log 1e-24 = 55.3 and passes no gradient). The forms are equal while that share is 0.

    python benchmarks/ted_log_form.py --checkpoints runs/mqsa_ted_x/last.pt [...]
Writes benchmarks/results/ted_log_form_cpu.json.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import provenance, write_result  # noqa: E402

from seqrec.config import load_config  # noqa: E402
from seqrec.models.mqsa_ted import OFFICIAL_TED_EPS, ted_loss  # noqa: E402
from seqrec.train import Trainer  # noqa: E402
from seqrec.train.checkpoint import load_checkpoint  # noqa: E402


@torch.no_grad()
def measure(trainer: Trainer, batches: int) -> dict:
    model = trainer.model.eval()
    cfg = model.cfg
    e = model.embed.item.weight
    exact_sum = official_sum = 0.0
    below = total = 0
    min_log_p = math.inf
    occurrences = 0
    index_batches = trainer._epoch_batches(0)[:batches]
    for batch in trainer.loader.epoch(0, index_batches):
        occ = batch.items[batch.items != 0]
        occurrences += len(occ)
        query = e[occ] * math.sqrt(cfg.d)
        exact_sum += float(ted_loss(occ, query, e[1:], model.teacher, cfg.tau, 256, form="exact")) * len(occ)
        official_sum += float(ted_loss(occ, query, e[1:], model.teacher, cfg.tau, 256, form="official")) * len(occ)
        for i in range(0, len(occ), 256):          # the student's log-probabilities, in row chunks
            log_p = torch.log_softmax(query[i:i + 256].float() @ e[1:].float().T / cfg.tau, dim=1)
            below += int((log_p < math.log(OFFICIAL_TED_EPS)).sum())
            total += log_p.numel()
            min_log_p = min(min_log_p, float(log_p.min()))
    return {"batches": len(index_batches), "occurrences": occurrences,
            "ted_exact_mean": exact_sum / max(occurrences, 1), "ted_official_mean": official_sum / max(occurrences, 1),
            "share_p_below_1e-24": below / max(total, 1), "min_log10_p": min_log_p / math.log(10)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "mqsa_ted" / "beauty.yaml"))
    ap.add_argument("--checkpoints", nargs="*", default=[], help="MQSA-TED checkpoints (best.pt / last.pt)")
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    cfg = load_config(args.config, ["train.threads=1", "train.prefetch=0"])
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, Path(tmp) / "run", quiet=True)
        rows["untrained"] = measure(trainer, args.batches)
        for path in args.checkpoints:
            ckpt = load_checkpoint(path)
            trainer.model.load_state_dict(ckpt["model"])
            rows[f"{path} (epoch {ckpt.get('epoch', '?')})"] = measure(trainer, args.batches)
    for row in rows.values():
        n = row["ted_exact_mean"]
        row["relative_difference"] = (row["ted_exact_mean"] - row["ted_official_mean"]) / n if n else 0.0
    out = {"kind": "measurement", "name": "ted_log_form_cpu",
           "description": "MQSA-TED TED loss, exact log-softmax vs the official log(softmax + 1e-24), on the first "
                          f"{args.batches} training batches (dropout off)",
           "summary": {k: {"share p<1e-24": v["share_p_below_1e-24"], "min log10 p": v["min_log10_p"],
                           "relative difference": v["relative_difference"]} for k, v in rows.items()},
           "rows": rows, "seconds": time.time() - t0, "config": str(args.config), **provenance(threads=1)}
    write_result(out)


if __name__ == "__main__":
    main()
