"""EMKD training speed on Beauty, two comparisons, each side by side in one run on the same batches.

Default: item logits computed only at the masked positions (this library, `model.logits_at: masked`) vs at every
position (the official code's way, `model.logits_at: all`), with the official settings (N 3, M 8, d 256, max_len 15,
batch 256); a few training batches of one epoch timed and extrapolated to the epoch's batch count.

    python benchmarks/emkd_speed.py --batches 5 --threads 1          # CPU (a few minutes)
    python benchmarks/emkd_speed.py --full --device cuda             # a GPU: 30 batches each

Writes benchmarks/results/emkd_speed_beauty_<device>.json.

--fused: the members' CE + KD through the fused, chunked `seqrec.losses.ensemble_item_losses` (default) vs the
dense path it replaced (`EMKD.fused_item_losses = False`: every member's [K, n_items] logits kept for autograd), at
the configs/emkd/beauty.yaml settings with width --d (FFN 4d; default 64), one thread, CPU time (process time) of
forward + loss, backward and Adam step per batch, the two paths interleaved batch by batch (alternating which goes
first) on identical initial weights and the same batches and masks. Before that, the peak memory of each path in a
fresh process per setting (its VmHWM, interpreter, torch and data included; also its peak before the first step) at
d 64 and the official d 256, on the widest of the epoch's first batches. After it, a torch.profiler table of one
fused step (top operators by self CPU time) and the step's matrix-product FLOPs (profiler count on the dense path,
where every product is an mm/addmm/bmm) against the GEMM rate measured in the same run.

    python benchmarks/emkd_speed.py --fused --batches 5 --threads 1  # ~10 min on one core

Writes benchmarks/results/emkd_speed_fused_cpu.json.

--against REV: today's code against the code of an earlier commit (the one an issue was measured on), each in its
own worker process started from that commit's src/ (extracted with `git archive`, the repository untouched), with
the same config, batches (checked) and per-step seeds (so the same masks and dropout draws where the two versions
draw them alike: the loss values are recorded side by side). The parent asks the two workers for one training step
at a time, alternating which goes first; each reports its CPU time (process time) of forward + loss, backward and
Adam, and at the end its peak RSS (VmHWM).

    python benchmarks/emkd_speed.py --against b6a6ce5 --batches 6 --warmup 2 --threads 1
    python benchmarks/emkd_speed.py --against b6a6ce5 --batches 12 --warmup 2 --spread   # the epoch's width mix

--precisions fp32,bf16 runs this code's step once per listed train.precision, each in its own worker beside the old
commit's fp32 one (bf16: autocast around forward + loss, as the trainer; needs a CPU with native bfloat16).

Writes benchmarks/results/emkd_speed_vs_<REV>_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from seqrec.config import load_config  # noqa: E402
from seqrec.data.batch import build_examples, epoch_batches, span_batch  # noqa: E402
from seqrec.data.dataset import leave_one_out  # noqa: E402
from seqrec.data.loading import load_dataset  # noqa: E402
from seqrec.models import DatasetInfo, build_model  # noqa: E402
from seqrec.utils import atomic_write_json, peak_rss_mb  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import provenance  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_mode(cfg, data, examples, batches, logits_at: str, device: torch.device, warmup: int) -> dict:
    cfg.model.logits_at = logits_at
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, DatasetInfo(data.n_items, data.attributes)).to(device)
    opt = model.configure_optimizers(cfg.train)[0]
    model.train()
    times, widths = [], []
    for i, idx in enumerate(batches):
        batch = span_batch(data.items, examples, idx).to(device)
        sync(device)
        t0 = time.perf_counter()
        loss = model.loss(batch)["loss"]          # the trainer's fp32 step: forward + loss, backward, Adam
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            widths.append(int(batch.items.shape[1]))
    return {"seconds_per_batch": float(np.mean(times)), "batch_seconds": [round(t, 3) for t in times],
            "batch_widths": widths}


# --- --fused: the fused, chunked item losses vs the dense path ------------------------------------------------------

def load_beauty(config: str, overrides: list[str]):
    """(cfg, data, training examples, the epoch-1 batches) of the EMKD config with these overrides."""
    cfg = load_config(config, overrides)
    data = load_dataset(cfg.data)
    split = leave_one_out(data, cfg.data.short_users)
    probe = build_model(cfg.model, DatasetInfo(data.n_items, data.attributes))
    examples = build_examples(split, cfg.train.examples, probe.span_len, cfg.train.window_step, min_len=1)
    batches = epoch_batches(examples.lengths, cfg.train.batch_size, cfg.train.seed, 1, cfg.train.bucket,
                            cfg.train.bucket_factor)
    return cfg, data, examples, batches


def width_overrides(d: int, threads: int) -> list[str]:
    return [f"model.d={d}", f"model.inner={4 * d}", f"train.threads={threads}"]


def build(cfg, data, fused: bool):
    torch.manual_seed(cfg.train.seed)                  # both paths start from the same weights
    model = build_model(cfg.model, DatasetInfo(data.n_items, data.attributes))
    model.fused_item_losses = fused
    model.train()
    return model, model.configure_optimizers(cfg.train)[0]


def train_step(model, opt, batch, seed: int) -> tuple[float, dict]:
    """CPU seconds of one training step (forward + loss, backward, Adam) and its loss terms."""
    torch.manual_seed(seed)                            # the same views (masks) and dropout draws on both paths
    t0 = time.process_time()
    out = model.loss(batch)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    opt.step()
    return time.process_time() - t0, {k: float(v.detach()) for k, v in out.items()}


class ItemLossClock:
    """CPU seconds spent in EMKD's call of ensemble_item_losses (its forward does all the work: values and
    gradients; its backward only scales them), to split a fused step into item losses and the rest."""

    def __enter__(self):
        import seqrec.models.emkd as emkd_module
        self.module, self.original, self.seconds = emkd_module, emkd_module.ensemble_item_losses, 0.0

        def timed(*args, **kwargs):
            t0 = time.process_time()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - t0
        emkd_module.ensemble_item_losses = timed
        return self

    def __exit__(self, *exc):
        self.module.ensemble_item_losses = self.original


def fused_vs_dense_speed(args, cfg, data, examples, batches) -> dict:
    paths = {"dense": build(cfg, data, False), "fused": build(cfg, data, True)}
    seconds = {k: [] for k in paths}
    item_seconds = []                                    # fused: inside ensemble_item_losses
    first_terms, widths = {}, []
    for i, idx in enumerate(batches[: args.warmup + args.batches]):
        batch = span_batch(data.items, examples, idx)
        order = list(paths) if i % 2 == 0 else list(paths)[::-1]       # alternate which path runs first
        for name in order:
            with ItemLossClock() as clock:
                dt, terms = train_step(*paths[name], batch, seed=cfg.train.seed + i)
            if i == 0:
                first_terms[name] = terms                # same weights and masks: the same loss terms
            if i >= args.warmup:
                seconds[name].append(round(dt, 3))
                if name == "fused":
                    item_seconds.append(round(clock.seconds, 3))
        if i >= args.warmup:
            widths.append(int(batch.items.shape[1]))
        print(f"batch {i} (width {batch.items.shape[1]}): " + ", ".join(
            f"{k} {seconds[k][-1] if i >= args.warmup else 'warm-up'}" for k in paths), flush=True)
    mean = {k: float(np.mean(v)) for k, v in seconds.items()}
    fused_items = float(np.mean(item_seconds))
    rest = mean["fused"] - fused_items                  # encoders, attribute and contrastive terms, Adam
    return {"cpu_seconds_per_step": {k: round(v, 3) for k, v in mean.items()},
            "speedup_fused_over_dense": round(mean["dense"] / mean["fused"], 2),
            "item_losses_cpu_seconds_per_step": {"fused (measured)": round(fused_items, 3),
                                                 "dense (step minus the rest)": round(mean["dense"] - rest, 3)},
            "rest_of_step_cpu_seconds": round(rest, 3),
            "speedup_item_losses": round((mean["dense"] - rest) / fused_items, 2),
            "step_cpu_seconds": seconds, "fused_item_loss_cpu_seconds": item_seconds, "batch_widths": widths,
            "first_batch_loss_terms": first_terms}


MEMORY_CHILD = r"""
import json, resource, sys, time
import torch
args = json.loads(sys.argv[1])
sys.path.insert(0, args["bench_dir"])
torch.set_num_threads(args["threads"])
from emkd_speed import build, load_beauty, train_step, width_overrides
from seqrec.data.batch import span_batch
cfg, data, examples, batches = load_beauty(args["config"], width_overrides(args["d"], args["threads"]) +
                                           args["overrides"])
