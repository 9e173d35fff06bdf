"""Where does an EMKD ensemble's accuracy come from: from members that joint training made better, or from
combining them at inference? Each member of a trained EMKD checkpoint evaluated on its own, every subset of the
members combined as the model combines them (model.combine), and the whole ensemble.

    python benchmarks/emkd_members.py RUN/best.pt --name NAME [--against BASELINE/best.pt]
Writes benchmarks/results/NAME.json: validation and test metrics of every subset (full ranking, the checkpoint's
protocol), and the paired test comparisons (seqrec.eval.paired) of the whole ensemble against its best single
member (chosen on validation NDCG@10) and, with --against, of that member against another model.
"""
from __future__ import annotations

import argparse
import itertools
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


def evaluate_subsets(model, split, exclude: str, ks, batch_size: int, item_chunk: int = 0) -> tuple[dict, dict]:
    """({"members 0+2": {"valid": metrics, "test": metrics}, ...}, {label: test ranks}) for every non-empty subset
    of the EMKD model's members, combined as model.combine says; the model's members are restored afterwards."""
    members = list(model.members)
    rows, test_ranks = {}, {}
    try:
        for size in range(1, len(members) + 1):
            for subset in itertools.combinations(range(len(members)), size):
                model.members = nn.ModuleList(members[i] for i in subset)
                label = "members " + "+".join(str(i) for i in subset)
                rows[label] = {}
                for which in ("valid", "test"):
                    res = evaluate(model, split, which, exclude, ks, batch_size, return_ranks=True,
                                   item_chunk=item_chunk)
                    rows[label][which] = res["metrics"]
                    if which == "test":
                        test_ranks[label] = res["ranks"]
                print(f"{label}: valid NDCG@10 {rows[label]['valid']['NDCG@10']:.4f}, test NDCG@10 "
                      f"{rows[label]['test']['NDCG@10']:.4f} HR@10 {rows[label]['test']['HR@10']:.4f}", flush=True)
    finally:
        model.members = nn.ModuleList(members)
    return rows, test_ranks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="an EMKD checkpoint (best.pt)")
    ap.add_argument("--name", required=True, help="result file name: benchmarks/results/NAME.json")
    ap.add_argument("--against", help="another model's checkpoint (e.g. the baseline): the best single member "
                    "compared with it, paired on the test users (member - that model)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    model, cfg, ckpt = model_from_checkpoint(args.checkpoint)
    if cfg.model.name != "emkd":
        raise SystemExit(f"emkd_members.py: {args.checkpoint} is a {cfg.model.name} checkpoint; expected emkd")
    data = load_dataset(cfg.data)
    check_same_data(ckpt, args.checkpoint, data, "evaluate")
    split = make_split(data, cfg.data)
    rows, test_ranks = evaluate_subsets(model, split, cfg.eval.exclude, cfg.eval.ks, cfg.eval.batch_size,
                                        cfg.eval.item_chunk)
    members = list(model.members)
    singles = [k for k in rows if "+" not in k]
    best_single = max(singles, key=lambda k: rows[k]["valid"]["NDCG@10"])
    whole = f"members {'+'.join(str(i) for i in range(len(members)))}"
    pairs = {f"whole - {best_single}": (best_single, whole)}
    if args.against:
        other, other_cfg, other_ckpt = model_from_checkpoint(args.against)
        check_same_data(other_ckpt, args.against, data, "evaluate")
        test_ranks["against"] = evaluate(other, split, "test", cfg.eval.exclude, cfg.eval.ks, cfg.eval.batch_size,
                                         return_ranks=True)["ranks"]
        pairs[f"{best_single} - {other_cfg.model.name}"] = ("against", best_single)
    paired = {f"{label} {m}": c for label, (a, b) in pairs.items()
              for m, c in paired_ranks(test_ranks[a], test_ranks[b]).items()}
    out = {"kind": "measurement", "name": args.name,
           "description": f"EMKD members ({cfg.model.n_networks} networks, combine={cfg.model.combine}, epoch "
                          f"{ckpt.get('epoch')}) on their own and combined: test NDCG@10 / HR@10 per subset, and "
                          f"the whole ensemble against its best single member (on validation), paired on the test "
                          f"users ({len(test_ranks[whole])} users, exclude={cfg.eval.exclude})"
                          + (f"; the best single member against {args.against}" if args.against else ""),
           "summary": {**{k: {"test NDCG@10": r["test"]["NDCG@10"], "test HR@10": r["test"]["HR@10"],
                              "valid NDCG@10": r["valid"]["NDCG@10"]} for k, r in rows.items()},
                       **{label: {"difference": c["difference"], "interval low": c["ci_low"],
                                  "interval high": c["ci_high"], "p": c["p_value"]} for label, c in paired.items()}},
           "rows": rows, "best_single_member": best_single, "paired": paired, "against": args.against,
           "checkpoint": str(args.checkpoint), "epoch": ckpt.get("epoch"),
           "protocol": {**split.protocol, "ranking": "full", "exclude": cfg.eval.exclude},
           "config": cfg.to_dict(), "seconds": time.time() - t0, **provenance(threads=1)}
    write_result(out)


if __name__ == "__main__":
    main()
