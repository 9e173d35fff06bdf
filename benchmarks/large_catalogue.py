"""Large catalogues (issue 16): SASRec (d 64, 1 thread) training-step time and peak memory per loss, and the
evaluation time and peak memory of 10k users, whole rows (eval.item_chunk 0) vs item chunks, at 10k / 100k / 1M
items.

    python benchmarks/large_catalogue.py            # 10k, 100k, 1M items (~10 min on one core)
    python benchmarks/large_catalogue.py --quick    # tiny sizes: a smoke test (~1 min)

Data: a synthetic catalogue from a fast vectorised generator (fixed seed; seqrec.data.synthetic.make_synthetic
draws item by item in Python with a popularity choice over the whole catalogue per draw, far too slow at 1M
items): 100k users, ~1M interactions, each user 5 + Geometric(1/6) - 1 items (at most 50); an item is a
Zipf(1.1)-popular item (50%) or a step along the user's own neighbourhood of item ids (50%).

Every measurement runs in its own subprocess, so its peak RSS (resource.getrusage ru_maxrss, including the
interpreter, torch and the data: see the 'baseline' rows) is its own. Training: train.batch_size spans of the
users' last max_len + 1 items ('sequence' examples), one warm-up step, then the median over the timed steps of the
CPU seconds (process time) and wall seconds of loss + backward + Adam step. A measurement whose estimated peak
(logits and their gradient for ce, B x N x 9 bytes for whole-row evaluation) exceeds --max-gb is not run and
recorded as skipped with its estimate. Writes benchmarks/results/large_catalogue_cpu.json (quick:
benchmarks/scratch/large_catalogue_quick_cpu.json, not a result).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import provenance, write_result  # noqa: E402


CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
args = json.loads(sys.argv[1])
sys.path.insert(0, args["bench_dir"])
from large_catalogue import make_data
from seqrec.config import load_config
from seqrec.data.dataset import leave_one_out
out = {}
data = make_data(args["n_users"], args["n_items"], args["seed"])
if args["kind"] == "baseline":          # interpreter + torch + data only
    pass
elif args["kind"] == "train":
    from seqrec.data.batch import build_examples, causal_batch
    from seqrec.models import DatasetInfo, build_model
    cfg = load_config(None, args["overrides"])
    split = leave_one_out(data)
    torch.manual_seed(0)
    model = build_model(cfg.model, DatasetInfo(data.n_items))
    model.prepare(split)
    model.train()
    opt = model.configure_optimizers(cfg.train)[0]
    ex = build_examples(split, "sequence", model.span_len)
    rng = np.random.default_rng(0)
    cpu, wall, losses = [], [], []
    for step in range(args["steps"] + 1):
        batch = causal_batch(data.items, ex, rng.choice(len(ex), cfg.train.batch_size, replace=False))
        c0, w0 = time.process_time(), time.perf_counter()
        loss = model.loss(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step:                        # step 0 is the warm-up
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            losses.append(float(loss))
    out.update(step_cpu_s=float(np.median(cpu)), step_wall_s=float(np.median(wall)), steps=len(cpu),
               step_cpu_s_all=cpu, last_loss=losses[-1])
elif args["kind"] == "eval":
    from seqrec.eval.evaluator import evaluate
    from seqrec.models import DatasetInfo, build_model
    cfg = load_config(None, args["overrides"])
    torch.manual_seed(0)
    model = build_model(cfg.model, DatasetInfo(data.n_items)).eval()
    split = leave_one_out(data)
    c0, w0 = time.process_time(), time.perf_counter()
    res = evaluate(model, split, "test", cfg.eval.exclude, cfg.eval.ks, cfg.eval.batch_size,
                   item_chunk=cfg.eval.item_chunk, return_ranks=True)
    out.update(eval_cpu_s=time.process_time() - c0, eval_wall_s=time.perf_counter() - w0, users=res["users"],
               metrics=res["metrics"], ranks_sum=float(res["ranks"][torch.isfinite(res["ranks"])].sum()))
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""


def make_data(n_users: int, n_items: int, seed: int = 0):
    """The benchmark's synthetic catalogue (vectorised; ~10 interactions per user)."""
    import numpy as np

    from seqrec.data.dataset import InteractionData
    from seqrec.data.vocab import Vocabulary
    rng = np.random.default_rng(seed)
    lengths = np.minimum(5 + rng.geometric(1 / 6, size=n_users) - 1, 50).astype(np.int64)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    total = int(offsets[-1])
    user = np.repeat(np.arange(n_users), lengths)
    pos = np.arange(total) - offsets[user]
    pop = 1.0 / np.arange(1, n_items + 1) ** 1.1
    popular = rng.permutation(n_items)[np.searchsorted(np.cumsum(pop / pop.sum()), rng.random(total), side="right")
                                       .clip(max=n_items - 1)]
    home = rng.integers(0, n_items, size=n_users)
    local = (home[user] + 3 * pos + rng.integers(0, 5, size=total)) % n_items
    items = np.where(rng.random(total) < 0.5, popular, local) + 1
    return InteractionData("synthetic_large", items.astype(np.int64), offsets, Vocabulary.identity(int(n_items)),
                           Vocabulary.identity(n_users, "user"))


def run_child(spec: dict, timeout: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    try:
        p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True,
                           timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout:.0f} s"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return {"status": "ok", **json.loads(line[7:])}
    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
    return {"status": "failed (rc %d): %s" % (p.returncode, " | ".join(tail))}


