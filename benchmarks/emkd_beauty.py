"""EMKD accuracy on Beauty: the ensemble (N = 3 BERT4Rec members, M = 8 views, all terms) against a single BERT4Rec
trained the same way (sliding windows, cloze, same width), with the same wall-clock budget each and the same
protocol (leave-one-out, full ranking, items of the input window excluded; best valid NDCG@10 epoch tested).

CPU (time-budgeted; the official d = 256 ensemble needs ~75 s per batch on one thread, so a smaller width is used
and recorded in the result):
    python benchmarks/emkd_beauty.py --budget-min 120 --d 64
GPU (the official settings of configs/emkd/beauty.yaml, 250 epochs each, validation from epoch 100):
    python benchmarks/emkd_beauty.py --full --device cuda

Writes benchmarks/results/emkd_beauty_<tag>_emkd.json and ..._bert4rec.json (the trainer's result dicts, with a
"benchmark" entry describing the comparison); <tag> = full, or budget<B>m_d<D> (prefixed smoke_ with --smoke).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from seqrec.config import load_config  # noqa: E402
from seqrec.data.loading import load_dataset  # noqa: E402
from seqrec.train import train  # noqa: E402
from seqrec.utils import atomic_write_json  # noqa: E402

CONFIG = ROOT / "configs" / "emkd" / "beauty.yaml"
# a single BERT4Rec with the EMKD member's settings (same encoder, data and cloze rule)
BERT4REC_MODEL = ["model.name=bert4rec", "model.max_len=15", "model.heads=2", "model.dropout=0.3",
                  "model.attn_dropout=0.3", "model.mask_prob=0.15", "model.tied=false"]


def overrides_for(model: str, args) -> list[str]:
    common = [f"train.threads={args.threads}", f"train.device={args.device}", f"train.seed={args.seed}"]
    if not args.full:
        common += [f"train.time_budget_s={args.budget_min * 60}", "train.eval_start=1",
                   f"train.eval_every={args.eval_every}", f"train.patience={args.patience}"]
    width = [] if args.full else [f"model.d={args.d}", f"model.inner={4 * args.d}"]
    if model == "emkd":
        return common + width
    return common + BERT4REC_MODEL + (["model.d=256", "model.inner=1024"] if args.full else width)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-min", type=float, default=120.0, help="training wall-clock minutes per model (CPU)")
    ap.add_argument("--d", type=int, default=64, help="hidden size in budget mode (FFN = 4 d); --full uses 256")
    ap.add_argument("--full", action="store_true", help="official settings, 250 epochs each (a GPU)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--eval-every", type=int, default=1)
    ap.add_argument("--patience", type=int, default=0,
                    help="budget mode: stop a model after this many evaluations without a better valid NDCG@10 "
                         "(0 = train for the whole budget); the best-validation epoch is tested either way")
    ap.add_argument("--models", default="emkd,bert4rec", help="comma-separated; one per process runs them in parallel")
    ap.add_argument("--smoke", action="store_true", help="name the result files smoke_* (not results)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tag = "full" if args.full else f"budget{args.budget_min:g}m_d{args.d}"
    if args.smoke:
        tag = "smoke_" + tag
    cfg0 = load_config(CONFIG)
    data = load_dataset(cfg0.data)
    command = " ".join(["python"] + sys.argv)
    for model in args.models.split(","):
        cfg = load_config(CONFIG, overrides_for(model, args))
        t0 = time.perf_counter()
        result = train(cfg, None, quiet=False, data=data, command=command)
        result["benchmark"] = {
            "name": "emkd_beauty", "mode": "full" if args.full else "budget", "tag": tag,
            "budget_min_per_model": None if args.full else args.budget_min,
            "d": cfg.model.d, "inner": cfg.model.inner,
            "note": ("EMKD (N=3, M=8, KD+ICL+CCL+attribute) vs a single BERT4Rec, same data, windows, cloze rule, "
                     "protocol and wall-clock budget" + ("" if args.full else
                                                         f"; width reduced to d={cfg.model.d} for CPU")),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        out = ROOT / "benchmarks" / "results" / f"emkd_beauty_{tag}_{model}.json"
        atomic_write_json(out, result)
        t = result["metrics"]["test"]
        print(f"{model}: epochs {result['epochs_run']} best {result['best_epoch']} test NDCG@10 {t['NDCG@10']:.4f} "
              f"HR@10 {t['HR@10']:.4f} -> {out}", flush=True)


if __name__ == "__main__":
    main()
