"""Independently trained models combined at inference (a deep ensemble): the control for an ensemble method.

EMKD trains N networks jointly and ranks by the sum of their logits (model.combine: logits). Is that better than
N networks trained on their own and combined the same way? This evaluates each given checkpoint, the sum of their
logits, and (with --against) the paired test comparison of that ensemble with another checkpoint, e.g. the EMKD run.

    python benchmarks/ensemble_eval.py RUN1/best.pt RUN2/best.pt RUN3/best.pt --against EMKD/best.pt --name NAME
Writes benchmarks/results/NAME.json. The checkpoints must share the data (fingerprint), the split and the input
window (history length); the protocol (exclusion, ks) is the first one's.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance, write_result  # noqa: E402

from seqrec.data.loading import load_dataset, make_split  # noqa: E402
from seqrec.eval.evaluator import evaluate  # noqa: E402
from seqrec.eval.paired import paired_ranks  # noqa: E402
from seqrec.train.checkpoint import check_same_data, model_from_checkpoint  # noqa: E402


class SumOfLogits(nn.Module):
    """Trained models ranked by the sum of their scores (what EMKD's combine=logits does with its members)."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        lens = {m.history_len for m in models}
        if len(lens) != 1:
            raise SystemExit(f"ensemble_eval.py: the models read different history lengths {sorted(lens)}; "
                             f"expected one input window for all")
        self.members = nn.ModuleList(models)
        self.history_len = lens.pop()
        self.n_items = models[0].n_items

    def score(self, batch) -> torch.Tensor:
        return torch.stack([m.score(batch).float() for m in self.members]).sum(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="the ensemble's members (best.pt of independent runs)")
    ap.add_argument("--against", help="a checkpoint to compare the ensemble with, paired on the test users")
    ap.add_argument("--name", required=True, help="result file name: benchmarks/results/NAME.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    loaded = [model_from_checkpoint(p) for p in args.checkpoints]
    cfg = loaded[0][1]
    data = load_dataset(cfg.data)
    for path, (_, _, ckpt) in zip(args.checkpoints, loaded):
        check_same_data(ckpt, path, data, "evaluate")
    split = make_split(data, cfg.data)
    ensemble = SumOfLogits([m for m, _, _ in loaded])
    candidates = {f"member {i}: {path}": m for i, (path, (m, _, _)) in enumerate(zip(args.checkpoints, loaded))}
    candidates["sum of logits"] = ensemble         # labels carry the index: a checkpoint may be given twice
    against = None
    if args.against:
        against, _, against_ckpt = model_from_checkpoint(args.against)
        check_same_data(against_ckpt, args.against, data, "evaluate")
        candidates[args.against] = against
    rows, test_ranks = {}, {}
    for label, model in candidates.items():
        rows[label] = {}
        for which in ("valid", "test"):
            res = evaluate(model, split, which, cfg.eval.exclude, cfg.eval.ks, cfg.eval.batch_size,
                           return_ranks=True)
            rows[label][which] = res["metrics"]
            if which == "test":
                test_ranks[label] = res["ranks"]
        print(f"{label}: valid NDCG@10 {rows[label]['valid']['NDCG@10']:.4f}, test NDCG@10 "
              f"{rows[label]['test']['NDCG@10']:.4f} HR@10 {rows[label]['test']['HR@10']:.4f}", flush=True)
    paired = {}
    if against is not None:       # B = the other checkpoint, A = the ensemble: B - A > 0 where it is better
        paired = paired_ranks(test_ranks["sum of logits"], test_ranks[args.against])
    out = {"kind": "measurement", "name": args.name,
           "description": f"{len(args.checkpoints)} independently trained {cfg.model.name} models ranked by the sum "
                          f"of their logits, each alone, and the ensemble"
                          + (f" against {args.against} (B - A: that checkpoint minus the ensemble, paired on the "
                             f"test users)" if against is not None else ""),
           "summary": {**{k: {"test NDCG@10": r["test"]["NDCG@10"], "test HR@10": r["test"]["HR@10"],
                              "valid NDCG@10": r["valid"]["NDCG@10"]} for k, r in rows.items()},
                       **{f"against - ensemble {m}": {"difference": c["difference"], "interval low": c["ci_low"],
                                                      "interval high": c["ci_high"], "p": c["p_value"]}
                          for m, c in paired.items()}},
           "rows": rows, "paired_against_minus_ensemble": paired, "checkpoints": args.checkpoints,
           "against": args.against, "protocol": {**split.protocol, "ranking": "full", "exclude": cfg.eval.exclude},
           "config": cfg.to_dict(), "seconds": time.time() - t0, **provenance(threads=1)}
    write_result(out)


if __name__ == "__main__":
    main()