def available_gb() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--sizes", type=int, nargs="*", help="catalogue sizes (default 10k 100k 1M; quick: 300 3000)")
    ap.add_argument("--users", type=int, default=None, help="users of the training data (default 100k; quick 2k)")
    ap.add_argument("--eval-users", type=int, default=None, help="users evaluated (default 10k; quick 500)")
    ap.add_argument("--batch-size", type=int, default=64, help="training batch (spans of up to 51 items)")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps (default 3; quick 2)")
    ap.add_argument("--item-chunk", type=int, default=None, help="eval.item_chunk of the chunked runs "
                                                                 "(default 65536; quick 1000)")
    ap.add_argument("--max-gb", type=float, default=20.0, help="skip a measurement estimated above this")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    q = args.quick
    sizes = args.sizes or ([300, 3000] if q else [10_000, 100_000, 1_000_000])
    n_users = args.users or (2000 if q else 100_000)
    eval_users = args.eval_users or (500 if q else 10_000)
    steps = args.steps or (2 if q else 3)
    chunk = args.item_chunk or (1000 if q else 65536)
    max_len, d, eval_batch = 50, 64, 1024
    base = [f"model.d={d}", f"model.max_len={max_len}", f"train.batch_size={args.batch_size}", "train.threads=1"]
    losses = {"ce": ["model.loss=ce"]}
    for sampler in ("uniform", "popularity", "in_batch"):
        losses[f"sampled_softmax/{sampler}"] = ["model.loss=sampled_softmax", "model.negatives=256",
                                                f"model.negative_sampler={sampler}"]
    losses["gbce/uniform"] = ["model.loss=gbce", "model.negatives=256", "model.negative_sampler=uniform"]
    from seqrec.config import load_config
    available = {}
    for name, ov in losses.items():
        try:
            load_config(None, base + ov)
            available[name] = True
        except Exception as e:          # noqa: BLE001 - the sampled losses are being added concurrently
            available[name] = f"not available: {e}"
    cap_gb = min(args.max_gb, 0.8 * available_gb())
    results = []

    def record(row: dict) -> None:
        results.append(row)
        show = {k: v for k, v in row.items() if k not in ("metrics", "step_cpu_s_all")}
        print(json.dumps(show), flush=True)

    t_start = time.time()
    for n in sizes:
        common = {"n_items": n, "seed": 0, "bench_dir": str(ROOT / "benchmarks")}
        record({"n_items": n, "what": "baseline (data only)",
                **run_child({**common, "kind": "baseline", "n_users": n_users}, args.timeout)})
        rows = args.batch_size * max_len            # target rows of a training batch (at most)
        for name, ov in losses.items():
            row = {"n_items": n, "what": "train", "loss": name}
            if available[name] is not True:
                record({**row, "status": available[name]})
                continue
            est = rows * (n + 1) * 4 * 3 / 2 ** 30 if name == "ce" else 0.0     # logits, softmax grad, copy
            if est > cap_gb:
                record({**row, "status": f"skipped: estimated {est:.1f} GB of logits > {cap_gb:.1f} GB",
                        "estimated_gb": est})
                continue
            record({**row, **run_child({**common, "kind": "train", "n_users": n_users, "steps": steps,
                                        "overrides": base + ov}, args.timeout)})
        for c in (0, chunk):
            row = {"n_items": n, "what": "eval", "item_chunk": c, "users": eval_users}
            width = n + 1 if c == 0 or c > n else c
            est = eval_batch * width * 9 / 2 ** 30
            if est > cap_gb:
                record({**row, "status": f"skipped: estimated {est:.1f} GB > {cap_gb:.1f} GB", "estimated_gb": est})
                continue
            record({**row, "estimated_gb": est, **run_child(
                {**common, "kind": "eval", "n_users": eval_users,
                 "overrides": base + [f"eval.item_chunk={c}", f"eval.batch_size={eval_batch}"]}, args.timeout)})
    same = {}
    for n in sizes:
        ev = [r for r in results if r["n_items"] == n and r["what"] == "eval" and r.get("status") == "ok"]
        if len(ev) == 2:
            same[str(n)] = ev[0]["metrics"] == ev[1]["metrics"] and ev[0]["ranks_sum"] == ev[1]["ranks_sum"]
    out = {
        "name": "large_catalogue_quick_cpu" if q else "large_catalogue_cpu",
        "provenance": provenance(threads=1, device="cpu"),
        "config": {"model": "sasrec", "d": d, "max_len": max_len, "train_batch_size": args.batch_size,
                   "train_users": n_users, "eval_users": eval_users, "eval_batch_size": eval_batch,
                   "eval_exclude": "none", "item_chunk": chunk, "timed_steps": steps, "sizes": sizes,
                   "negatives": 256, "max_gb": args.max_gb, "cap_gb_used": cap_gb},
        "protocol": ("each measurement in its own subprocess (peak RSS = ru_maxrss of that process, including "
                     "interpreter, torch and data: compare with the baseline row); torch 1 thread; training: "
                     f"batches of {args.batch_size} 'sequence' spans (up to {max_len} inputs, next-item targets at "
                     "every position), 1 warm-up step then the median CPU (process) seconds of loss + backward + "
                     "Adam step over the timed steps; eval: leave-one-out test targets of the evaluated users, "
                     "full ranking, exclude none, untrained SASRec (time and memory do not depend on the "
                     "weights); a measurement estimated above the cap is skipped, not run. The machine is shared "
                     "(see provenance.load_average): CPU seconds are steadier than wall seconds."),
        "chunked_equals_whole": same,
        "results": results,
        "seconds": time.time() - t_start,
    }
    write_result(out, smoke=q, path=args.out)


if __name__ == "__main__":
    main()
