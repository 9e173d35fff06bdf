"""torch.compile on the CPU: compile time and steady-state CPU seconds per training step, against eager.

    python benchmarks/compile_speed.py                 # SASRec + BERT4Rec on Beauty, 1 thread, ~15 min
    python benchmarks/compile_speed.py --quick         # smoke test: tiny synthetic data, a few steps (~2 min)
    python benchmarks/compile_speed.py --models sasrec --steps 60 --rounds 3

Per model (configs/sasrec/beauty.yaml: 'prefix' examples, so a batch has exactly batch_size targets;
configs/bert4rec/beauty.yaml: cloze masking, so the number of masked targets K differs from batch to batch) one
fixed list of training batches is cut from epoch 1 (every n-th batch, so the list has the epoch's mix of widths;
the epoch's last, smaller batch is left out; widths rounded to multiples of 8, train.pad_multiple=8, for every
variant alike). Variants, each a fresh Trainer with the same initial weights, train.precision=fp32 (what 'auto'
gives on a CPU) unless --precision, one thread:

  eager          LossModule as is
  auto_dynamic   torch.compile(LossModule)                 what the trainer does (train.compile=true)
  static         torch.compile(LossModule, dynamic=False)  one graph per distinct input shape
  dynamic        torch.compile(LossModule, dynamic=True)   one graph with symbolic sizes from the start

Phase 1 (compile): each variant runs the list once; per step the CPU time (time.process_time) and wall time, and the
number of graphs its compile backend was asked for (a counting wrapper around inductor: one call per dynamo
graph = per (re)compilation). compile_overhead = phase-1 CPU time - steady-state CPU time of the same steps.
The inductor cache is a fresh temporary folder, so compile times are cold-cache times.
Phase 2 (steady state): --rounds rounds over the same list, the variants interleaved in alternating order
(a b c d, d c b a, ...) so the machine's load drift hits all alike; the per-variant figure is the median over rounds
of CPU seconds per step (each round's minimum is also kept).
Phase 3 (why): the inductor output code of each compiled variant is captured (the `output_code` log artifact) and
summarised (extern matmuls, oneDNN ops, generated C++ kernels, vectorised kernels, fallback aten ops, symbolic
size arguments), and a torch.profiler table of a few steady-state steps per variant is kept (top ops by self CPU).

Writes benchmarks/results/compile_speed_cpu.json (--quick: benchmarks/scratch/compile_speed_quick.json) and the
captured output code under benchmarks/scratch/compile_speed_code/.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

# cold-cache compile times: a fresh inductor cache for this process (set before torch is imported)
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor_cs_"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
# no FX-graph / AOT-autograd cache: every variant lowers its own graphs (generated C++ kernels whose source is
# identical to one compiled earlier in this process are still reused from memory)
os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")
os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import provenance  # noqa: E402

from seqrec.config import load_config  # noqa: E402
from seqrec.data.loading import load_dataset  # noqa: E402
from seqrec.train.trainer import LossModule, Trainer  # noqa: E402
from seqrec.utils import atomic_write_json  # noqa: E402

CONFIGS = {"sasrec": "configs/sasrec/beauty.yaml", "bert4rec": "configs/bert4rec/beauty.yaml"}
# name -> (torch.compile keyword arguments or None for eager, inductor config patches, model overrides)
NO_DROPOUT = ["model.dropout=0.0", "model.attn_dropout=0.0"]
VARIANT_SPECS = {
    "eager": (None, {}, []),
    "auto_dynamic": ({}, {}, []),
    "static": ({"dynamic": False}, {}, []),
    "dynamic": ({"dynamic": True}, {}, []),
    # the cause, checked: the same compile with inductor lowering rand to aten's RNG instead of generated code
    "auto_dynamic_fallback_random": ({}, {"fallback_random": True}, []),
    # and without dropout at all (a different model: compare only with eager_no_dropout)
    "eager_no_dropout": (None, {}, NO_DROPOUT),
    "auto_dynamic_no_dropout": ({}, {}, NO_DROPOUT),
}
VARIANTS = tuple(VARIANT_SPECS)
QUICK_DATA = ["data.dataset=synthetic", "data.synthetic_users=400", "data.synthetic_items=300"]


class CountingBackend:
    """Inductor, counting the graphs it is asked to compile and the seconds spent in it (one object per variant:
    dynamo guards on the backend, so variants sharing LossModule.forward do not share compiled graphs)."""

    def __init__(self, name: str, patches: dict):
        self.name, self.graphs, self.shapes, self.patches = name, 0, [], patches

    def __call__(self, gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx
        self.graphs += 1
        self.shapes.append([tuple(str(s) for s in x.shape) for x in example_inputs
                            if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.dtype == torch.int64][:3])
        # config_patches reach the forward and the backward compiler alike
        return compile_fx(gm, example_inputs, config_patches=dict(self.patches))


class CodeCapture(logging.Handler):
    """Collects the inductor output code (TORCH_LOGS=output_code) of the graphs compiled while active."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if "def call(" in msg or "async_compile" in msg:
            self.texts.append(msg)


def summarize_code(texts: list[str]) -> dict:
    """What the generated code of a variant is made of (forward and backward graphs together)."""
    code = "\n".join(texts)
    calls = "\n".join(re.findall(r"def call\(.*?(?=\ndef |\nclass |\Z)", code, flags=re.S))
    kernels = re.findall(r"cpp_fused_\w+ = async_compile\.cpp_pybinding\(.*?'''\)", code, flags=re.S)
    return {
        "output_code_modules": len(texts),
        "extern_mm_calls": len(re.findall(r"extern_kernels\.(?:mm|addmm|bmm|baddbmm)\(", calls)),
        "mkldnn_calls": len(re.findall(r"torch\.ops\.mkldnn\.|mkldnn_", calls)),
        "aten_fallback_calls": len(re.findall(r"torch\.ops\.aten\.\w+", calls)),
        "sdpa_calls": len(re.findall(r"scaled_dot_product", calls)),
        "cpp_kernels": len(kernels),
        "cpp_kernels_vectorized": sum("at::vec::Vectorized" in k for k in kernels),
        "cpp_kernels_with_per_element_philox": sum("normalized_rand_cpu" in k for k in kernels),
        "aten_rng_calls": len(re.findall(r"aten\.(?:rand|bernoulli|uniform)\w*|torch\.ops\.aten\.(?:rand|bernoulli)", calls)),
        "cpp_kernel_launches": len(re.findall(r"\bcpp_fused_\w+\(", calls)),
        "symbolic_size_args": len(set(re.findall(r"\bs\d+\b|\bks\d+\b", calls))),
        "as_strided_or_reinterpret": len(re.findall(r"reinterpret_tensor|as_strided", calls)),
    }


def build_variant(name: str, trainer: Trainer) -> CountingBackend | None:
    kw, patches, _ = VARIANT_SPECS[name]
    if kw is None:
        return None
    backend = CountingBackend(name, patches)
    compiled = torch.compile(LossModule(trainer.model), backend=backend, **kw)
    trainer.loss_module = StaticShapes(compiled) if kw.get("dynamic") is False else compiled
    return backend


class StaticShapes(torch.nn.Module):
    """Calls the compiled module with dynamo's automatic dynamic shapes switched off as well: in one process with the
    other variants (which share LossModule.forward's code cache and its recorded dynamic dimensions), dynamic=False
    alone still gave SASRec a graph with a symbolic width (3 graphs for 6 widths, seen in the generated code)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, batch):
        with torch._dynamo.config.patch(automatic_dynamic_shapes=False, assume_static_by_default=True):
            return self.inner(batch)


def profile_steps(trainer: Trainer, batches: list, n: int) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches[:n]:
            trainer.training_step(b)
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:18]:
        rows.append({"op": e.key[:90], "calls": e.count, "self_cpu_ms_per_step": round(e.self_cpu_time_total / 1e3 / n, 3)})
    return rows


def run_model(model: str, args, extra: list[str]) -> dict:
    overrides = ["train.threads=1", f"train.precision={args.precision}", "train.compile=false",
                 "train.pad_multiple=8", "train.prefetch=0", *extra]
    cfg = load_config(CONFIGS[model], overrides)
    data = load_dataset(cfg.data)
    ref = Trainer(cfg, None, quiet=True, data=data)
    all_idx = ref._epoch_batches(1)
    full = [i for i in all_idx if len(i) == cfg.train.batch_size] or all_idx
    stride = max(1, len(full) // args.steps)
    chosen = full[::stride][:args.steps]
    batches = list(ref.loader.epoch(1, chosen))
    shapes = [(int(b.items.shape[1]), int(b.target_index.shape[0])) for b in batches]
    del ref
    print(f"[{model}] {len(batches)} batches, widths {sorted(set(w for w, _ in shapes))}, "
          f"distinct K {len(set(k for _, k in shapes))}, distinct shapes {len(set(shapes))}", flush=True)

    variants = [v for v in VARIANTS if v in args.variants]
    trainers, backends, phase1, code = {}, {}, {}, {}
    code_dir = HERE / "scratch" / "compile_speed_code"
    code_dir.mkdir(parents=True, exist_ok=True)
    for v in variants:
        vcfg = load_config(CONFIGS[model], overrides + VARIANT_SPECS[v][2]) if VARIANT_SPECS[v][2] else cfg
        torch.manual_seed(cfg.train.seed)
        t = Trainer(vcfg, None, quiet=True, data=data)
        t.model.train()
        backends[v] = build_variant(v, t)
        trainers[v] = t
        capture = CodeCapture()
        if backends[v]:
            torch._logging.set_logs(output_code=True)
            for lg in ("torch._inductor.graph", "torch._inductor", "torch"):
                logging.getLogger(lg).addHandler(capture)
        steps, graphs_at = [], []
        c_all, w_all = time.process_time(), time.perf_counter()
        for i, b in enumerate(batches):
            c0, w0 = time.process_time(), time.perf_counter()
            g0 = backends[v].graphs if backends[v] else 0
            t.training_step(b)
            steps.append((time.process_time() - c0, time.perf_counter() - w0))
            if backends[v] and backends[v].graphs != g0:
                graphs_at.append(i)
        phase1[v] = {"cpu_s": time.process_time() - c_all, "wall_s": time.perf_counter() - w_all,
                     "step_cpu_s": [round(c, 4) for c, _ in steps],
                     "graphs_compiled": backends[v].graphs if backends[v] else 0,
                     "steps_that_compiled": graphs_at}
        if backends[v]:
            torch._logging.set_logs(output_code=False)
            for lg in ("torch._inductor.graph", "torch._inductor", "torch"):
                logging.getLogger(lg).removeHandler(capture)
            code[v] = summarize_code(capture.texts)
            (code_dir / f"{model}_{v}.py").write_text("\n\n# " + "=" * 100 + "\n\n".join(capture.texts))
        print(f"[{model}] phase 1 {v}: {phase1[v]['cpu_s']:.1f} s CPU, {phase1[v]['graphs_compiled']} graphs at steps "
              f"{graphs_at[:12]}", flush=True)

    # phase 2: steady state, interleaved
    rounds: dict[str, list[float]] = {v: [] for v in variants}
    rounds_wall: dict[str, list[float]] = {v: [] for v in variants}
    step_min: dict[str, np.ndarray] = {v: np.full(len(batches), np.inf) for v in variants}
    graphs_before = {v: backends[v].graphs if backends[v] else 0 for v in variants}
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for v in order:
            t = trainers[v]
            c_all, w_all = time.process_time(), time.perf_counter()
            for i, b in enumerate(batches):
                c0 = time.process_time()
                t.training_step(b)
                step_min[v][i] = min(step_min[v][i], time.process_time() - c0)
            rounds[v].append((time.process_time() - c_all) / len(batches))
            rounds_wall[v].append((time.perf_counter() - w_all) / len(batches))
        print(f"[{model}] round {r + 1}: " + " ".join(f"{v} {rounds[v][-1] * 1e3:.1f}ms" for v in variants),
              flush=True)
    steady = {v: statistics.median(rounds[v]) for v in variants}

    # per-width steady-state (best of rounds per step, averaged within a width)
    by_width: dict[str, dict[str, float]] = {}
    for v in variants:
        acc: dict[int, list[float]] = {}
        for (w, _), s in zip(shapes, step_min[v]):
            acc.setdefault(w, []).append(float(s))
        by_width[v] = {str(w): round(float(np.mean(s)) * 1e3, 2) for w, s in sorted(acc.items())}

    profiles = {v: profile_steps(trainers[v], batches, args.profile_steps) for v in variants} if args.profile_steps else {}

    out = {"config": cfg.to_dict(), "batches": {"n": len(batches), "stride_in_epoch": stride,
                                                "epoch_batches": len(all_idx),
                                                "widths": sorted(set(w for w, _ in shapes)),
                                                "distinct_K": len(set(k for _, k in shapes)),
                                                "distinct_shapes": len(set(shapes)),
                                                "shapes_width_K": shapes},
           "variants": {}}
    for v in variants:
        eager = steady.get("eager_no_dropout" if v.endswith("no_dropout") else "eager")
        steady_cpu = steady[v] * len(batches)
        out["variants"][v] = {
            "steady_cpu_s_per_step_median": round(steady[v], 5),
            "steady_cpu_s_per_step_rounds": [round(x, 5) for x in rounds[v]],
            "steady_wall_s_per_step_rounds": [round(x, 5) for x in rounds_wall[v]],
            "steady_cpu_s_per_step_best_steps": round(float(np.mean(step_min[v])), 5),
            "vs_eager_cpu": round(steady[v] / eager, 3) if eager else None,
            "steady_cpu_ms_per_step_by_width_best": by_width[v],
            "phase1_cpu_s": round(phase1[v]["cpu_s"], 2), "phase1_wall_s": round(phase1[v]["wall_s"], 2),
            "compile_overhead_cpu_s": round(phase1[v]["cpu_s"] - steady_cpu, 2),
            "graphs_compiled": phase1[v]["graphs_compiled"],
            "graphs_compiled_in_steady_state": (backends[v].graphs if backends[v] else 0) - graphs_before[v],
            "steps_that_compiled": phase1[v]["steps_that_compiled"],
            "phase1_step_cpu_s": phase1[v]["step_cpu_s"],
            "break_even_steps": (round((phase1[v]["cpu_s"] - steady_cpu) / (eager - steady[v]))
                                 if eager and steady[v] < eager and v != "eager" else None),
            "code": code.get(v), "profile_top_self_cpu": profiles.get(v),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sasrec,bert4rec")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--steps", type=int, default=None, help="batches in the fixed list (default 60 sasrec / 16 bert4rec)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--profile-steps", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="tiny synthetic data, few steps")
    ap.add_argument("--out", help="result file (default benchmarks/results/compile_speed_cpu.json)")
    args = ap.parse_args()
    args.variants = args.variants.split(",")
    torch.set_num_threads(1)
    # dynamic=False compiles one graph per shape: let it (the default limit, 8, would silently fall back to eager)
    torch._dynamo.config.recompile_limit = 512
    torch._dynamo.config.accumulated_recompile_limit = 4096
    extra = QUICK_DATA if args.quick else []
    if args.quick:
        args.rounds, args.profile_steps = min(args.rounds, 2), min(args.profile_steps, 2)
    results = {}
    t0 = time.perf_counter()
    for m in args.models.split(","):
        steps = args.steps or (4 if args.quick else {"sasrec": 60, "bert4rec": 16}[m])
        ns = argparse.Namespace(**{**vars(args), "steps": steps})
        try:
            results[m] = run_model(m, ns, extra)
        except Exception as e:  # noqa: BLE001 -- one model's failure is recorded, the other still runs
            import traceback
            results[m] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
            print(f"[{m}] failed: {e}", flush=True)
    summary = {m: {v: {"ms_per_step": round(r["variants"][v]["steady_cpu_s_per_step_median"] * 1e3, 2),
                       "vs_eager": r["variants"][v]["vs_eager_cpu"],
                       "graphs": r["variants"][v]["graphs_compiled"],
                       "compile_overhead_cpu_s": r["variants"][v]["compile_overhead_cpu_s"]}
                   for v in r["variants"]} for m, r in results.items() if "variants" in r}
    doc = {"benchmark": "compile_speed", **provenance(1, "cpu"), "precision": args.precision,
           "quick": args.quick, "rounds": args.rounds, "inductor_cache": "fresh temporary folder (cold)",
           "torch_compile_recompile_limit_here": 512, "total_wall_s": round(time.perf_counter() - t0, 1),
           "summary": summary, "models": results}
    dst = Path(args.out) if args.out else HERE / ("scratch/compile_speed_quick.json" if args.quick
                                                   else "results/compile_speed_cpu.json")
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(dst, doc)
    for m, s in summary.items():
        print(m, " | ".join(f"{v}: {x['ms_per_step']} ms ({x['vs_eager']}x eager, {x['graphs']} graphs, "
                            f"+{x['compile_overhead_cpu_s']} s)" for v, x in s.items()))
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
