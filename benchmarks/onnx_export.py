"""ONNX export (issue 15): fidelity of the exported scoring graph, run by onnxruntime, against PyTorch on 1,000
Beauty users, and the CPU latency of both backends, for SASRec, BERT4Rec, GRU4Rec, MQSA-TED and EMKD.

    python benchmarks/onnx_export.py                # Beauty, configs/<model>/beauty.yaml, short training runs
    python benchmarks/onnx_export.py --reuse        # reuse the checkpoints of an earlier run (--runs)
    python benchmarks/onnx_export.py --quick        # synthetic data, tiny models: a smoke test, not a result

Checkpoints: each model is trained with its Beauty config for at most --budget-s seconds of one epoch
(train.time_budget_s; EMKD's config validates late, so its last weights are used). The check is export fidelity,
not accuracy: any trained weights do, and the short run's test NDCG@10 is recorded only to show that they are
trained ones. The checkpoint is exported with `seqrec.serve.export.export_checkpoint` (k = 100; the exporter
itself first checks the graph against PyTorch on random histories).

Fidelity: 1,000 test users (seeded sample of the split's test users), their test histories (every item before the
test target). PyTorch = Recommender._topk_internal (model.score_query / score_items, seqrec.eval.topk), ONNX =
OnnxRecommender._topk_internal (onnxruntime), both with and without excluding the history, top-10 and top-100:
* identical: the fraction of users whose id lists are equal, in order;
* explained by ties: users whose lists differ but whose ONNX list is still a correct top-k of PyTorch's full
  score row within a relative tolerance of 1e-4 (seqrec.serve.export.topk_agreement: the items' PyTorch scores
  equal PyTorch's k best, position by position, within tolerance); wrong = the rest (must be 0);
  max_tie_gap = the largest difference between the PyTorch scores of two items ONNX put in the other order (or of
  the item ONNX kept and the one PyTorch kept at the cut), 0 when every list is identical;
* max_abs_score_diff: max over the returned items of |ONNX score - PyTorch score of the same item|.

Latency: recommend_batch (original ids in and out, k 10, history excluded) of Recommender (torch, 1 thread) and
OnnxRecommender (onnxruntime, 1 intra-op thread) on batches of 1 and 64 of those users' histories, calls of the
two backends interleaved (alternating which goes first), after warm-up calls; median and p90 of wall and CPU
(process) milliseconds per call. Writes benchmarks/results/onnx_export_cpu.json (quick: benchmarks/scratch/).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import provenance  # noqa: E402

from seqrec.utils import atomic_write_json  # noqa: E402

MODELS = ("sasrec", "bert4rec", "gru4rec", "mqsa_ted", "emkd")
QUICK = ["data.synthetic_users=300", "data.synthetic_items=80", "model.d=16", "model.max_len=10"]


def model_config(name: str, quick: bool, budget_s: float):
    from seqrec.config import load_config
    common = ["train.max_epochs=1", f"train.time_budget_s={budget_s}", "train.threads=1", "train.patience=0"]
    if quick:
        extra = {"emkd": ["model.n_networks=2", "model.n_views=2", "model.inner=32"]}.get(name, [])
        return load_config(None, [f"model.name={name}", *QUICK, *extra, *common])
    return load_config(ROOT / "configs" / name / "beauty.yaml", common)


def get_checkpoint(name: str, args) -> tuple[Path, dict | None]:
    """(best.pt, the training result or None when reused)."""
    from seqrec.train import train
    out = Path(args.runs) / name
    ckpt = out / "best.pt"
    if args.reuse and ckpt.is_file():
        import json
        earlier = json.loads((out / "result.json").read_text()) if (out / "result.json").is_file() else None
        return ckpt, None if earlier is None else {**summary(earlier), "reused": True}
    if out.exists():
        shutil.rmtree(out)
    cfg = model_config(name, args.quick, args.budget_s)
    result = train(cfg, out_dir=out, quiet=True, command=f"benchmarks/onnx_export.py ({name})")
    return ckpt, summary(result)


def summary(result: dict) -> dict:
    """What the result records of a training run: enough to see the weights are trained ones."""
    return {"epochs_run": result["epochs_run"], "stopped_by": result.get("stopped_by"),
            "train_wall_s": result.get("wall_time_s"), "test_NDCG@10": result["metrics"]["test"].get("NDCG@10"),
            "test_HR@10": result["metrics"]["test"].get("HR@10")}


def fidelity(torch_rec, onnx_rec, flat, starts, lengths, k: int, exclude: bool, batch: int = 250) -> dict:
    """topk_agreement of ONNX's top-k against PyTorch's full score rows, and PyTorch's own top-k as reference."""
    from seqrec.data.batch import Batch
    from seqrec.serve.export import graph_inputs, topk_agreement
    model = torch_rec.model
    totals = {"users": 0, "identical": 0, "wrong": 0, "torch_wrong": 0, "max_abs_score_diff": 0.0,
              "max_tie_gap": 0.0}
    for lo in range(0, len(lengths), batch):
        s, n = starts[lo: lo + batch], lengths[lo: lo + batch]
        ids_t, scores_t = torch_rec._topk_internal(flat, s, n, k, exclude)
        ids_o, scores_o = onnx_rec._topk_internal(flat, s, n, k, exclude)
        feed = graph_inputs(flat, s, n, model.history_len, exclude)
        with torch.no_grad():
            items = torch.from_numpy(feed["items"])
            full = model.score(Batch(items, (items != 0).sum(1))).float()
            full = full.scatter(1, torch.from_numpy(feed["exclude"]), float("-inf")).numpy()
        rep = topk_agreement(full, ids_o, scores_o, reference_ids=ids_t)
        own = topk_agreement(full, ids_t, scores_t)          # the reference itself must be a correct top-k
        totals["users"] += rep["rows"]
        totals["identical"] += rep["identical_rows"]
        totals["wrong"] += rep["wrong_rows"]
        totals["torch_wrong"] += own["wrong_rows"]
        totals["max_abs_score_diff"] = max(totals["max_abs_score_diff"], rep["max_abs_score_diff"])
        totals["max_tie_gap"] = max(totals["max_tie_gap"], rep["max_rank_gap"])
    u = totals["users"]
    return {"k": k, "exclude_history": exclude, "users": u,
            "identical_fraction": totals["identical"] / u,
            "differ_only_by_ties": u - totals["identical"] - totals["wrong"], "wrong": totals["wrong"],
            "torch_reference_wrong": totals["torch_wrong"], "max_abs_score_diff": totals["max_abs_score_diff"],
            "max_tie_gap": totals["max_tie_gap"]}


