"""SASRec Beauty CPU seconds per epoch: the previous training engine (commit b6a6ce5) versus the new one, in fp32
and bf16, side by side in one run, with the matmul floor of this CPU and an fp32 equality check of the test metrics.

    python benchmarks/engine_speed.py --new-commit HEAD     # E=3 epochs, R=2 rounds, ~20 min on one core
    python benchmarks/engine_speed.py --quick               # smoke test: tiny synthetic data, 1 epoch (seconds)

Variants, each in its own subprocess with one thread (OMP_NUM_THREADS=1, train.threads=1):
  old         the code of --old-commit (a git worktree, default /work/wt_old; created if missing), train.amp=false
  new_fp32    this tree, train.precision=fp32
  new_bf16    this tree, train.precision=bf16 (autocast; needs a CPU with native bf16, e.g. AMX / avx512_bf16)
  new_fp32_unfused   this tree, train.precision=fp32 train.fused_optimizer=false (the fused-Adam effect)
The set runs R times in alternating order (a b c d, d c b a, ...) so that drift in the machine's load hits all alike.

Per epoch the worker records the CPU time (time.process_time: all threads of the process, the new engine's batch
thread included) and the wall time around Trainer.train_epoch; validation and test are outside it. Validation runs
only after the last epoch (eval_start = eval_every = E, patience 0), then the test metrics of those weights are
recorded. The floor: the epoch's matmul FLOPs (counted from the epoch's actual batches, see `epoch_flops`) divided
by the best fp32 / bf16 matmul rate measured at the logits shape of a batch. Writes
benchmarks/results/engine_speed_sasrec_beauty_cpu.json (--quick: benchmarks/scratch/engine_speed_quick.json).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = "configs/sasrec/beauty.yaml"
OLD_COMMIT = "b6a6ce5"
VARIANTS = {   # name -> (engine, extra overrides)
    "old_fp32": ("old", ["train.amp=false"]),
    "new_fp32": ("new", ["train.precision=fp32"]),
    "new_bf16": ("new", ["train.precision=bf16"]),
    "new_fp32_unfused": ("new", ["train.precision=fp32", "train.fused_optimizer=false"]),
}
QUICK_DATA = ["data.dataset=synthetic", "data.synthetic_users=300", "data.synthetic_items=200"]


# ---------------------------------------------------------------------------------------------------------------
# worker: runs inside the variant's subprocess; imports whichever seqrec PYTHONPATH gives it
def worker(spec: dict) -> dict:
    import torch

    import seqrec
    import seqrec.train.trainer as tr
    from seqrec.config import load_config

    epochs: list[dict] = []
    original = tr.Trainer.train_epoch

    def timed_train_epoch(self, epoch: int) -> dict:
        c0, w0 = time.process_time(), time.perf_counter()
        out = original(self, epoch)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        epochs.append({"epoch": epoch, "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                       "examples": out["examples"], "batches": out["batches"],
                       "loss": out["terms"].get("loss")})
        return out

    tr.Trainer.train_epoch = timed_train_epoch
    cfg = load_config(spec["config"], spec["overrides"])
    t0 = time.perf_counter()
    result = tr.train(cfg, None, quiet=True, command=spec.get("command"))
    return {"seqrec_file": seqrec.__file__, "torch_threads": torch.get_num_threads(),
            "precision": result.get("precision", "fp32"), "epochs": epochs,
            "metrics": result["metrics"], "best_epoch": result["best_epoch"],
            "train_examples": result.get("train_examples"), "total_wall_s": round(time.perf_counter() - t0, 3)}


# ---------------------------------------------------------------------------------------------------------------
# matmul floor
def matmul_rate(dtype_name: str, n_items: int, d: int = 64, batch: int = 256, seconds: float = 2.0) -> dict:
    """Best GFLOP/s of the three logits products of one batch (forward h @ E^T, backward g @ E and g^T @ h)."""
    import torch
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    g = torch.Generator().manual_seed(0)
    h = torch.randn(batch, d, generator=g).to(dtype)
    emb = torch.randn(n_items, d, generator=g).to(dtype)
    grad = torch.randn(batch, n_items, generator=g).to(dtype)
    flops = 3 * 2 * batch * d * n_items

    def once() -> None:
        torch.mm(h, emb.t())
        torch.mm(grad, emb)
        torch.mm(grad.t(), h)

    for _ in range(3):
        once()
    best, end, reps = float("inf"), time.perf_counter() + seconds, 0
    while time.perf_counter() < end or reps < 5:
        t = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - t)
        reps += 1
    return {"dtype": dtype_name, "shape": f"h[{batch},{d}] @ E^T[{d},{n_items}] + 2 backward products",
            "best_s_per_batch": best, "gflops_per_s": flops / best / 1e9, "repeats": reps}


def epoch_flops(spec: dict) -> dict:
    """Matmul FLOPs of one training epoch of SASRec (prefix examples), from the epoch's actual batches.

    Each product counts 2 FLOPs per multiply-add and is done 3 times (forward, grad input, grad weight):
    logits  B x d x n_items (the last position of each example against every item, padding item included);
    encoder per layer and token: q, k, v, out (4 d^2) and the FFN (2 d inner); attention per layer and example
    (width w): Q K^T and A V (2 w^2 d). Encoder and attention are counted over the padded batch widths."""
    import numpy as np

    import seqrec.train.trainer as tr
    from seqrec.config import load_config
    cfg = load_config(spec["config"], spec["overrides"])
    t = tr.Trainer(cfg, None, quiet=True)
    mc = cfg.model
    n_out = t.model.embed.item.weight.shape[0] if hasattr(t.model, "embed") else t.data.n_items + 1
    batches = t._epoch_batches(1)
    lengths = t.examples.lengths
    width = t.model.span_len - 1
    logits = enc = att = 0
    for idx in batches:
        w = min(int(np.max(lengths[idx])) - 1, width)    # causal batch: the inputs are the example minus its target
        b = len(idx)
        logits += 3 * 2 * b * mc.d * n_out
        enc += 3 * 2 * mc.layers * b * w * (4 * mc.d * mc.d + 2 * mc.d * mc.inner)
        att += 3 * 2 * mc.layers * b * 2 * w * w * mc.d
    return {"examples": int(len(t.examples)), "batches": len(batches), "n_items_scored": int(n_out),
            "logits_gflop": logits / 1e9, "encoder_linear_gflop": enc / 1e9, "attention_gflop": att / 1e9,
            "total_gflop": (logits + enc + att) / 1e9}


# ---------------------------------------------------------------------------------------------------------------
def run_variant(name: str, engine: str, old_src: Path, new_src: Path, overrides: list[str], tmp: Path,
                tag: str) -> dict:
    spec = {"config": CONFIG, "overrides": overrides + VARIANTS[name][1], "command": f"engine_speed {name}"}
    spec_file, out_file = tmp / f"{tag}.spec.json", tmp / f"{tag}.out.json"
    spec_file.write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(old_src if engine == "old" else new_src))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_file),
                           str(out_file)], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:], "returncode": proc.returncode}
    return json.loads(out_file.read_text())


def ensure_worktree(path: Path, commit: str) -> Path:
    if not (path / "src" / "seqrec").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit], check=True)
    head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    want = subprocess.run(["git", "-C", str(ROOT), "rev-parse", commit], capture_output=True, text=True,
                          check=True).stdout.strip()
    if head != want:
        raise SystemExit(f"{path} is at {head}, expected {want} ({commit})")
    return path / "src"


def median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny synthetic data, 1 epoch, 1 round (smoke test)")
    ap.add_argument("--old-commit", default=OLD_COMMIT)
    ap.add_argument("--old-worktree", default="/work/wt_old")
    ap.add_argument("--new-commit", help="run the new engine from a clean worktree of this commit (--new-worktree) "
                    "rather than this tree's src/ (which others may be editing during the run)")
    ap.add_argument("--new-worktree", default="/work/wt_new")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out")
    ap.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        spec = json.loads(Path(args.worker[0]).read_text())
        res = worker(spec)
        Path(args.worker[1]).write_text(json.dumps(res))
        return

    sys.path.insert(0, str(HERE))
    from provenance import provenance  # noqa: E402

    from seqrec.utils import atomic_write_json  # noqa: E402
    if args.quick:
        args.epochs, args.rounds = 1, 1
    e = args.epochs
    overrides = ["train.threads=1", "train.patience=0", f"train.max_epochs={e}", f"train.eval_every={e}",
                 f"train.eval_start={e}"] + (QUICK_DATA if args.quick else [])
    old_src = ensure_worktree(Path(args.old_worktree), args.old_commit)
    new_src = ensure_worktree(Path(args.new_worktree), args.new_commit) if args.new_commit else ROOT / "src"
    src_dirty = subprocess.run(["git", "-C", str(new_src.parent), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True).stdout.splitlines()
    names = args.variants.split(",")
    order: list[str] = []
    for r in range(args.rounds):
        order += names if r % 2 == 0 else names[::-1]

    import torch
    torch.set_num_threads(1)
    flops = epoch_flops({"config": CONFIG, "overrides": overrides + VARIANTS["new_fp32"][1]})
    rates = {p: matmul_rate(p, flops["n_items_scored"], seconds=0.3 if args.quick else 3.0) for p in ("fp32", "bf16")}
    print(f"epoch matmul GFLOP {flops['total_gflop']:.0f} (logits {flops['logits_gflop']:.0f}); "
          f"rates fp32 {rates['fp32']['gflops_per_s']:.1f} bf16 {rates['bf16']['gflops_per_s']:.1f} GFLOP/s",
          flush=True)

    runs: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(order):
            t = time.perf_counter()
            res = run_variant(name, VARIANTS[name][0], old_src, new_src, overrides, Path(tmp), f"{i}_{name}")
            res["round"], res["position"] = i // len(names) + 1, i
            runs[name].append(res)
            if "error" in res:
                print(f"[{i + 1}/{len(order)}] {name}: ERROR\n{res['error']}", flush=True)
            else:
                print(f"[{i + 1}/{len(order)}] {name}: cpu/epoch {[x['cpu_s'] for x in res['epochs']]} "
                      f"test NDCG@10 {res['metrics']['test'].get('NDCG@10')} ({time.perf_counter() - t:.0f}s)",
                      flush=True)

    summary: dict[str, dict] = {}
    for name, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        cpu = [x["cpu_s"] for r in ok for x in r["epochs"]]
        wall = [x["wall_s"] for r in ok for x in r["epochs"]]
        summary[name] = {"median_cpu_s_per_epoch": median(cpu), "median_wall_s_per_epoch": median(wall),
                         "cpu_s_per_epoch": cpu, "wall_s_per_epoch": wall, "runs_ok": len(ok), "runs": len(rs),
                         "test_metrics": [r["metrics"]["test"] for r in ok]}

    def ratio(a: str, b: str, key: str = "median_cpu_s_per_epoch") -> float | None:
        x, y = summary.get(a, {}).get(key), summary.get(b, {}).get(key)
        return round(x / y, 3) if x and y else None

    # equality: old vs new fp32 test metrics after E epochs (same seed), and run-to-run determinism of each
    def max_diff(ms1: list[dict], ms2: list[dict]) -> float | None:
        diffs = [abs(a[k] - b[k]) for a in ms1 for b in ms2 for k in a if k in b]
        return max(diffs) if diffs else None

    old_m = summary.get("old_fp32", {}).get("test_metrics", [])
    new_m = summary.get("new_fp32", {}).get("test_metrics", [])
    tol = 1e-3
    equality = {"metric_keys": sorted(new_m[0]) if new_m else [],
                "max_abs_diff_old_vs_new_fp32": max_diff(old_m, new_m),
                "max_abs_diff_new_fp32_vs_unfused": max_diff(new_m, summary.get("new_fp32_unfused", {})
                                                             .get("test_metrics", [])),
                "max_abs_diff_old_fp32_between_rounds": max_diff(old_m, old_m),
                "max_abs_diff_new_fp32_between_rounds": max_diff(new_m, new_m),
                "max_abs_diff_new_fp32_vs_bf16": max_diff(new_m, summary.get("new_bf16", {})
                                                          .get("test_metrics", [])),
                "tolerance": tol}
    d = equality["max_abs_diff_old_vs_new_fp32"]
    equality["equal_within_tolerance"] = None if d is None else d <= tol

    floor = {"counting": epoch_flops.__doc__.split("\n\n", 1)[1].strip().replace("\n    ", " "), **flops,
             "issue_gflop_per_epoch": 1068.0, "rates": rates}
    for p in ("fp32", "bf16"):
        for label, gf in (("counted", flops["total_gflop"]), ("issue", 1068.0)):
            floor[f"floor_s_{p}_{label}"] = round(gf / rates[p]["gflops_per_s"], 3)
    for name in names:
        p = "bf16" if "bf16" in name else "fp32"
        m = summary[name]["median_cpu_s_per_epoch"]
        if m:
            summary[name]["cpu_over_floor_counted"] = round(m / floor[f"floor_s_{p}_counted"], 2)
            summary[name]["cpu_over_floor_issue_1068"] = round(m / floor[f"floor_s_{p}_issue"], 2)

    result = {
        **{k: v for k, v in provenance(1).items()},
        "benchmark": "engine_speed", "quick": args.quick,
        "protocol": {"split": "leave-one-out", "ranking": "full", "exclude": "none",
                     "timing": "time.process_time and perf_counter around Trainer.train_epoch; evaluation excluded",
                     "evaluation": f"validation only after epoch {e} (eval_start = eval_every = {e}, patience 0), "
                                   f"test metrics of the epoch-{e} weights"},
        "config": CONFIG, "overrides": overrides, "epochs": e, "rounds": args.rounds, "order": order,
        "old_engine": {"commit": args.old_commit, "worktree": str(args.old_worktree)},
        "new_engine": {"commit": args.new_commit or "this tree", "src": str(new_src),
                       "uncommitted_src_changes_at_start": src_dirty},
        "variants": {n: {"engine": VARIANTS[n][0], "overrides": VARIANTS[n][1]} for n in names},
        "summary": summary,
        "ratios_median_cpu": {"old_fp32/new_fp32": ratio("old_fp32", "new_fp32"),
                              "new_fp32/new_bf16": ratio("new_fp32", "new_bf16"),
                              "new_fp32_unfused/new_fp32": ratio("new_fp32_unfused", "new_fp32")},
        "ratios_median_wall": {"old_fp32/new_fp32": ratio("old_fp32", "new_fp32", "median_wall_s_per_epoch"),
                               "new_fp32/new_bf16": ratio("new_fp32", "new_bf16", "median_wall_s_per_epoch"),
                               "new_fp32_unfused/new_fp32": ratio("new_fp32_unfused", "new_fp32",
                                                                  "median_wall_s_per_epoch")},
        "equality_fp32": equality, "matmul_floor": floor, "runs": runs,
    }
    dst = Path(args.out) if args.out else (HERE / "scratch" / "engine_speed_quick.json" if args.quick
                                            else HERE / "results" / "engine_speed_sasrec_beauty_cpu.json")
    atomic_write_json(dst, result)
    print(json.dumps({"summary": {n: {k: v for k, v in s.items() if k.startswith(("median", "cpu_over"))}
                                  for n, s in summary.items()},
                      "ratios": result["ratios_median_cpu"], "equality": equality,
                      "floor": {k: v for k, v in floor.items() if k.startswith("floor_s")}}, indent=1))
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
