"""Batch inference (issue 14): `seqrec recommend CKPT --users all -k 100 --out recs.*` on Beauty, and top-100 for
the users of a 1M-item synthetic catalogue, with wall time, CPU time and peak memory; the chunked torch.topk path
side by side with the previous full-sort path.

    python benchmarks/batch_inference.py            # ~10 min on one core (trains a 1-epoch checkpoint first)
    python benchmarks/batch_inference.py --quick    # tiny sizes: a smoke test (~1 min)

Beauty (S3-Rec Beauty, configs/sasrec/beauty.yaml: SASRec d 64, 2 layers, max_len 50): a checkpoint trained
for one epoch by `seqrec train` (--checkpoint to give one; the timing does not depend on the weights). Then:
  * cli/<format>: the command itself, `seqrec recommend CKPT --users all -k 100 --out recs.<format>` (all 22,363
    users, items seen excluded, default --batch-size and --item-chunk), run in-process by a fresh Python: wall
    seconds of the whole process as the parent sees it (interpreter start and imports included), the process's
    CPU seconds (time.process_time at the end: everything since it started), peak RSS (ru_maxrss).
  * topk/beauty: the top-k only (no file), all users, the new path (seqrec.eval.topk: torch.topk per item chunk)
    and the previous one (`full_sort_topk` below: the whole score row sorted, what Recommender did before),
    interleaved over --rounds rounds in one process, CPU seconds of each, and whether they return the same items
    and scores.
1M items (benchmarks/large_catalogue.make_data: --big-users users, ~10 items each; SASRec as above, random
initialisation, since time and memory do not depend on the weights):
  * baseline: the process with data and model only (the memory every row below includes).
  * write parquet: write_recommendations(..., .parquet) of every user, batch 512 (the command's default),
    item_chunk 65536 (the default) and 0 (whole rows: 2 GB of scores per batch).
  * topk/1M: new vs previous path for every user of a synthetic data set of --old-users users (same generator),
    batch 64, interleaved (the previous path sorts batch x 1M scores: ~1 GB at batch 64).
Every measurement runs in its own subprocess with one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)), so
its peak RSS is its own. The machine is shared: CPU seconds are steadier than wall seconds (see load_average).
Writes benchmarks/results/batch_inference_cpu.json (--quick: benchmarks/scratch/batch_inference_quick_cpu.json).
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from seqrec.data.batch import history_batch  # noqa: E402
from seqrec.eval.evaluator import exclude_items  # noqa: E402
from seqrec.eval.topk import sorted_desc  # noqa: E402
from seqrec.serve.recommender import Recommender  # noqa: E402

SCRATCH = ROOT / "benchmarks" / "scratch"
CONFIG = "configs/sasrec/beauty.yaml"

CHILD = r"""
import json, resource, sys, time
args = json.loads(sys.argv[1])
sys.path.insert(0, args["bench_dir"])
import numpy as np, torch
torch.set_num_threads(1)
out = {}
if args["kind"] == "cli":
    from seqrec.cli import main
    w0 = time.perf_counter()
    out["rc"] = main(args["argv"])
    out["main_wall_s"] = time.perf_counter() - w0
else:
    from batch_inference import FullSortRecommender, random_model, synthetic_data
    from seqrec.serve.batch import iter_recommendations, write_recommendations
    from seqrec.serve.recommender import Recommender
    if args["data"] == "beauty":
        rec = Recommender.from_checkpoint(args["checkpoint"])
        from seqrec.data.loading import load_dataset
        data = load_dataset(rec.config.data)
    else:
        data = synthetic_data(args["users"], args["items"])
        rec = Recommender(random_model(data.n_items), data.item_vocab, data.user_vocab)
    rec.item_chunk = args.get("item_chunk", 0)
    if args["kind"] == "write":
        c0, w0 = time.process_time(), time.perf_counter()
        out["rows"] = write_recommendations(rec, data, args["out"], k=args["k"], batch_size=args["batch_size"],
                                            overwrite=True, progress=False)
        out.update(cpu_s=time.process_time() - c0, wall_s=time.perf_counter() - w0)
    elif args["kind"] == "compare":
        old = FullSortRecommender(rec.model, rec.item_vocab)
        rows = np.arange(min(args["users"], data.n_users))
        results, cpu = {}, {"new": [], "old": []}
        for r in range(args["rounds"]):
            for name in (("new", "old") if r % 2 == 0 else ("old", "new")):
                c0 = time.process_time()
                parts = list(iter_recommendations(rec if name == "new" else old, data, rows, args["k"],
                                                  batch_size=args["batch_size"]))
                cpu[name].append(time.process_time() - c0)
                results[name] = {c: np.concatenate([p[c] for p in parts]) for c in ("user", "item", "score")}
        out.update(users=len(rows), cpu_s=cpu, identical=all(np.array_equal(results["new"][c], results["old"][c])
                                                             for c in ("user", "item", "score")))
