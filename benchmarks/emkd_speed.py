"""EMKD training speed on Beauty with the official settings (N 3, M 8, d 256, max_len 15, batch 256): times a few
training batches of one epoch and extrapolates to the epoch's batch count, for item logits computed only at the
masked positions (this library, `model.logits_at: masked`) and at every position (the official code's way,
`model.logits_at: all`), side by side in the same run on the same batches.

    python benchmarks/emkd_speed.py --batches 5 --threads 1          # CPU (a few minutes)
    python benchmarks/emkd_speed.py --full --device cuda             # a GPU: 30 batches each

Writes benchmarks/results/emkd_speed_beauty_<device>.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from seqrec.config import load_config  # noqa: E402
from seqrec.data.batch import build_examples, epoch_batches, span_batch  # noqa: E402
from seqrec.data.dataset import leave_one_out  # noqa: E402
from seqrec.data.loading import load_dataset  # noqa: E402
from seqrec.models import DatasetInfo, build_model  # noqa: E402
from seqrec.utils import atomic_write_json, peak_rss_mb  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import provenance  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_mode(cfg, data, examples, batches, logits_at: str, device: torch.device, warmup: int) -> dict:
    cfg.model.logits_at = logits_at
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, DatasetInfo(data.n_items, data.attributes)).to(device)
    opt = model.configure_optimizers(cfg.train)[0]
    model.train()
    times, widths = [], []
    for i, idx in enumerate(batches):
        batch = span_batch(data.items, examples, idx).to(device)
        sync(device)
        t0 = time.perf_counter()
        loss = model.loss(batch)["loss"]          # the trainer's fp32 step: forward + loss, backward, Adam
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            widths.append(int(batch.items.shape[1]))
    return {"seconds_per_batch": float(np.mean(times)), "batch_seconds": [round(t, 3) for t in times],
            "batch_widths": widths}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/emkd/beauty.yaml"))
    ap.add_argument("--batches", type=int, default=5, help="timed batches per mode (after --warmup)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full", action="store_true", help="30 timed batches per mode (for a GPU)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.full:
        args.batches = 30
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = load_config(args.config, [f"train.threads={args.threads}"])
    data = load_dataset(cfg.data)
    split = leave_one_out(data, cfg.data.short_users)
    model_probe = build_model(cfg.model, DatasetInfo(data.n_items, data.attributes))
    examples = build_examples(split, cfg.train.examples, model_probe.span_len, cfg.train.window_step, min_len=1)
    del model_probe
    all_batches = epoch_batches(examples.lengths, cfg.train.batch_size, cfg.train.seed, 1, cfg.train.bucket,
                                cfg.train.bucket_factor)
    n_batches = len(all_batches)
    timed = all_batches[: args.warmup + args.batches]     # the epoch's first batches (random widths, bucketed)
    t_start = time.perf_counter()
    modes = {}
    for mode in ("masked", "all"):
        modes[mode] = time_mode(cfg, data, examples, timed, mode, device, args.warmup)
        modes[mode]["epoch_seconds_extrapolated"] = round(modes[mode]["seconds_per_batch"] * n_batches, 1)
        print(f"logits_at={mode}: {modes[mode]['seconds_per_batch']:.2f} s/batch -> "
              f"{modes[mode]['epoch_seconds_extrapolated']:.0f} s/epoch ({n_batches} batches)", flush=True)
    ratio = modes["all"]["seconds_per_batch"] / modes["masked"]["seconds_per_batch"]
    print(f"all / masked = {ratio:.2f}x")
    mean_width = float(np.mean(np.minimum(examples.lengths, cfg.model.max_len)))
    result = {
        "kind": "speed",
        "description": ("One EMKD training epoch on Beauty with the official settings (N 3, M 8, d 256, max_len 15, "
                        "batch 256), extrapolated from timed batches: item logits only at masked positions "
                        "(logits_at=masked) vs at every position as the official code (logits_at=all)."),
        "summary": {
            "train_windows": int(len(examples)), "batches_per_epoch": n_batches,
            "timed_batches_per_mode": args.batches,
            "masked_seconds_per_batch": round(modes["masked"]["seconds_per_batch"], 3),
            "all_seconds_per_batch": round(modes["all"]["seconds_per_batch"], 3),
            "masked_epoch_seconds": modes["masked"]["epoch_seconds_extrapolated"],
            "all_epoch_seconds": modes["all"]["epoch_seconds_extrapolated"],
            "speedup_all_over_masked": round(ratio, 3),
        },
        "modes": modes,
        "mean_window_length": round(mean_width, 2),
        **provenance(torch.get_num_threads(), device),
        "config": cfg.to_dict(),
        "protocol": {"what": "training step time (forward + backward + Adam step), no evaluation",
                     "batches": "the first batches of epoch 1 (seeded, length-bucketed)", "warmup": args.warmup},
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks/results" / f"emkd_speed_beauty_{device.type}.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
