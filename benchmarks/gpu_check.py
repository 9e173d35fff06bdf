"""The GPU check's parts (driven by benchmarks/gpu_check.sh, one process per part, each under its own `timeout`).

    python benchmarks/gpu_check.py --part sasrec     # SASRec Beauty, bf16 + compile, to early stopping (budget)
    python benchmarks/gpu_check.py --part emkd       # official EMKD Beauty (N 3, M 8, d 256): s/epoch, peak memory
    python benchmarks/gpu_check.py --part epochs     # MCLRec and MQSA-TED Beauty: one epoch each (bounded)
    python benchmarks/gpu_check.py --part syncs      # host syncs per step, 7 models; SASRec bf16 eager vs compile
    python benchmarks/gpu_check.py --summary         # the table of the result files
    python benchmarks/gpu_check.py --mark-failed PART --reason "timeout (rc 124)"   # used by the shell script

Every part writes benchmarks/results/gpu_<part>.json (provenance, config, numbers, `status`: ok | error, and the
error with its traceback when it failed); the file is written as 'running' first, so a part killed by its timeout
leaves a file that the shell script marks failed. --dry-run: CPU, tiny synthetic data, every part a few seconds,
files under benchmarks/scratch/gpu_dry/ (a smoke test of the script, not a measurement).

Host syncs (part syncs) are counted two ways over --sync-steps training steps after a warm-up: the CUDA sync debug
mode (torch.cuda.set_sync_debug_mode("warn"): one warning per synchronising CUDA call, recorded with
warnings.catch_warnings, with the Python line that caused it) and a dispatch-mode counter of the operators that
make the host wait (the same operator list as tests/test_engine.py's SyncCounter; also what --dry-run counts on the
CPU, where the CUDA debug mode does not apply).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from provenance import provenance  # noqa: E402

from seqrec.config import load_config  # noqa: E402
from seqrec.train.syncs import SyncCounter  # noqa: E402
from seqrec.utils import atomic_write_json  # noqa: E402

PARTS = ("sasrec", "emkd", "epochs", "syncs")
SYNC_MODELS = ("sasrec", "bert4rec", "gru4rec", "cl4srec", "mclrec", "emkd", "mqsa_ted")
DRY_DATA = ["data.dataset=synthetic", "data.synthetic_users=150", "data.synthetic_items=80"]
SYNC_DATA = ["data.dataset=synthetic", "data.synthetic_users=2000", "data.synthetic_items=500"]


# ---------------------------------------------------------------------------------------------------------------
def base_overrides(args) -> list[str]:
    if args.dry_run:
        return ["train.device=cpu", "train.threads=1", *DRY_DATA]
    return ["train.device=cuda"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"peak_allocated_mb": None, "peak_reserved_mb": None}
    return {"peak_allocated_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
            "peak_reserved_mb": round(torch.cuda.max_memory_reserved(device) / 2**20, 1)}


def timed_epochs(trainer, budget_s: float, max_epochs: int) -> list[dict]:
    """Train whole epochs (no validation) while the next one is expected to fit in budget_s."""
    out, t_all = [], time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        sync(trainer.device)
        t0 = time.perf_counter()
        stats = trainer.train_epoch(epoch)
        sync(trainer.device)
        sec = time.perf_counter() - t0
        out.append({"epoch": epoch, "seconds": round(sec, 3), "batches": stats["batches"],
                    "examples": stats["examples"], "budget_hit": stats["budget_hit"],
                    "loss": stats["terms"].get("loss")})
        spent = time.perf_counter() - t_all
        if stats["budget_hit"] or spent + sec > budget_s:
            break
    return out


# ---------------------------------------------------------------------------------------------------------------
def part_sasrec(args) -> dict:
    """SASRec Beauty, train.precision=bf16, train.compile=true, early stopping inside a training budget."""
    from seqrec.train import train
    ov = base_overrides(args) + ["train.precision=bf16" if not args.dry_run else "train.precision=fp32",
                                 f"train.compile={'false' if args.dry_run else 'true'}",
                                 f"train.time_budget_s={args.budget_s}"]
    if args.dry_run:
        ov += ["train.max_epochs=2"]
    cfg = load_config("configs/sasrec/beauty.yaml", ov)
    out_dir = HERE / "scratch" / ("gpu_dry" if args.dry_run else "gpu") / "sasrec_bf16_compile"
    if cfg.train.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    r = train(cfg, out_dir, quiet=True, command=provenance()["command"])
    hist = r["history"]
    return {"config": cfg.to_dict(), "metrics": r["metrics"], "best_epoch": r["best_epoch"],
            "epochs_run": r["epochs_run"], "stopped_by": r["stopped_by"], "wall_time_s": r["wall_time_s"],
            "train_wall_time_s": r["train_wall_time_s"], "seconds_per_epoch": r["seconds_per_epoch"],
            "first_epoch_seconds": hist[0]["train_seconds"] if hist else None,
            "median_epoch_seconds_after_first": (sorted(h["train_seconds"] for h in hist[1:])[len(hist[1:]) // 2]
                                                 if len(hist) > 1 else None),
            "precision": r["precision"], "compile": r["compile"], "device_name": r["device"],
            **peak_memory(torch.device(cfg.train.device)),
            "history": [{k: h.get(k) for k in ("epoch", "train_seconds", "examples_per_s", "valid", "elapsed_s")}
                        for h in hist]}


def part_emkd(args) -> dict:
    """Official EMKD Beauty settings (N 3, M 8, d 256): whole epochs while they fit in the budget."""
    from seqrec.train import Trainer
    ov = base_overrides(args) + [f"train.time_budget_s={args.budget_s}"]
    if args.dry_run:
        ov += ["model.d=32", "model.inner=64", "model.n_networks=2", "model.n_views=2"]
    cfg = load_config("configs/emkd/beauty.yaml", ov)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, None, quiet=True)
    build_s = time.perf_counter() - t0
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    epochs = timed_epochs(trainer, args.budget_s, max_epochs=1 if args.dry_run else 50)
    whole = [e["seconds"] for e in epochs if not e["budget_hit"]]
    return {"config": cfg.to_dict(), "precision": trainer.precision, "build_s": round(build_s, 2),
            "batches_per_epoch": trainer.batches_per_epoch, "train_examples": len(trainer.examples),
            "epochs": epochs, "seconds_per_epoch_first": epochs[0]["seconds"] if epochs else None,
            "seconds_per_epoch_after_first": (round(sum(whole[1:]) / len(whole[1:]), 3) if len(whole) > 1 else None),
            "estimated_250_epochs_h": (round((whole[1] if len(whole) > 1 else whole[0]) * 250 / 3600, 2)
                                       if whole else None),
            **peak_memory(trainer.device)}


def part_epochs(args) -> dict:
    """MCLRec and MQSA-TED Beauty: one training epoch each (bounded by the budget), seconds and peak memory."""
    from seqrec.train import Trainer
    out = {}
    for name, path in (("mclrec", "configs/mclrec/beauty.yaml"), ("mqsa_ted", "configs/mqsa_ted/beauty.yaml")):
        try:
            cfg = load_config(path, base_overrides(args) + [f"train.time_budget_s={args.budget_s / 2}"])
            trainer = Trainer(cfg, None, quiet=True)
            if trainer.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(trainer.device)
            ep = timed_epochs(trainer, args.budget_s / 2, max_epochs=1)[0]
            out[name] = {"status": "ok", "precision": trainer.precision, "seconds_per_epoch": ep["seconds"],
                         "complete_epoch": not ep["budget_hit"], "batches": ep["batches"],
                         "batches_per_epoch": trainer.batches_per_epoch, "examples": ep["examples"],
                         **peak_memory(trainer.device), "config": cfg.to_dict()}
            del trainer
        except Exception as e:  # noqa: BLE001 -- recorded; the other model still runs
            out[name] = {"status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        args.save(out)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


def count_syncs(trainer, batches: list, cuda: bool) -> dict:
    """Host syncs over training steps: CUDA sync-debug warnings (with the line that caused each) and dispatch ops."""
    where: collections.Counter = collections.Counter()
    n_warn = 0
    counter = SyncCounter()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            with counter:
                for b in batches:
                    trainer.training_step(b)
        if cuda:
            for w in rec:
                msg = str(w.message)
                if "synchroniz" in msg.lower():
                    n_warn += 1
                    where[f"{os.path.relpath(w.filename, ROOT) if 'seqrec' in w.filename else w.filename}:{w.lineno}"] += 1
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode(0)
    ops = collections.Counter(counter.ops)
    n = len(batches)
    return {"steps": n,
            "cuda_sync_warnings_per_step": round(n_warn / n, 3) if cuda else None,
            "cuda_sync_warnings_by_line": dict(where.most_common(10)) if cuda else None,
            "dispatch_sync_ops_per_step": round(len(counter.ops) / n, 3), "dispatch_sync_ops": dict(ops)}


def step_time(trainer, batches: list, rounds: int = 3) -> dict:
    """Seconds per training step (device-synchronised), best of `rounds` passes over the batches."""
    best = float("inf")
    for _ in range(rounds):
        sync(trainer.device)
        t0 = time.perf_counter()
        for b in batches:
            trainer.training_step(b)
        sync(trainer.device)
        best = min(best, (time.perf_counter() - t0) / len(batches))
    return {"s_per_step_best": round(best, 6), "rounds": rounds, "steps": len(batches)}


def part_syncs(args) -> dict:
    """Host syncs per step for every model (small synthetic data, eager, after a warm-up); SASRec eager vs compile."""
    from seqrec.data.loading import load_dataset
    from seqrec.train import Trainer
    data_ov = DRY_DATA if args.dry_run else SYNC_DATA
    dev = ["train.device=cpu", "train.threads=1"] if args.dry_run else ["train.device=cuda"]
    prec = "train.precision=fp32" if args.dry_run else "train.precision=bf16"
    steps = 3 if args.dry_run else args.sync_steps
    out: dict = {"models": {}, "sasrec_eager_vs_compile": None}
    data = None
    for name in SYNC_MODELS:
        t0 = time.perf_counter()
        try:
            ov = dev + data_ov + [prec, "train.log_every=1000000"]
            if name == "emkd" and args.dry_run:
                ov += ["model.d=32", "model.inner=64", "model.n_networks=2", "model.n_views=2"]
            cfg = load_config(f"configs/{name}/beauty.yaml", ov)
            data = data if data is not None else load_dataset(cfg.data)
            trainer = Trainer(cfg, None, quiet=True, data=data)
            trainer.model.train()
            idx = trainer._epoch_batches(1)
            need = 2 + steps
            idx = (idx * (need // len(idx) + 1))[:need]
            batches = [b.to(trainer.device) for b in trainer.loader.epoch(1, idx)]
            for b in batches[:2]:                      # warm-up (lazy initialisation, optimiser state)
                trainer.training_step(b)
            res = count_syncs(trainer, batches[2:], trainer.device.type == "cuda")
            res.update({"status": "ok", "precision": trainer.precision, "seconds": round(time.perf_counter() - t0, 2)})
            out["models"][name] = res
            args.save(out)                             # a later timeout keeps what is done
            del trainer, batches
        except Exception as e:  # noqa: BLE001 -- recorded; the next model still runs
            out["models"][name] = {"status": "error", "error": f"{type(e).__name__}: {e}",
                                   "traceback": traceback.format_exc()[-3000:]}
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    # SASRec eager vs compile (bf16 on the GPU): the same batches, steady state after the compile
    try:
        res = {}
        for variant in ("eager", "compile"):
            cfg = load_config("configs/sasrec/beauty.yaml",
                              dev + data_ov + [prec, f"train.compile={'true' if variant == 'compile' else 'false'}",
                                               "train.pad_multiple=8", "train.log_every=1000000"])
            trainer = Trainer(cfg, None, quiet=True, data=data)
            trainer.model.train()
            idx = trainer._epoch_batches(1)[: (6 if args.dry_run else 40)]
            batches = [b.to(trainer.device) for b in trainer.loader.epoch(1, idx)]
            sync(trainer.device)
            t0 = time.perf_counter()
            for b in batches:                     # first pass: compiles every width seen
                trainer.training_step(b)
            sync(trainer.device)
            first = time.perf_counter() - t0
            res[variant] = {"first_pass_s": round(first, 3), **step_time(trainer, batches, 2 if args.dry_run else 3),
                            "widths": sorted({int(b.items.shape[1]) for b in batches})}
            del trainer
            args.save({**out, "sasrec_eager_vs_compile": dict(res, status="partial")})
        res["compile_speedup"] = round(res["eager"]["s_per_step_best"] / res["compile"]["s_per_step_best"], 3)
        res["status"] = "ok"
        out["sasrec_eager_vs_compile"] = res
    except Exception as e:  # noqa: BLE001
        out["sasrec_eager_vs_compile"] = {"status": "error", "error": f"{type(e).__name__}: {e}",
                                          "traceback": traceback.format_exc()[-3000:]}
    return out


RUNNERS = {"sasrec": part_sasrec, "emkd": part_emkd, "epochs": part_epochs, "syncs": part_syncs}


# ---------------------------------------------------------------------------------------------------------------
def result_path(part: str, dry: bool) -> Path:
    return (HERE / "scratch" / "gpu_dry" if dry else HERE / "results") / f"gpu_{part}.json"


def device_of(args) -> str:
    return "cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"


def run_part(args) -> int:
    dst = result_path(args.part, args.dry_run)
    dst.parent.mkdir(parents=True, exist_ok=True)
    head = {"benchmark": f"gpu_check/{args.part}", "dry_run": args.dry_run, "budget_s": args.budget_s}
    atomic_write_json(dst, {**head, "status": "running", **provenance(device=device_of(args))})
    args.save = lambda body: atomic_write_json(dst, {**head, "status": "running", **provenance(device=device_of(args)),
                                                     **body})
    t0 = time.perf_counter()
    try:
        if not args.dry_run and not torch.cuda.is_available():
            raise RuntimeError("no CUDA device visible to torch (use --dry-run for the CPU smoke test)")
        body, status, err = RUNNERS[args.part](args), "ok", None
    except Exception as e:  # noqa: BLE001 -- the part's failure is its result
        body, status = {}, "error"
        err = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
    doc = {**head, "status": status, **(err or {}), "part_wall_s": round(time.perf_counter() - t0, 2),
           **provenance(device=device_of(args)), **body}
    atomic_write_json(dst, doc)
    print(f"[gpu_check] {args.part}: {status} in {doc['part_wall_s']} s -> {dst}"
          + (f"\n  {err['error']}" if err else ""), flush=True)
    return 0 if status == "ok" else 1


def mark_failed(args) -> None:
    dst = result_path(args.mark_failed, args.dry_run)
    doc = json.loads(dst.read_text()) if dst.exists() else {"benchmark": f"gpu_check/{args.mark_failed}",
                                                            **provenance(device=device_of(args))}
    if doc.get("status") in ("ok", "error"):         # the part recorded its own outcome
        return
    doc.update({"status": "error", "error": args.reason})
    atomic_write_json(dst, doc)


def summary(args) -> None:
    print("\n=== GPU check summary ===")
    for part in PARTS:
        p = result_path(part, args.dry_run)
        if not p.exists():
            print(f"{part:8s} no result file")
            continue
        d = json.loads(p.read_text())
        line = f"{part:8s} {d.get('status')}"
        if d.get("status") != "ok":
            line += f"  {d.get('error', '')}"
        elif part == "sasrec":
            t = d["metrics"]["test"]
            line += (f"  test NDCG@10 {t.get('NDCG@10', 0):.4f} HR@10 {t.get('HR@10', 0):.4f}, {d['epochs_run']} epochs "
                     f"({d['stopped_by']}), {d['seconds_per_epoch']} s/epoch (first {d['first_epoch_seconds']} s), "
                     f"peak {d['peak_allocated_mb']} MB")
        elif part == "emkd":
            line += (f"  {len(d['epochs'])} epochs, first {d['seconds_per_epoch_first']} s, then "
                     f"{d['seconds_per_epoch_after_first']} s/epoch, 250 epochs ~{d['estimated_250_epochs_h']} h, "
                     f"peak {d['peak_allocated_mb']} MB")
        elif part == "epochs":
            line += "  " + "; ".join(f"{m} " + (f"{r['seconds_per_epoch']} s/epoch"
                                                + ("" if r["complete_epoch"] else f" (partial {r['batches']}/"
                                                   f"{r['batches_per_epoch']} batches)")
                                                + f", peak {r['peak_allocated_mb']} MB"
                                                if r["status"] == "ok" else r["error"])
                                     for m, r in d.items() if m in ("mclrec", "mqsa_ted"))
        elif part == "syncs":
            for m, r in d["models"].items():
                line += (f"\n    {m:9s} " + (f"cuda sync warnings/step {r['cuda_sync_warnings_per_step']}, "
                                             f"dispatch sync ops/step {r['dispatch_sync_ops_per_step']}"
                                             if r["status"] == "ok" else r["error"]))
            c = d.get("sasrec_eager_vs_compile") or {}
            line += ("\n    sasrec eager vs compile: " +
                     (f"{c['eager']['s_per_step_best'] * 1e3:.2f} vs {c['compile']['s_per_step_best'] * 1e3:.2f} "
                      f"ms/step ({c['compile_speedup']}x), compile first pass {c['compile']['first_pass_s']} s"
                      if c.get("status") == "ok" else str(c.get("error"))))
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=PARTS)
    ap.add_argument("--budget-s", type=float, default=60.0, help="the part's training budget (train.time_budget_s)")
    ap.add_argument("--sync-steps", type=int, default=20)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--mark-failed", metavar="PART")
    ap.add_argument("--reason", default="killed")
    args = ap.parse_args()
    os.chdir(ROOT)
    if args.mark_failed:
        mark_failed(args)
    elif args.summary:
        summary(args)
    elif args.part:
        sys.exit(run_part(args))
    else:
        ap.error("give --part, --summary or --mark-failed")


if __name__ == "__main__":
    main()
