"""Training speed at 1 and 2 torch threads by model size, to choose the default of `train.threads`.

    python benchmarks/threads_speed.py                 # the models below, 2 rounds, ~10 min on this machine
    python benchmarks/threads_speed.py --quick         # smoke test (synthetic data, few steps)

Each (model, threads) pair runs in its own process (torch's thread pool is per process): it builds the Trainer,
warms up, then times `steps` training steps on the same batches (wall seconds: what a second thread can shorten;
CPU seconds: what it costs). Pairs are run in alternating order over rounds, so machine-load drift hits both alike.
The machine is shared: `load_average` is recorded. Writes benchmarks/results/threads_speed_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import provenance  # noqa: E402

from seqrec.utils import atomic_write_json  # noqa: E402

# (name, config, overrides): from the quickstart's size to EMKD's official width
MODELS = [
    ("quickstart sasrec d64 (synthetic)", None, []),
    ("sasrec d64 Beauty", "configs/sasrec/beauty.yaml", []),
    ("sasrec d256 Beauty", "configs/sasrec/beauty.yaml", ["model.d=256", "model.inner=1024"]),
    ("bert4rec d64 Beauty", "configs/bert4rec/beauty.yaml", []),
    ("emkd d256 Beauty (N 3, M 8)", "configs/emkd/beauty.yaml", []),
]
# EMKD's step takes tens of seconds at d 256: fewer of them
FEW_STEPS = {"emkd d256 Beauty (N 3, M 8)": (1, 2)}

CHILD = """
import json, sys, time, torch
cfg_path, overrides, threads, warmup, steps = json.loads(sys.argv[1])
torch.set_num_threads(threads)
from seqrec.cli import DEFAULT_CONFIG
from seqrec.config import load_config
from seqrec.train import Trainer
cfg = load_config(cfg_path or DEFAULT_CONFIG, overrides + [f"train.threads={threads}", "train.prefetch=0"])
t = Trainer(cfg, None, quiet=True)
params = sum(p.numel() for p in t.model.parameters())
batches = t._epoch_batches(1)[: warmup + steps]
t.model.train()
wall, cpu = [], []
for i, batch in enumerate(t.loader.epoch(1, batches)):
    w0, c0 = time.perf_counter(), time.process_time()
    t.training_step(batch)
    if i >= warmup:
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
print(json.dumps({"params": params, "wall": wall, "cpu": cpu, "threads": torch.get_num_threads()}))
"""


def run(cfg, overrides, threads, warmup, steps) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, json.dumps([cfg, overrides, threads, warmup, steps])],
                       capture_output=True, text=True, cwd=HERE.parent,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": str(threads)})
    if p.returncode != 0:
        raise SystemExit(f"child failed for {cfg} {overrides} threads={threads}:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "threads_speed_cpu.json"))
    args = ap.parse_args()
    models = MODELS[:1] if args.quick else MODELS
    if args.quick:
        args.rounds, args.warmup, args.steps = 1, 1, 3
    rows = []
    for name, cfg, overrides in models:
        samples = {1: [], 2: []}
        params = None
        warmup, steps = FEW_STEPS.get(name, (args.warmup, args.steps))
        for r in range(args.rounds):
            for threads in ((1, 2) if r % 2 == 0 else (2, 1)):
                out = run(cfg, overrides, threads, warmup, steps)
                params = out["params"]
                samples[threads].append(out)
        med = {t: {"wall_s_per_step": statistics.median(x for o in samples[t] for x in o["wall"]),
                   "cpu_s_per_step": statistics.median(x for o in samples[t] for x in o["cpu"])} for t in (1, 2)}
        rows.append({"model": name, "config": cfg, "overrides": overrides, "parameters": params,
                     "warmup_steps": warmup, "timed_steps": steps, "median": med,
                     "wall_speedup_2_threads": med[1]["wall_s_per_step"] / med[2]["wall_s_per_step"]})
        print(f"{name:34s} {params:>11,d} params  1 thread {med[1]['wall_s_per_step']:.4f} s/step  "
              f"2 threads {med[2]['wall_s_per_step']:.4f} s/step  speed-up {rows[-1]['wall_speedup_2_threads']:.2f}x",
              flush=True)
    result = {"benchmark": "threads_speed", "rounds": args.rounds, "warmup_steps": args.warmup,
              "timed_steps": args.steps, "rows": rows,
              "protocol": "training steps only (forward, backward, optimiser step), no evaluation",
              **provenance(threads=None)}
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
