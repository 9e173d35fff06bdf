"""MQSA-TED benchmarks.

Speed / memory (default; CPU, one thread, a few minutes):
    python benchmarks/mqsa_ted_beauty.py
  * seconds per training epoch (one full epoch, the official settings of configs/mqsa_ted/) on Beauty and Yelp,
    MQSA-TED and MQSA without TED (lambda_kd = 0) on Beauty to show the cost of TED;
  * peak memory (ru_maxrss of a fresh process per dataset: data + transition matrix + model + training steps)
    on Yelp (20k items) and Taobao (53k items), the first `--mem-batches` batches of an epoch plus, where it fits
    `--max-tensor-gb`, the epoch's largest batch (most item occurrences: the [occurrences, N] logits dominate).
  Writes benchmarks/results/mqsa_ted_speed_cpu.json.

Accuracy (same protocol: configs/mqsa_ted/beauty.yaml, history exclusion, best valid NDCG@20 epoch tested):
    python benchmarks/mqsa_ted_beauty.py --budget-min 60     # CPU: the budget is split over the 4 variants
    python benchmarks/mqsa_ted_beauty.py --full              # GPU: 200 epochs each (hours on CPU)
  variants: MQSA-TED (alpha 0.5, lambda 0.1); SASRec (alpha 1, lambda 0: the official code's SASRec block);
  MQSA without TED (alpha 0.5, lambda 0); SASRec + TED (alpha 1, lambda 0.1).
  Writes benchmarks/results/mqsa_ted_beauty_budget.json or mqsa_ted_beauty_full.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import provenance  # noqa: E402  (reads the git commit now, at the start)
RESULTS = ROOT / "benchmarks" / "results"
CONFIGS = ROOT / "configs" / "mqsa_ted"
VARIANTS = {
    "mqsa_ted": [],
    "sasrec": ["model.alpha=1.0", "model.lambda_kd=0.0"],
    "mqsa": ["model.lambda_kd=0.0"],
    "sasrec_ted": ["model.alpha=1.0"],
}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(args) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from seqrec.config import load_config
    from seqrec.data.batch import epoch_batches
    from seqrec.train.trainer import Trainer

    dataset = args.dataset
    cfg_file = CONFIGS / f"{dataset.lower()}.yaml"
    overrides = [f"data.dataset={dataset}", "train.threads=1", "train.device=cpu"] + (args.set or [])
    cfg = load_config(cfg_file if cfg_file.is_file() else CONFIGS / "beauty.yaml", overrides)
    t0 = time.perf_counter()
    from seqrec.data.loading import load_dataset
    data = load_dataset(cfg.data)
    load_s = time.perf_counter() - t0
    rss_data = rss_mb()
    t0 = time.perf_counter()
    tr = Trainer(cfg, None, quiet=True, data=data)       # builds the split, the model and (prepare) the matrix
    init_s = time.perf_counter() - t0
    rss_init = rss_mb()
    tc = cfg.train
    batches = epoch_batches(tr.examples.lengths, tc.batch_size, tc.seed, 1, tc.bucket, tc.bucket_factor)
    occ = np.array([int((tr.examples.lengths[b] - 1).sum()) for b in batches])   # input occurrences per batch
    out = {"dataset": dataset, "n_items": data.n_items, "users": data.n_users, "overrides": args.set or [],
           "batches_per_epoch": len(batches), "load_s": round(load_s, 2), "init_s": round(init_s, 2),
           "transition_nnz": int(tr.model.teacher.coef.values().numel())
           if getattr(tr.model, "teacher", None) is not None else 0,
           "rss_after_data_mb": round(rss_data, 1), "rss_after_init_mb": round(rss_init, 1),
           "occurrences_per_batch_mean": float(occ.mean()), "occurrences_per_batch_max": int(occ.max())}
    tr.model.train()

    def step(idx):
        for batch in tr.loader.epoch(1, [idx]):
            tr.training_step(batch)

    if args.mode == "speed":
        t0 = time.perf_counter()
        run = batches if args.batches <= 0 else batches[:args.batches]
        for idx in run:
            step(idx)
        sec = time.perf_counter() - t0
        # a partial epoch is scaled by item occurrences (the cost is dominated by [occurrences, N] products)
        frac = occ[:len(run)].sum() / occ.sum()
        out.update({"timed_batches": len(run), "timed_s": round(sec, 2),
                    "seconds_per_epoch": round(sec / frac, 2), "full_epoch": len(run) == len(batches)})
    else:
        run = list(range(min(args.mem_batches, len(batches))))
        largest = int(occ.argmax())
        kxn_gb = occ[largest] * data.n_items * 4 / 2**30
        out["largest_batch_kxn_tensor_gb"] = round(float(kxn_gb), 2)
        if kxn_gb <= args.max_tensor_gb:
            run.append(largest)
            out["largest_batch_included"] = True
        else:
            out["largest_batch_included"] = False
        t0 = time.perf_counter()
        for i in run:
            step(batches[i])
        out["steps"] = len(run)
        out["steps_s"] = round(time.perf_counter() - t0, 2)
        out["max_occurrences_run"] = int(occ[run].max())
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("RESULT " + json.dumps(out), flush=True)


def spawn(mode: str, dataset: str, extra: list[str], **kw) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--dataset", dataset]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    for s in extra:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
    if p.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    r = json.loads(lines[-1][7:])
    print(json.dumps(r), flush=True)
    return r


def provenance_for(config) -> dict:
    return {**provenance(1), "config": config}


def speed(args) -> None:
    runs = {
        "beauty_mqsa_ted": spawn("speed", "Beauty", [], batches=args.batches),
        "beauty_mqsa": spawn("speed", "Beauty", ["model.lambda_kd=0.0"], batches=args.batches),
        "yelp_mqsa_ted": spawn("speed", "Yelp", [], batches=args.batches),
        "yelp_memory": spawn("memory", "Yelp", [], mem_batches=args.mem_batches, max_tensor_gb=args.max_tensor_gb),
        "taobao_memory": spawn("memory", "Taobao", [], mem_batches=args.mem_batches,
                               max_tensor_gb=args.max_tensor_gb),
    }
    summary = {
        "beauty_seconds_per_epoch": runs["beauty_mqsa_ted"]["seconds_per_epoch"],
        "beauty_no_ted_seconds_per_epoch": runs["beauty_mqsa"]["seconds_per_epoch"],
        "yelp_seconds_per_epoch": runs["yelp_mqsa_ted"]["seconds_per_epoch"],
        "yelp_peak_rss_mb": runs["yelp_memory"]["peak_rss_mb"],
        "taobao_peak_rss_mb": runs["taobao_memory"]["peak_rss_mb"],
    }
    out = {"kind": "speed", "name": "mqsa_ted_speed_cpu",
           "description": "MQSA-TED training speed (official settings, configs/mqsa_ted/<dataset>.yaml; Taobao uses "
                          "the Beauty settings) on this CPU with 1 thread, and peak RSS of a fresh process per "
                          "dataset (data, split, sparse transition matrix, model, Adam, training steps; see runs.*."
                          "largest_batch_included for whether the epoch's largest batch was among the steps)",
           "protocol": {"split": "leave-one-out", "train_examples": "sequence (last 50 training items per user)",
                        "batch_size": 256, "max_len": 50},
           "summary": summary, "runs": runs, **provenance_for({"configs": "configs/mqsa_ted/*.yaml"})}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "mqsa_ted_speed_cpu.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


def accuracy(args) -> None:
    import torch
    from seqrec.config import load_config
    from seqrec.train import train
    full = args.full
    names = list(VARIANTS) if not args.variants else args.variants.split(",")
    for name in names:
        if name not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {name!r}; valid: {', '.join(VARIANTS)}")
    results = {}
    # the budget is always split over all four variants, so runs of subsets (one process per core) give each
    # variant the same budget as a single sequential run would
    per = None if full else args.budget_min * 60 / len(VARIANTS)
    for name in names:
        o = list(VARIANTS[name]) + ([] if full else [f"train.time_budget_s={per}", "train.threads=1",
                                                     "train.device=cpu"])
        o += args.set or []
        cfg = load_config(CONFIGS / "beauty.yaml", o)
        if not full:
            torch.set_num_threads(1)
        results[name] = train(cfg, out_dir=ROOT / "runs" / f"mqsa_ted_bench_{name}{args.suffix}",
                              quiet=not args.verbose,
                              command=" ".join([Path(sys.argv[0]).name] + sys.argv[1:]))
        m = results[name]["metrics"]["test"]
        print(f"{name}: epochs {results[name]['epochs_run']} test NDCG@20 {m['NDCG@20']:.4f} HR@20 {m['HR@20']:.4f}",
              flush=True)
    tag = ("full" if full else f"budget{args.budget_min:g}m") + args.suffix
    if names != list(VARIANTS):
        # a part of the comparison: one file per variant, joined by --combine
        for name in names:
            write_json(RESULTS / f"mqsa_ted_beauty_{tag}_part_{name}.json", {
                "kind": "accuracy_part", "variant": name, "budget_min_total": args.budget_min,
                "result": results[name], **provenance_for({"base": "configs/mqsa_ted/beauty.yaml",
                                                       "variant": VARIANTS[name]})})
        return
    write_comparison(args, tag, results, per_variant_provenance=None)


def write_json(path: Path, obj) -> None:
    from seqrec.utils import atomic_write_json
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, obj)
    print(f"wrote {path}")


def write_comparison(args, tag: str, results: dict, per_variant_provenance) -> None:
    full = args.full
    out = {"kind": "accuracy", "name": f"mqsa_ted_beauty_{tag}",
           "description": "MQSA-TED vs SASRec (official block) vs MQSA without TED vs SASRec+TED on Beauty, same "
                          "protocol" + ("" if full else f", {args.budget_min:g} min budget split equally"),
           "summary": {n: r["metrics"]["test"] for n, r in results.items()}, "results": results,
           **provenance_for({"base": "configs/mqsa_ted/beauty.yaml", "variants": VARIANTS})}
    if per_variant_provenance:
        out["parts"] = per_variant_provenance
    write_json(RESULTS / f"mqsa_ted_beauty_{tag}.json", out)


def combine(args) -> None:
    """Join the per-variant part files of one budget into the comparison file (then removes the parts)."""
    tag = f"budget{args.budget_min:g}m" + args.suffix
    parts = {n: RESULTS / f"mqsa_ted_beauty_{tag}_part_{n}.json" for n in VARIANTS}
    missing = [str(p) for p in parts.values() if not p.exists()]
    if missing:
        raise SystemExit("--combine: missing part files: " + ", ".join(missing))
    loaded = {n: json.loads(p.read_text()) for n, p in parts.items()}
    results = {n: d["result"] for n, d in loaded.items()}
    prov = {n: {k: v for k, v in d.items() if k not in ("result", "kind")} for n, d in loaded.items()}
    write_comparison(args, tag, results, per_variant_provenance=prov)
    for p in parts.values():
        p.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-min", type=float, help="accuracy runs on CPU within this many minutes in total")
    ap.add_argument("--full", action="store_true", help="accuracy runs with the full 200 epochs (GPU)")
    ap.add_argument("--batches", type=int, default=0, help="speed: batches timed per run (0 = one full epoch)")
    ap.add_argument("--mem-batches", type=int, default=5, help="memory: batches run from the epoch's start")
    ap.add_argument("--max-tensor-gb", type=float, default=1.5,
                    help="memory: also run the largest batch if its [occurrences, N] float32 tensor is at most this")
    ap.add_argument("--variants", help=f"accuracy: run only these (comma-separated of {', '.join(VARIANTS)}) and "
                    "write one part file each; the budget per variant stays budget/4")
    ap.add_argument("--combine", action="store_true", help="accuracy: join the part files of --budget-min")
    ap.add_argument("--suffix", default="", help="accuracy: appended to the result name (e.g. _bucketfix), so that a "
                    "rerun keeps the earlier file")
    ap.add_argument("--set", action="append", help="config override (repeatable)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--child", choices=["speed", "memory"], help=argparse.SUPPRESS)
    ap.add_argument("--dataset", default="Beauty", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.mode = args.child
        child(args)
    elif args.combine:
        combine(args)
    elif args.full or args.budget_min:
        accuracy(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
