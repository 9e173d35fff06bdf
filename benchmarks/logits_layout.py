"""Which layout of the logits product is faster on this CPU for a training CE step: h @ E^T (what the models do),
(E @ h^T)^T (the transposed form, reported as twice as fast for the bare product), or F.linear(h, E).

    python benchmarks/logits_layout.py            # SASRec Beauty shapes: 256 rows, d 64, 12,102 items, 1 thread

Forward + CE + backward and forward alone, CPU seconds (time.process_time), medians over interleaved rounds.
Writes benchmarks/results/logits_layout_cpu.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import provenance  # noqa: E402

from seqrec.utils import atomic_write_json  # noqa: E402

LAYOUTS = {
    "h @ E^T": lambda h, E: h @ E.T,
    "(E @ h^T)^T": lambda h, E: (E @ h.T).T,
    "F.linear(h, E)": lambda h, E: F.linear(h, E),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--items", type=int, default=12102)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results" / "logits_layout_cpu.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    E = torch.randn(args.items, args.d, generator=g, requires_grad=True)
    h = torch.randn(args.rows, args.d, generator=g, requires_grad=True)
    y = torch.randint(1, args.items, (args.rows,), generator=g)
    step = {k: [] for k in LAYOUTS}
    fwd = {k: [] for k in LAYOUTS}
    for _ in range(args.rounds):
        for k, f in LAYOUTS.items():
            t = time.process_time()
            F.cross_entropy(f(h, E), y).backward()
            step[k].append(time.process_time() - t)
            with torch.no_grad():
                t = time.process_time()
                f(h, E)
                fwd[k].append(time.process_time() - t)
    rows = {k: {"fwd_ce_bwd_ms": 1e3 * statistics.median(step[k]), "product_only_ms": 1e3 * statistics.median(fwd[k])}
            for k in LAYOUTS}
    for k, v in rows.items():
        print(f"{k:16s} forward+CE+backward {v['fwd_ce_bwd_ms']:.2f} ms   product only {v['product_only_ms']:.2f} ms")
    atomic_write_json(args.out, {"benchmark": "logits_layout", "shapes": vars(args), "median_cpu_ms": rows,
                                 **provenance(threads=args.threads)})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