widest = max(batches[: args["among"]], key=lambda idx: int(examples.lengths[idx].max()))
model, opt = build(cfg, data, args["path"] != "dense")
def peak_mb():
    # VmHWM: this process's own peak RSS. (ru_maxrss of a child starts at its parent's peak on Linux: it is kept
    # across fork and exec, so it reads at least the parent's size; recorded too, for comparison.)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {"peak_rss_before_steps_mb": peak_mb(), "step_cpu_seconds": []}
for step in range(args["steps"]):
    batch = span_batch(data.items, examples, widest)
    dt, terms = train_step(model, opt, batch, seed=cfg.train.seed)
    out["step_cpu_seconds"].append(round(dt, 2))
out.update(width=int(batch.items.shape[1]), loss=terms["loss"], peak_rss_mb=peak_mb(),
           ru_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(out))
"""

MEMORY_SETTINGS = {              # name: (path, extra overrides)
    "dense": ("dense", []),
    "fused": ("fused", []),
    "fused, recompute_encoders": ("fused", ["model.recompute_encoders=true"]),
}


def peak_memory(args) -> dict:
    """Peak RSS of fresh processes: per width (64 and 256) each setting after --memory-steps steps on the widest of
    the epoch's first 8 batches."""
    runs = {}
    for d in (64, 256):
        for name, (path, extra) in MEMORY_SETTINGS.items():
            spec = {"bench_dir": str(ROOT / "benchmarks"), "config": args.config, "d": d, "path": path,
                    "overrides": extra, "threads": args.threads, "steps": args.memory_steps, "among": 8}
            p = subprocess.run([sys.executable, "-c", MEMORY_CHILD, json.dumps(spec)], capture_output=True,
                               text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            if p.returncode != 0:
                raise RuntimeError(f"memory child {d} {name} failed:\n{p.stderr[-3000:]}")
            runs[f"d{d} {name}"] = json.loads(p.stdout.strip().splitlines()[-1])
            print(f"d {d} {name}: {runs[f'd{d} {name}']}", flush=True)
    return runs


def gemm_gflops(repeats: int = 5) -> float:
    """float32 matrix-product rate of this CPU now (one thread): [4096, 256] x [256, 1024], best of repeats."""
    a, b = torch.randn(4096, 256), torch.randn(256, 1024)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(10):
            a @ b
        best = min(best, (time.process_time() - t0) / 10)
    return 2 * 4096 * 256 * 1024 / best / 1e9


def profile_steps(cfg, data, examples, batches, top: int = 15) -> dict:
    """One fused step under torch.profiler (operators by self CPU time, a share of the profiled total: the
    profiler's clock is wall time, which the machine's load stretches, so shares rather than seconds), and the
    matrix-product FLOPs of the same step on the dense path (there every product is an mm / addmm / bmm, which the
    profiler counts; the fused path does the same products, partly as addmm_ which it does not count)."""
    from torch.profiler import ProfilerActivity, profile
    batch = span_batch(data.items, examples, batches[0])
    result = {"batch_width": int(batch.items.shape[1])}
    for name, fused in (("dense", False), ("fused", True)):
        model, opt = build(cfg, data, fused)
        train_step(model, opt, batch, seed=cfg.train.seed)           # warm-up (Adam state, allocator)
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            cpu, _ = train_step(model, opt, batch, seed=cfg.train.seed + 1)
        events = prof.key_averages()
        if not fused:
            result["matmul_gflop_per_step"] = round(sum(e.flops for e in events) / 1e9, 1)
            continue
        total = sum(e.self_cpu_time_total for e in events)
        rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
        result["fused_step_cpu_seconds_profiled"] = round(cpu, 2)
        result["fused_top_ops"] = [{"op": e.key, "calls": e.count,
                                    "self_share": round(e.self_cpu_time_total / total, 3)} for e in rows]
    return result


def run_fused_comparison(args) -> None:
    t_start = time.perf_counter()
    load_start = list(os.getloadavg())
    memory = peak_memory(args) if args.memory_steps > 0 else {}      # first, while this process is small
    cfg, data, examples, batches = load_beauty(args.config, width_overrides(args.d, args.threads))
    speed = fused_vs_dense_speed(args, cfg, data, examples, batches)
    print(f"dense {speed['cpu_seconds_per_step']['dense']} s, fused {speed['cpu_seconds_per_step']['fused']} s "
          f"per step: {speed['speedup_fused_over_dense']}x", flush=True)
    rate_before = gemm_gflops()
    prof = profile_steps(cfg, data, examples, batches)
    rate_after = gemm_gflops()
    rate = max(rate_before, rate_after)
    floor = prof["matmul_gflop_per_step"] / rate
    print(f"matmul {prof['matmul_gflop_per_step']} GFLOP/step at {rate:.0f} GFLOP/s = {floor:.2f} s", flush=True)
    summary = {
        "d": args.d, "batches_timed": args.batches,
        "dense_cpu_seconds_per_step": speed["cpu_seconds_per_step"]["dense"],
        "fused_cpu_seconds_per_step": speed["cpu_seconds_per_step"]["fused"],
        "speedup_fused_over_dense": speed["speedup_fused_over_dense"],
        "fused_item_losses_cpu_seconds": speed["item_losses_cpu_seconds_per_step"]["fused (measured)"],
        "dense_item_losses_cpu_seconds": speed["item_losses_cpu_seconds_per_step"]["dense (step minus the rest)"],
        "speedup_item_losses": speed["speedup_item_losses"],
        "rest_of_step_cpu_seconds": speed["rest_of_step_cpu_seconds"],
        "matmul_gflop_per_step": prof["matmul_gflop_per_step"], "gemm_gflops_measured": round(rate, 1),
        "matmul_floor_cpu_seconds": round(floor, 2),
        **{f"peak_rss_mb {k}": round(v["peak_rss_mb"]) for k, v in memory.items()},
    }
    result = {
        "kind": "speed", "name": "emkd_speed_fused_cpu",
        "description": ("EMKD training step on Beauty (configs/emkd/beauty.yaml: N 3, M 8, max_len 15, batch 256), "
                        "members' CE + KD fused in row chunks (seqrec.losses.ensemble_item_losses) vs the dense "
                        "path: CPU time per step side by side (interleaved, same weights, batches and masks), peak "
                        "RSS per path in fresh processes at d 64 and d 256, a profile of the fused step and its "
                        "matrix-product FLOPs against the measured GEMM rate."),
        "summary": summary, "speed": speed, "memory": memory, "profile": prof,
        "gemm_gflops": {"before_profile": round(rate_before, 1), "after_profile": round(rate_after, 1)},
        "load_average_at_start": load_start,
        **provenance(torch.get_num_threads(), "cpu"),
        "config": cfg.to_dict(),
        "protocol": {"what": "training step CPU time (process time: forward + loss, backward, Adam step), no "
                             "evaluation", "batches": "the first batches of epoch 1 (seeded, length-bucketed)",
                     "warmup": args.warmup, "order": "dense and fused interleaved per batch, alternating first",
                     "memory": f"fresh process per setting (started before this one loads anything), "
                               f"{args.memory_steps} steps on the widest of the first 8 batches, peak RSS = VmHWM "
                               "(the child's ru_maxrss includes its parent's peak on Linux)"},
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks/results" / "emkd_speed_fused_cpu.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")



# --- --against REV: this tree's step vs an earlier commit's, interleaved in two worker processes -------------------

AGAINST_WORKER = r"""
import json, sys, time
import torch
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
from seqrec.config import load_config
from seqrec.data.batch import build_examples, epoch_batches, span_batch
from seqrec.data.dataset import leave_one_out
from seqrec.data.loading import load_dataset
from seqrec.models import DatasetInfo, build_model
cfg = load_config(spec["config"], spec["overrides"])
data = load_dataset(cfg.data)
split = leave_one_out(data, cfg.data.short_users)
torch.manual_seed(cfg.train.seed)
model = build_model(cfg.model, DatasetInfo(data.n_items, data.attributes))
examples = build_examples(split, cfg.train.examples, model.span_len, cfg.train.window_step, min_len=1)
batches = epoch_batches(examples.lengths, cfg.train.batch_size, cfg.train.seed, 1, cfg.train.bucket,
                        cfg.train.bucket_factor)
n_epoch = len(batches)
if spec["spread"]:        # evenly spaced over the epoch: its mix of (bucketed) batch widths
    batches = [batches[int(round(i * (n_epoch - 1) / max(spec["n_batches"] - 1, 1)))]
               for i in range(spec["n_batches"])]
else:
    batches = batches[: spec["n_batches"]]
opt = model.configure_optimizers(cfg.train)[0]
model.train()
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
print(json.dumps({"ready": True, "batches": [[int(i) for i in idx] for idx in batches], "batches_per_epoch": n_epoch}),
      flush=True)
for line in sys.stdin:
    i = int(line)
    if i < 0:
        break
    batch = span_batch(data.items, examples, batches[i])
    torch.manual_seed(cfg.train.seed + i)
    t0 = time.process_time()
    # the trainer's step: autocast (bf16) around forward + loss only, weights and Adam in float32 (torch.autocast
    # itself, not seqrec.train.precision: the same worker runs old trees that predate it)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=spec.get("precision") == "bf16"):
        out = model.loss(batch)
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    opt.step()
    dt = time.process_time() - t0
    print(json.dumps({"cpu_s": dt, "width": int(batch.items.shape[1]),
                      "terms": {k: float(v.detach()) for k, v in out.items()}}), flush=True)
print(json.dumps({"peak_rss_mb": peak_mb()}), flush=True)
"""


class StepWorker:
    """A worker process running AGAINST_WORKER on the seqrec source tree `src` (one line per request/answer)."""

    def __init__(self, name: str, src: Path, spec: dict):
        self.name = name
        env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(spec["threads"])}
        self.proc = subprocess.Popen([sys.executable, "-c", AGAINST_WORKER, json.dumps(spec)], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(ROOT))

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} ended early (exit code {self.proc.wait()})")
        return json.loads(line)

    def ask(self, i: int) -> dict:
        self.proc.stdin.write(f"{i}\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> dict:
        last = self.ask(-1)
        self.proc.wait()
        return last


def extract_tree(rev: str, dest: Path) -> str:
    """src/ and configs/ of commit `rev` into dest (git archive: the repository and its work tree untouched);
    returns the full commit hash."""
    full = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True,
                          text=True)
    if full.returncode != 0:
        raise SystemExit(f"--against: {rev!r} is not a commit of this repository")
    archive = subprocess.run(["git", "archive", full.stdout.strip(), "src", "configs"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return full.stdout.strip()


def run_against(args) -> None:
    import tempfile
    from seqrec.config import ConfigError
    from seqrec.train.precision import resolve_precision
    for precision in args.precisions:              # fails early, e.g. bf16 on a CPU without native bfloat16
        try:
            ok = precision in ("fp32", "bf16") and resolve_precision(precision, torch.device("cpu")) == precision
        except ConfigError as e:
            raise SystemExit(f"--precisions: {e}")
        if not ok:
            raise SystemExit(f"--precisions: {precision!r} is not a CPU precision (fp32, or bf16 on a CPU with native "
                             "bfloat16)")
    t_start = time.perf_counter()
    load_start = list(os.getloadavg())
    overrides = width_overrides(args.d, args.threads)
    n = args.warmup + args.batches
    with tempfile.TemporaryDirectory(prefix="emkd_against_") as tmp:
        old_commit = extract_tree(args.against, Path(tmp))
        common = {"overrides": overrides, "threads": args.threads, "n_batches": n, "spread": args.spread}
        workers = {"then": StepWorker("then", Path(tmp) / "src",
                                      {**common, "config": str(Path(tmp) / "configs/emkd/beauty.yaml")})}
        for precision in args.precisions:         # "now" (fp32), and "now bf16" etc. beside it
            name = "now" if precision == "fp32" else f"now {precision}"
            workers[name] = StepWorker(name, ROOT / "src", {**common, "config": args.config, "precision": precision})
        now = list(workers)[1]                    # the first of this code's workers
        ready = {k: w.read() for k, w in workers.items()}
        if any(r["batches"] != ready["then"]["batches"] for r in ready.values()):
            raise SystemExit("--against: the two versions form different batches; the comparison would not be "
                             "side by side")
        steps = {k: [] for k in workers}
        for i in range(n):
            names = list(workers)
            order = names[i % len(names):] + names[:i % len(names)]     # rotate which goes first
            for k in order:
                steps[k].append(workers[k].ask(i))
            print(f"batch {i} (width {steps['then'][-1]['width']}): " + ", ".join(
                f"{k} {steps[k][-1]['cpu_s']:.2f} s" for k in workers) + (" (warm-up)" if i < args.warmup else ""),
                flush=True)
        peaks = {k: w.close()["peak_rss_mb"] for k, w in workers.items()}
    timed = {k: [s["cpu_s"] for s in v[args.warmup:]] for k, v in steps.items()}
    mean = {k: float(np.mean(v)) for k, v in timed.items()}
    ratio = {k: mean["then"] / mean[k] for k in workers if k != "then"}
    print(f"then {mean['then']:.2f} s per step; " + ", ".join(f"{k} {mean[k]:.2f} s ({ratio[k]:.2f}x)" for k in ratio),
          flush=True)
    cfg = load_config(args.config, overrides)
    result = {
        "kind": "speed", "name": f"emkd_speed_vs_{args.against}_cpu",
        "description": (f"EMKD training step on Beauty (configs/emkd/beauty.yaml: N 3, M 8, max_len 15, batch 256; "
                        f"d {args.d}, FFN {4 * args.d}): this commit's code against commit {old_commit[:7]}'s, each "
                        "in its own worker process (this code once per precision in precisions_now), the same "
                        "batches and per-step seeds, steps interleaved (rotating which goes first), CPU time of "
                        "forward + loss, backward and Adam."),
        "summary": {"d": args.d, "against_commit": old_commit, "batches_timed": args.batches,
                    "cpu_seconds_per_step_then": round(mean["then"], 3),
                    **{f"cpu_seconds_per_step_{k.replace(' ', '_')}": round(mean[k], 3) for k in ratio},
                    **{("speedup" if k == "now" else f"speedup_{k.replace(' ', '_')}"): round(v, 2)
                       for k, v in ratio.items()},
                    **{f"peak_rss_mb_{k.replace(' ', '_')}": round(v) for k, v in peaks.items()}},
        "precisions_now": args.precisions,
        "step_cpu_seconds": {k: [round(x, 3) for x in v] for k, v in timed.items()},
        "batch_widths": [s["width"] for s in steps[now][args.warmup:]],
        "batches_per_epoch": ready[now]["batches_per_epoch"],
        "loss_terms": {k: [s["terms"] for s in v] for k, v in steps.items()},
        "load_average_at_start": load_start,
        **provenance(args.threads, "cpu"),
        "config": cfg.to_dict(),
        "protocol": {"what": "training step CPU time (process time: forward + loss, backward, Adam step), no "
                             "evaluation", "batches": "the first batches of epoch 1 (seeded, length-bucketed), "
                             "identical in both versions (checked)", "warmup": args.warmup,
                     "which_batches": ("evenly spaced over epoch 1 (its mix of widths)" if args.spread else
                                       "the first of epoch 1"),
                     "order": "the workers interleaved per batch, rotating which goes first",
                     "precision": ("then: fp32; now: each of precisions_now, autocast around forward + loss as "
                                   "the trainer's train.precision (weights and Adam float32)"),
                     "memory": "each worker's VmHWM at the end (data, model, optimiser state and the steps)"},
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks/results" / f"emkd_speed_vs_{args.against}_cpu.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs/emkd/beauty.yaml"))
    ap.add_argument("--batches", type=int, default=5, help="timed batches per mode (after --warmup)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full", action="store_true", help="30 timed batches per mode (for a GPU)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--fused", action="store_true", help="fused vs dense item losses (see above), CPU")
    ap.add_argument("--d", type=int, default=64, help="--fused / --against: model width of the speed comparison (FFN 4d)")
    ap.add_argument("--against", metavar="REV", help="this code's step vs commit REV's (see above), CPU")
    ap.add_argument("--precisions", default="fp32", type=lambda v: v.split(","),
                    help="--against: this code's step in each of these train.precision formats beside the old "
                         "commit's fp32 step, e.g. fp32,bf16 (bf16: a CPU with native bfloat16)")
    ap.add_argument("--spread", action="store_true",
                    help="--against: time batches evenly spaced over the epoch (its mix of widths), not its first")
    ap.add_argument("--memory-steps", type=int, default=2,
                    help="--fused: steps per peak-memory process (0: no memory measurement)")
    args = ap.parse_args()
    if args.full:
        args.batches = 30
    torch.set_num_threads(args.threads)
    if args.against:
        run_against(args)
        return
    if args.fused:
        run_fused_comparison(args)
        return
    device = torch.device(args.device)
    cfg = load_config(args.config, [f"train.threads={args.threads}"])
    data = load_dataset(cfg.data)
    split = leave_one_out(data, cfg.data.short_users)
    model_probe = build_model(cfg.model, DatasetInfo(data.n_items, data.attributes))
    examples = build_examples(split, cfg.train.examples, model_probe.span_len, cfg.train.window_step, min_len=1)
    del model_probe
    all_batches = epoch_batches(examples.lengths, cfg.train.batch_size, cfg.train.seed, 1, cfg.train.bucket,
                                cfg.train.bucket_factor)
    n_batches = len(all_batches)
    timed = all_batches[: args.warmup + args.batches]     # the epoch's first batches (random widths, bucketed)
    t_start = time.perf_counter()
    modes = {}
    for mode in ("masked", "all"):
        modes[mode] = time_mode(cfg, data, examples, timed, mode, device, args.warmup)
        modes[mode]["epoch_seconds_extrapolated"] = round(modes[mode]["seconds_per_batch"] * n_batches, 1)
        print(f"logits_at={mode}: {modes[mode]['seconds_per_batch']:.2f} s/batch -> "
              f"{modes[mode]['epoch_seconds_extrapolated']:.0f} s/epoch ({n_batches} batches)", flush=True)
    ratio = modes["all"]["seconds_per_batch"] / modes["masked"]["seconds_per_batch"]
    print(f"all / masked = {ratio:.2f}x")
    mean_width = float(np.mean(np.minimum(examples.lengths, cfg.model.max_len)))
    result = {
        "kind": "speed",
        "description": ("One EMKD training epoch on Beauty with the official settings (N 3, M 8, d 256, max_len 15, "
                        "batch 256), extrapolated from timed batches: item logits only at masked positions "
                        "(logits_at=masked) vs at every position as the official code (logits_at=all)."),
        "summary": {
            "train_windows": int(len(examples)), "batches_per_epoch": n_batches,
            "timed_batches_per_mode": args.batches,
            "masked_seconds_per_batch": round(modes["masked"]["seconds_per_batch"], 3),
            "all_seconds_per_batch": round(modes["all"]["seconds_per_batch"], 3),
            "masked_epoch_seconds": modes["masked"]["epoch_seconds_extrapolated"],
            "all_epoch_seconds": modes["all"]["epoch_seconds_extrapolated"],
            "speedup_all_over_masked": round(ratio, 3),
        },
        "modes": modes,
        "mean_window_length": round(mean_width, 2),
        **provenance(torch.get_num_threads(), device),
        "config": cfg.to_dict(),
        "protocol": {"what": "training step time (forward + backward + Adam step), no evaluation",
                     "batches": "the first batches of epoch 1 (seeded, length-bucketed)", "warmup": args.warmup},
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    out = Path(args.out) if args.out else ROOT / "benchmarks/results" / f"emkd_speed_beauty_{device.type}.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
