"""EMKD's logit KD over all network pairs: the one-pass `ensemble_symmetric_kl` against the pairwise computation
it replaced (two log-softmaxes and two [rows, items] products per pair), forward + backward, side by side in one
process, one thread. Same value (printed; equality of values and gradients is tested in tests/test_emkd.py).

    python benchmarks/kd_speed.py              # N = 3 networks, 2,300 masked rows x 12,101 items (Beauty-sized)

Writes benchmarks/results/emkd_kd_speed_cpu.json.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import provenance  # noqa: E402

from seqrec.models.emkd import ensemble_symmetric_kl  # noqa: E402
from seqrec.utils import atomic_write_json  # noqa: E402


def pairwise_symmetric_kl(logits, view_of, n_views, temperature):
    """The previous implementation: per pair, both log-softmaxes and both KL products."""
    count = torch.bincount(view_of, minlength=n_views).clamp(min=1).float()
    total = 0.0
    for za, zb in itertools.combinations(logits, 2):
        la = F.log_softmax(za.float() / temperature, dim=-1)
        lb = F.log_softmax(zb.float() / temperature, dim=-1)
        pa, pb = la.exp(), lb.exp()
        rows = 0.5 * ((pb.detach() * (lb.detach() - la)).sum(-1) + (pa.detach() * (la.detach() - lb)).sum(-1))
        total = total + (torch.zeros(n_views).index_add_(0, view_of, rows) / count).sum()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", type=int, default=3)
    ap.add_argument("--rows", type=int, default=2300)
    ap.add_argument("--items", type=int, default=12101)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(args.rows, args.items, generator=g).requires_grad_() for _ in range(args.networks)]
    view_of = torch.randint(0, 8, (args.rows,), generator=g)
    fns = {"pairwise": lambda: pairwise_symmetric_kl(logits, view_of, 8, 0.3),
           "one_pass": lambda: ensemble_symmetric_kl(logits, view_of, 8, 0.3)}
    times = {k: [] for k in fns}
    values = {}
    for _ in range(args.repeats):                  # interleaved, so both see the same machine load
        for k, f in fns.items():
            t0 = time.perf_counter()
            loss = f()
            loss.backward()
            times[k].append(time.perf_counter() - t0)
            values[k] = loss.item()
    best = {k: min(v) for k, v in times.items()}
    out = {"kind": "speed", "name": "emkd_kd_speed_cpu",
           "description": f"EMKD logit KD, {args.networks} networks, {args.rows} rows x {args.items} items, forward + "
                          f"backward, best of {args.repeats} interleaved repeats; values {values}",
           "summary": {"pairwise s": round(best["pairwise"], 3), "one_pass s": round(best["one_pass"], 3),
                       "speedup": round(best["pairwise"] / best["one_pass"], 2)},
           "times": times, **provenance(1, "cpu"), "config": vars(args)}
    path = ROOT / "benchmarks" / "results" / "emkd_kd_speed_cpu.json"
    atomic_write_json(path, out)
    print(out["summary"], f"wrote {path}")


if __name__ == "__main__":
    main()