out["cpu_s_process"] = time.process_time()
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(out))
"""


# -- pieces the child imports -----------------------------------------------------------------------------------

def random_model(n_items: int):
    """SASRec of configs/sasrec/beauty.yaml for n_items items, random initialisation (seed 0), eval mode."""
    from seqrec.config import load_config
    from seqrec.models import DatasetInfo, build_model
    torch.manual_seed(0)
    return build_model(load_config(str(ROOT / CONFIG)).model, DatasetInfo(n_items)).eval()


def synthetic_data(n_users: int, n_items: int):
    from large_catalogue import make_data
    return make_data(n_users, n_items, seed=0)


class FullSortRecommender(Recommender):
    """A Recommender whose top-k is the path before this change (Recommender with item_chunk 0 at commit
    755ab72): the whole score row [B, n_items + 1], exclusions set to -inf, then a stable descending sort of the
    row (sorted_desc), which gives the same order (score, ties by lower id) at O(n log n) per row."""

    @torch.no_grad()
    def _topk_internal(self, flat, starts, lengths, k, exclude_history):
        scores = self.model.score(history_batch(flat, starts, lengths, self.model.history_len)).float()
        if exclude_history:
            exclude_items(scores, flat, starts, lengths)
        v, i = sorted_desc(scores, torch.arange(scores.shape[1]).expand_as(scores), k)
        return i.numpy().astype(np.int64), v.numpy()


# -- the parent ---------------------------------------------------------------------------------------------------

def run_child(spec: dict, timeout: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    w0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", CHILD, json.dumps({**spec, "bench_dir": str(ROOT / "benchmarks")})],
                           capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - w0
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return {"status": "ok", "process_wall_s": wall, **json.loads(line[7:])}
    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
    return {"status": "failed (rc %d): %s" % (p.returncode, " | ".join(tail))}


def train_checkpoint(out: Path, quick: bool, timeout: float) -> dict:
    """A Beauty SASRec checkpoint from one epoch of `seqrec train` (quick: the tiny synthetic data)."""
    argv = ["train", CONFIG, "--set", "train.max_epochs=1", "--set", "train.threads=1", "--out", str(out),
            "--overwrite", "--quiet", "--no-baseline"]
    if quick:
        argv[1:2] = ["--set", "data.dataset=synthetic", "--set", "data.synthetic_users=300", "--set",
                     "data.synthetic_items=200", "--set", "model.layers=1"]
    return run_child({"kind": "cli", "argv": argv}, timeout)


def summarise(results: list[dict]) -> dict:
    """The headline numbers of the result rows (RESULTS.md shows them)."""
    summary = {}
    for r in results:
        if r.get("status") != "ok":
            continue
        what = r["what"]
        if what.startswith("cli/"):
            summary[f"{r['data']} command {what[4:]}: CPU s / wall s / peak RSS MB"] = \
                f"{r['cpu_s_process']:.1f} / {r['process_wall_s']:.1f} / {r['peak_rss_mb']:.0f}"
        elif what.startswith("topk/"):
            new, old = (min(r["cpu_s"][n]) for n in ("new", "old"))
            summary[f"{what} ({r['users']:,} users): CPU s, best round"] = \
                f"{new:.2f} vs {old:.2f} ({old / new:.1f}x), identical {r['identical']}"
        elif what.startswith("baseline"):
            summary[f"{r['items']:,} items, data + model only: peak RSS MB"] = round(r["peak_rss_mb"])
        elif what == "write parquet":
            summary[f"{r['items']:,} items, {r['users']:,} users, item_chunk {r['item_chunk']}: CPU s / wall s / "
                    f"peak RSS MB"] = f"{r['cpu_s']:.1f} / {r['wall_s']:.1f} / {r['peak_rss_mb']:.0f}"
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--checkpoint", help="a Beauty SASRec checkpoint (default: train one for one epoch)")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--items", type=int, default=None, help="synthetic catalogue (default 1,000,000; quick 20,000)")
    ap.add_argument("--big-users", type=int, default=None, help="users of the synthetic data (default 10,000; "
                                                                "quick 500)")
    ap.add_argument("--old-users", type=int, default=None, help="users of the 1M new-vs-old comparison "
                                                                "(default 512; quick 128)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the new-vs-old comparisons")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds per measurement")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    q = args.quick
    n_items = args.items or (20_000 if q else 1_000_000)
    big_users = args.big_users or (500 if q else 10_000)
    old_users = args.old_users or (128 if q else 512)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    results = []

    def record(row: dict) -> dict:
        results.append(row)
        print(json.dumps(row), flush=True)
        return row

    t_start = time.time()
    small = "tiny synthetic (quick)" if q and args.checkpoint is None else "beauty"
    checkpoint = args.checkpoint
    trained = None
    if checkpoint is None:
        run_dir = SCRATCH / ("batch_inference_quick_run" if q else "batch_inference_beauty_1epoch")
        trained = record({"what": "train checkpoint (1 epoch)", **train_checkpoint(run_dir, q, args.timeout)})
        checkpoint = str(run_dir / "best.pt")
    run_result = Path(checkpoint).parent / "result.json"
    if run_result.is_file():            # how the checkpoint was trained (the run's own record)
        r = json.loads(run_result.read_text())
        trained = {**(trained or {}), "run_command": r.get("command"), "epochs_run": r.get("epochs_run"),
                   "git_commit": r.get("git_commit"), "test_metrics": r.get("metrics", {}).get("test")}
    for fmt in ("parquet", "csv", "jsonl"):
        out = SCRATCH / f"batch_inference_recs.{fmt}"
        record({"what": f"cli/{fmt}", "data": small, **run_child(
            {"kind": "cli", "argv": ["recommend", checkpoint, "--users", "all", "-k", str(args.k), "--out",
                                     str(out), "--overwrite"]}, args.timeout)})
        out.unlink(missing_ok=True)
    record({"what": f"topk/{small}: new vs full sort", "data": small, "batch_size": 512, **run_child(
        {"kind": "compare", "data": "beauty", "checkpoint": checkpoint, "users": 10**9, "k": args.k,
         "batch_size": 512, "rounds": args.rounds, "item_chunk": 65536}, args.timeout)})
    big = {"data": "synthetic", "items": n_items, "users": big_users, "k": args.k}
    record({"what": "baseline (data + model)", **big, **run_child({"kind": "baseline", **big}, args.timeout)})
    out = SCRATCH / "batch_inference_recs_1m.parquet"
    for chunk in (65536, 0):
        record({"what": "write parquet", **big, "batch_size": 512, "item_chunk": chunk,
                "estimated_scores_mb": 512 * min(chunk or n_items + 1, n_items + 1) * 4 / 2**20, **run_child(
                    {"kind": "write", **big, "batch_size": 512, "item_chunk": chunk, "out": str(out)},
                    args.timeout)})
        out.unlink(missing_ok=True)
    record({"what": f"topk/{n_items:,} items: new vs full sort", **big, "users": old_users, "batch_size": 64, "item_chunk": 65536,
            **run_child({"kind": "compare", **big, "users": old_users, "batch_size": 64, "rounds": args.rounds,
                         "item_chunk": 65536}, args.timeout)})

    out = {
        "kind": "speed",
        "name": "batch_inference_quick_cpu" if q else "batch_inference_cpu",
        "description": (f"`seqrec recommend CKPT --users all -k {args.k} --out FILE` on {small} (SASRec d 64, every "
                        f"user, seen items excluded) and top-{args.k} for {big_users:,} users of a {n_items:,}-item "
                        "synthetic catalogue, one thread; the chunked torch.topk path vs the previous full sort. "
                        "CPU seconds are the steady measure (shared machine); RSS includes interpreter, torch, "
                        "data and model."),
        "summary": summarise(results),
        **provenance(threads=1, device="cpu"),
        "config": {"model": CONFIG, "checkpoint": checkpoint,
                   "k": args.k, "exclude_seen": True, "synthetic_items": n_items, "synthetic_users": big_users,
                   "old_path_users_1m": old_users, "rounds": args.rounds},
        "protocol": ("one thread; each measurement in its own subprocess (peak RSS = its ru_maxrss, including "
                     "interpreter, torch, data and model: compare with the baseline row). cli/*: the command "
                     "`seqrec recommend CKPT --users all -k K --out FILE` run by a fresh Python; process_wall_s "
                     "= the whole process as seen by the parent, cpu_s_process = its CPU seconds since start, "
                     "main_wall_s = the command without interpreter start-up. write parquet: "
                     "write_recommendations of every synthetic user (cpu_s / wall_s around it). new vs full "
                     "sort: the same users and batches, interleaved rounds, CPU seconds per round of the top-k "
                     "computation (no file); identical = same users, items and scores. Beauty weights: one "
                     "epoch of training; synthetic: random initialisation (time and memory do not depend on "
                     "the weights). The machine is shared (provenance.load_average): CPU seconds are steadier "
                     "than wall seconds."),
        "trained": trained,
        "results": results,
        "seconds": time.time() - t_start,
    }
    write_result(out, smoke=q, path=args.out)


if __name__ == "__main__":
    main()
