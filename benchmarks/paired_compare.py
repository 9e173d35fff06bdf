"""Two trained models on the same test users: is B's lead over A more than test-set noise? A result file of
`seqrec compare` (seqrec.cli.compare_checkpoints; statistics in seqrec.eval.paired).

    python benchmarks/paired_compare.py A.pt B.pt --name NAME [--metric NDCG@10 ...] [--split test]
Writes benchmarks/results/NAME.json: per metric A's and B's value, B - A, its paired bootstrap interval, the
p-value of the paired t statistic and the users each model ranks better; with the protocol, both checkpoints'
paths and training epochs, and the provenance of every benchmark file. The spread between training runs (seeds)
is not in it: that needs several runs per model.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance, write_result  # noqa: E402

from seqrec.cli import compare_checkpoints  # noqa: E402
from seqrec.errors import SeqrecError  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint_a", metavar="A", help="reference model's checkpoint (e.g. the baseline's best.pt)")
    ap.add_argument("checkpoint_b", metavar="B", help="compared model's checkpoint")
    ap.add_argument("--name", required=True, help="result file name: benchmarks/results/NAME.json")
    ap.add_argument("--metric", dest="metrics", action="append", default=None,
                    help="HR@K, NDCG@K or MRR@K (repeatable; default NDCG@10, HR@10, NDCG@20, HR@20)")
    ap.add_argument("--split", choices=("valid", "test"), default="test")
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    try:
        out = compare_checkpoints(args.checkpoint_a, args.checkpoint_b, args.split,
                                  args.metrics or ["NDCG@10", "HR@10", "NDCG@20", "HR@20"],
                                  resamples=args.resamples, seed=args.seed)
    except SeqrecError as e:
        print(f"paired_compare.py: error: {e}", file=sys.stderr)
        return 2
    c = out["comparisons"]
    result = {"kind": "measurement", "name": args.name,
              "description": f"Paired comparison on the {out['split']} users ({out['users']}, {out['dataset']}, "
                             f"exclude={out['exclude']}): A = {out['model_a']}, B = {out['model_b']}; B - A with "
                             f"its 95% paired bootstrap interval ({args.resamples} resamples) and the p-value of the "
                             f"paired t statistic. Test-set noise only, not the spread between training runs.",
              "summary": {m: {"A": v["a"], "B": v["b"], "B - A": v["difference"], "interval low": v["ci_low"],
                              "interval high": v["ci_high"], "p": v["p_value"]} for m, v in c.items()},
              **out, "seconds": time.time() - t0, **provenance(threads=1)}
    write_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
