"""Peak memory and time of the item cross entropy over a large catalogue, whole vs in recomputed row chunks
(`model.logits_chunk_rows`, seqrec.losses.item_cross_entropy).

    python benchmarks/logits_memory.py                      # K = 6,000 target rows, N = 53,000 items (Taobao-sized)

Each mode runs forward + backward in a fresh process (peak RSS = ru_maxrss, includes the interpreter and torch,
~300 MB); the baseline row allocates only the inputs. Writes benchmarks/results/logits_chunk_memory_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import provenance  # noqa: E402

CHILD = """
import json, resource, sys, time, torch
torch.set_num_threads(1)
from seqrec.losses import item_cross_entropy
k, n, d, chunk, run = (int(a) for a in sys.argv[1:6])
g = torch.Generator().manual_seed(0)
hidden = torch.randn(k, d, generator=g, requires_grad=True)
emb = (0.1 * torch.randn(n + 1, d, generator=g)).requires_grad_()
targets = torch.randint(1, n + 1, (k,), generator=g)
t0 = time.perf_counter()
loss = None
if run:
    loss = item_cross_entropy(hidden, targets, lambda h: h @ emb.T, chunk_rows=chunk)
    loss.backward()
dt = time.perf_counter() - t0
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": dt,
                  "loss": None if loss is None else loss.item(),
                  "grad_norm": None if loss is None else float(emb.grad.norm())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=6000, help="target rows K in the batch")
    ap.add_argument("--items", type=int, default=53000, help="catalogue size N")
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--chunks", default="0,2048,512", help="chunk_rows values to measure (0 = whole)")
    args = ap.parse_args()
    runs = {}
    for label, chunk, run in [("inputs only", 0, 0)] + [(f"chunk_rows={c}", int(c), 1) for c in args.chunks.split(",")]:
        p = subprocess.run([sys.executable, "-c", CHILD, str(args.rows), str(args.items), str(args.d), str(chunk),
                            str(run)], capture_output=True, text=True, check=True)
        runs[label] = json.loads(p.stdout.strip().splitlines()[-1])
        print(label, runs[label], flush=True)
    base = runs["inputs only"]["peak_rss_mb"]
    summary = {f"{k} peak RSS above inputs (MB)": round(v["peak_rss_mb"] - base, 1) for k, v in runs.items()
               if k != "inputs only"}
    summary.update({f"{k} seconds": round(v["seconds"], 2) for k, v in runs.items() if k != "inputs only"})
    out = {"kind": "speed", "name": "logits_chunk_memory_cpu",
           "description": f"Item cross entropy forward + backward over K = {args.rows} target rows and "
                          f"N = {args.items} items (d {args.d}), whole vs in recomputed row chunks; peak RSS of a "
                          "fresh process each, minus the inputs-only process. Same loss and gradients "
                          "(tests/test_losses.py); here the loss values: " +
                          ", ".join(f"{k} {v['loss']:.6f}" for k, v in runs.items() if v["loss"] is not None),
           "summary": summary, "runs": runs, **provenance(1, "cpu"), "config": vars(args)}
    path = ROOT / "benchmarks" / "results" / "logits_chunk_memory_cpu.json"
    from seqrec.utils import atomic_write_json
    atomic_write_json(path, out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
