"""MCLRec (and CL4SRec / SASRec for comparison) on Beauty (or another dataset of configs/mclrec with --dataset):
training speed and accuracy.

Modes:
  --speed            time a sample of training batches (global-RNG augmentation + the trainer's full training step)
                     at each of --threads (e.g. 1,2; default 1) and extrapolate to a whole epoch (the faithful 'prefix' epoch is
                     ceil(131,413 / 256) = 514 batches). Times each --variants entry (model:examples); writes
                     benchmarks/results/mclrec_speed_beauty_cpu.json (kind 'speed').
  --budget-min M     accuracy: train with early stopping inside an M-minute wall-clock budget (the best validation
                     checkpoint is tested) and write the trainer's full result dict to
                     benchmarks/results/<model>_<dataset>_<examples>_budget<M>m.json.
  --full             accuracy without a budget (the paper's 100 epochs / patience 10), meant for a GPU;
                     writes benchmarks/results/<model>_<dataset>_<examples>_full.json.
--model picks mclrec (default), cl4srec or sasrec (SASRec = the same encoder and protocol without contrastive terms)
and --examples prefix (faithful, default) or sequence (one row per user, all positions supervised).

  python benchmarks/mclrec_beauty.py --speed
  python benchmarks/mclrec_beauty.py --budget-min 120 --model mclrec --examples sequence
  python benchmarks/mclrec_beauty.py --full --model cl4srec
  python benchmarks/mclrec_beauty.py --budget-min 30 --dataset sports
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from seqrec.config import load_config  # noqa: E402
from seqrec.data.batch import epoch_batches  # noqa: E402
from seqrec.utils import atomic_write_json  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import provenance  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SASREC_KEYS = ("name", "max_len", "d", "layers", "heads", "inner", "dropout", "attn_dropout", "activation",
               "norm_first", "init_std")


def make_config(model: str, examples: str, overrides: list[str], dataset: str = "beauty"):
    if not (ROOT / f"configs/mclrec/{dataset}.yaml").exists():
        raise SystemExit(f"no configs/mclrec/{dataset}.yaml; valid --dataset: "
                         + ", ".join(sorted(p.stem for p in (ROOT / "configs/mclrec").glob("*.yaml"))))
    if model == "sasrec":
        # the MCLRec config with the contrastive fields dropped: same encoder, data and protocol
        import yaml
        raw = yaml.safe_load((ROOT / f"configs/mclrec/{dataset}.yaml").read_text())
        raw["model"] = {k: v for k, v in raw["model"].items() if k in SASREC_KEYS}
        raw["model"]["name"] = "sasrec"
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(yaml.safe_dump(raw))
        path = Path(f.name)
    else:
        path = ROOT / f"configs/{model}/{dataset}.yaml"
        if not path.exists():
            raise SystemExit(f"no {path.relative_to(ROOT)}: {model} has configs for "
                             + ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml"))))
    return load_config(path, overrides=[f"train.examples={examples}", *overrides])


def provenance_for(cfg_dict, threads):
    return {**provenance(threads, "cpu"), "config": cfg_dict,
            "protocol": {"split": "leave-one-out", "ranking": "full", "exclude": "none", "max_len": 50}}


def time_variant(model: str, examples: str, n_batches: int, threads: int, data) -> dict:
    from seqrec.train.trainer import Trainer
    cfg = make_config(model, examples, [f"train.threads={threads}", "train.device=cpu"])
    tr = Trainer(cfg, None, quiet=True, data=data)
    tc = cfg.train
    batches = epoch_batches(tr.examples.lengths, tc.batch_size, tc.seed, 1, tc.bucket, tc.bucket_factor)
    warm = 3
    take = batches[:min(len(batches), n_batches + warm)]
    tr.model.train()
    times = []
    for i, b in enumerate(tr.loader.epoch(1, take)):
        t0 = time.perf_counter()
        tr.training_step(b)
        if i >= warm:
            times.append(time.perf_counter() - t0)
    per_batch = float(np.mean(times))
    # the sample is the first batches of a shuffled, length-bucketed epoch: an unbiased sample of batch lengths
    return {"model": model, "examples": examples, "train_examples": len(tr.examples),
            "batches_per_epoch": len(batches), "batches_timed": len(times),
            "seconds_per_batch": round(per_batch, 4),
            "seconds_per_epoch_extrapolated": round(per_batch * len(batches), 1),
            "timed_seconds": round(float(np.sum(times)), 1), "config": cfg.to_dict()}


def default_result_name(model: str, dataset: str, examples: str, tag: str, threads: int,
                        overrides: list[str]) -> str:
    """<model>_<dataset>_<examples>_<tag>[_<T>threads][_seed<S>][_<key>-<value>...].json: runs that differ in
    threads, seed or any other --set override must not overwrite each other's default file."""
    name = f"{model}_{dataset}_{examples}_{tag}"
    if threads != 1:
        name += f"_{threads}threads"
    for o in overrides:
        key, _, value = o.partition("=")
        if key == "train.seed":
            name += f"_seed{value}"
        else:   # the key's last part and the value, each kept to file-name-safe characters
            key, value = (re.sub(r"[^A-Za-z0-9._]+", "-", x).strip("-") for x in (key.rsplit(".", 1)[-1], value))
            name += f"_{key}-{value}"
    return name + ".json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--speed", action="store_true")
    mode.add_argument("--budget-min", type=float)
    mode.add_argument("--full", action="store_true")
    ap.add_argument("--model", default="mclrec", choices=("mclrec", "cl4srec", "sasrec"))
    ap.add_argument("--examples", default="prefix", choices=("prefix", "sequence"))
    ap.add_argument("--dataset", default="beauty", help="accuracy modes: configs/mclrec/<dataset>.yaml")
    ap.add_argument("--variants", default="mclrec:prefix,mclrec:sequence",
                    help="--speed: comma-separated model:examples entries to time")
    ap.add_argument("--batches", type=int, default=120, help="--speed: batches timed per variant")
    ap.add_argument("--threads", default="1",
                    help="torch threads; --speed takes a comma-separated list (each variant timed at each)")
    ap.add_argument("--set", action="append", default=[], help="extra config overrides a.b=value")
    ap.add_argument("--out", help="result file (default: benchmarks/results/" + default_result_name(
        "<model>", "<dataset>", "<examples>", "<budgetNm or full>", 1, []) + " with _<T>threads, _seed<S> and "
        "_<key>-<value> inserted before .json for threads other than 1, the seed and every other --set override)")
    args = ap.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    if not args.speed and len(thread_counts) != 1:
        ap.error("--threads takes one number outside --speed")
    RESULTS.mkdir(parents=True, exist_ok=True)

    if args.speed:
        from seqrec.data.loading import load_dataset
        base = make_config("mclrec", "prefix", [])
        data = load_dataset(base.data)
        runs = []
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for v in args.variants.split(","):
                model, examples = v.split(":")
                r = {**time_variant(model, examples, args.batches, threads, data), "threads": threads}
                print(f"{model}/{examples}, {threads} thread(s): {r['seconds_per_batch']:.3f} s/batch x "
                      f"{r['batches_per_epoch']} batches = {r['seconds_per_epoch_extrapolated']:.0f} s/epoch "
                      f"(extrapolated from {r['batches_timed']})", flush=True)
                runs.append(r)

        def key(r, what):
            return f"{r['model']}_{r['examples']}_{r['threads']}t_{what}"
        summary = {key(r, "seconds_per_epoch"): r["seconds_per_epoch_extrapolated"] for r in runs}
        summary.update({key(r, "seconds_per_batch"): r["seconds_per_batch"] for r in runs})
        out = {"kind": "speed", "name": "mclrec_speed_beauty_cpu", "dataset": "Beauty",
               "description": "Training seconds per epoch on Beauty (CPU), extrapolated from the mean time of a "
                              "sample of Trainer.training_step calls (augmentation + all optimiser steps of a batch; batch "
                              "building excluded, evaluation excluded) times the epoch's batch count. 'prefix' = the "
                              "faithful formulation (131,413 prefix examples, 514 batches, three steps per batch); "
                              "'sequence' = one row per user, every position supervised, one contrastive pair per "
                              "user.",
               "summary": summary, "runs": runs,
               **provenance_for(base.to_dict(), thread_counts if len(thread_counts) > 1 else thread_counts[0])}
        path = Path(args.out) if args.out else RESULTS / "mclrec_speed_beauty_cpu.json"
        atomic_write_json(path, out)
        print(f"wrote {path}")
        return

    from seqrec.train import train
    torch.set_num_threads(thread_counts[0])
    overrides = [f"train.threads={thread_counts[0]}", *args.set]
    if args.budget_min is not None:
        overrides += [f"train.time_budget_s={args.budget_min * 60}", "train.device=cpu"]
        tag = f"budget{args.budget_min:g}m"
    else:
        tag = "full"
    cfg = make_config(args.model, args.examples, overrides, args.dataset)
    result = train(cfg, None, quiet=False, command=" ".join(["python", *sys.argv]))
    path = Path(args.out) if args.out else RESULTS / default_result_name(
        args.model, args.dataset, args.examples, tag, thread_counts[0], args.set)
    atomic_write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