def latency(backends: dict, histories: list, batch: int, calls: int, warmup: int = 3) -> dict:
    """Per-call wall and CPU ms of recommend_batch for each backend, calls interleaved."""
    names = list(backends)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    starts = [(i * batch) % max(len(histories) - batch + 1, 1) for i in range(warmup + calls)]
    for i, lo in enumerate(starts):
        part = histories[lo: lo + batch]
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            c0, w0 = time.process_time(), time.perf_counter()
            backends[name].recommend_batch(part, 10, True)
            w, c = time.perf_counter() - w0, time.process_time() - c0
            if i >= warmup:
                wall[name].append(w * 1e3)
                cpu[name].append(c * 1e3)
    out = {"batch": batch, "calls": calls}
    for name in names:
        out[name] = {"wall_ms_median": float(np.median(wall[name])),
                     "wall_ms_p90": float(np.percentile(wall[name], 90)),
                     "cpu_ms_median": float(np.median(cpu[name])), "cpu_ms_p90": float(np.percentile(cpu[name], 90))}
    out["onnx_speedup_cpu_median"] = out["torch"]["cpu_ms_median"] / out["onnx"]["cpu_ms_median"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--quick", action="store_true", help="synthetic data, tiny models (smoke test)")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--budget-s", type=float, default=60.0, help="training seconds per model (one epoch at most)")
    ap.add_argument("--runs", default=None, help="folder of the checkpoints (default benchmarks/scratch/onnx_runs)")
    ap.add_argument("--reuse", action="store_true", help="reuse RUNS/<model>/best.pt where present")
    ap.add_argument("--calls", type=int, nargs=2, default=[200, 30], metavar=("B1", "B64"),
                    help="timed calls at batch 1 and batch 64")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.budget_s = min(args.budget_s, 5.0)
        args.users = min(args.users, 200)
        args.calls = [min(args.calls[0], 20), min(args.calls[1], 5)]
    args.runs = args.runs or str(ROOT / "benchmarks" / "scratch" / ("onnx_runs_quick" if args.quick else "onnx_runs"))
    torch.set_num_threads(1)

    from seqrec.data.loading import load_dataset, make_split
    from seqrec.serve import Recommender
    from seqrec.serve.export import OnnxRecommender, export_checkpoint
    t_start = time.time()
    rows = []
    data_cache = {}
    for name in args.models:
        row = {"model": name}
        t0 = time.time()
        ckpt, trained = get_checkpoint(name, args)
        row["training"] = trained if trained is not None else "reused (no result.json)"
        if trained is None or not trained.get("reused"):
            row["train_and_eval_s"] = round(time.time() - t0, 1)
        torch.set_num_threads(1)                                  # the trainer sets its own
        onnx_path = ckpt.with_name("model.onnx")
        t0 = time.perf_counter()
        meta = export_checkpoint(ckpt, onnx_path, k=100, overwrite=True)
        row["export"] = {"seconds": round(time.perf_counter() - t0, 2), "bytes": onnx_path.stat().st_size,
                         "k": int(meta["seqrec.k"]), "history_len": int(meta["seqrec.history_len"]),
                         "n_items": int(meta["seqrec.n_items"]), "exporter": meta["seqrec.exporter"]}
        torch_rec = Recommender.from_checkpoint(ckpt)
        onnx_rec = OnnxRecommender.from_file(onnx_path, threads=1)
        cfg = torch_rec.config
        key = repr(cfg.data)
        if key not in data_cache:
            data = load_dataset(cfg.data)
            data_cache[key] = (data, make_split(data, cfg.data))
        data, split = data_cache[key]
        rng = np.random.default_rng(0)
        starts, lengths, _ = split.eval_inputs("test")
        pick = np.sort(rng.choice(len(lengths), size=min(args.users, len(lengths)), replace=False))
        starts, lengths = starts[pick], lengths[pick]
        row["users"] = int(len(pick))
        row["history_length"] = {"mean": float(lengths.mean()), "max": int(lengths.max()),
                                 "longer_than_window": int((lengths > onnx_rec.history_len).sum())}
        row["fidelity"] = [fidelity(torch_rec, onnx_rec, data.items, starts, lengths, k, exclude)
                           for k in (10, min(100, data.n_items)) for exclude in (False, True)]
        histories = [torch_rec.item_vocab.decode(data.items[s: s + n]).tolist() for s, n in zip(starts, lengths)]
        row["latency"] = [latency({"torch": torch_rec, "onnx": onnx_rec}, histories, b, c)
                          for b, c in ((1, args.calls[0]), (64, args.calls[1]))]
        rows.append(row)
        f10 = row["fidelity"][1]
        print(f"{name}: top-10 identical {f10['identical_fraction']:.3f} (ties {f10['differ_only_by_ties']}, "
              f"wrong {f10['wrong']}), max |score diff| {f10['max_abs_score_diff']:.2e}; latency "
              + ", ".join(f"batch {lat['batch']}: torch {lat['torch']['cpu_ms_median']:.2f} / onnx "
                          f"{lat['onnx']['cpu_ms_median']:.2f} CPU ms" for lat in row["latency"]), flush=True)
    summary = {}
    for row in rows:
        fid, lat = row["fidelity"], {x["batch"]: x for x in row["latency"]}
        summary[row["model"]] = {
            "top10_identical_fraction": min(f["identical_fraction"] for f in fid if f["k"] == 10),
            "top100_identical_fraction": min(f["identical_fraction"] for f in fid if f["k"] != 10),
            "wrong_users": sum(f["wrong"] for f in fid),
            # as text: RESULTS.md shows floats to 4 decimals, these are around 1e-6
            "max_abs_score_diff": f'{max(f["max_abs_score_diff"] for f in fid):.1e}',
            "max_tie_gap": f'{max(f["max_tie_gap"] for f in fid):.1e}',
            **{f"batch{b}_cpu_ms_{backend}": lat[b][backend]["cpu_ms_median"] for b in lat
               for backend in ("torch", "onnx")}}
    out = {
        "benchmark": "onnx_export",
        "name": "onnx_export_quick_cpu" if args.quick else "onnx_export_cpu",
        "description": ("ONNX export (seqrec export --format onnx) against PyTorch on Beauty test histories: "
                        "fraction of users with the identical top-10 / top-100 (with and without excluding the "
                        "history; the lower of the two), users whose ONNX top-k is not a correct top-k of PyTorch's "
                        "scores (wrong), max |score difference| of the returned items, max PyTorch score gap of items "
                        "in another order (ties); median CPU ms per recommend_batch call (k 10) at batch 1 and 64, "
                        "PyTorch vs onnxruntime, 1 thread each. Short training runs: export fidelity, not accuracy."),
        "summary": summary,
        **provenance(threads=1, device="cpu"),
        "config": {"models": args.models, "configs": "synthetic (quick)" if args.quick else
                   "configs/<model>/beauty.yaml", "training": f"one epoch at most, train.time_budget_s "
                   f"{args.budget_s}", "users": args.users, "export_k": 100, "latency_k": 10,
                   "latency_exclude_history": True, "calls": {"batch_1": args.calls[0], "batch_64": args.calls[1]},
                   "onnxruntime_threads": 1, "torch_threads": 1, "tolerance": "relative 1e-4 of the row's best score"},
        "protocol": ("Checkpoints from short training runs (export fidelity, not accuracy). Fidelity: seeded sample "
                     "of test users, test histories; PyTorch = Recommender._topk_internal, ONNX = "
                     "OnnxRecommender._topk_internal; identical = same id list in order; differ_only_by_ties = "
                     "ONNX's list is a correct top-k of PyTorch's full score row within tolerance; wrong = "
                     "neither; max_abs_score_diff over the returned items. Latency: recommend_batch (original ids, "
                     "k 10, history excluded), batches 1 and 64, backends interleaved, after 3 warm-up calls; "
                     "median / p90 per call of wall and CPU (process) ms, 1 thread each. The machine is shared "
                     "(provenance.load_average): CPU ms are steadier than wall ms."),
        "results": rows,
        "seconds": round(time.time() - t_start, 1),
    }
    folder = ROOT / "benchmarks" / ("scratch" if args.quick else "results")
    path = Path(args.out) if args.out else folder / f"{out['name']}.json"
    atomic_write_json(path, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
