"""Which training loss reaches the best test NDCG@10 per second of training (issue 16): SASRec on Beauty, protocol
`history`, full CE versus the sampled losses, from the accuracy runs of benchmarks/baselines_beauty.py and a
side-by-side CPU timing of the training steps of each loss in this run.

    python benchmarks/loss_quality_per_second.py            # 3 warm-up steps, then a whole epoch (~3 min, 8 losses)
    python benchmarks/loss_quality_per_second.py --steps 100    # 100 timed steps spread over the epoch
    python benchmarks/loss_quality_per_second.py --quick    # 1 warm-up + 2 timed steps: a smoke test
    python benchmarks/loss_quality_per_second.py --results 'benchmarks/results/sasrec_beauty_history_*.json'

Accuracy: every result file of the glob (default benchmarks/results/sasrec_beauty_history_*.json; files that are not
trainer results, such as this benchmark's own output, are skipped) is grouped by its loss setting (model.loss; for
the sampled losses also negative_sampler, negatives (not for in_batch) and negatives_per; gbce's t and shift). Files whose config
differs in anything else that changes what is trained (the trainer's resumable keys such as patience or
max_epochs, and the seed, do not count) form their own group, labelled with the differing keys. In a group the
seeds are averaged (test NDCG@10 / HR@10, best epoch); of several files of one seed (e.g. the same run continued
with a longer patience) the one that ran the most epochs is used and the others are listed as superseded.

Time: the result files' wall times were measured at different times under different load and are not compared.
Instead this run builds, for every group, the trainer of that group's config (seqrec.train.trainer.Trainer: its
model, optimiser, schedules and batch loader, on one shared copy of the data) with one common seed (--seed), so
that settings with the same batch size and examples train on the same sequence of batches: --warmup untimed
steps on the first batches of epoch 2, then every batch of epoch 1 (default; --steps N: N of them spread evenly
over the epoch). It times Trainer.training_step (forward + loss, backward, optimiser step) with time.process_time,
one thread, round-robin over the settings, the order rotated at every step. Epoch CPU seconds = mean step x
batches per epoch (the measured epoch when every batch is timed); CPU seconds to the best epoch = mean best epoch
x epoch seconds. The mean, not the median step: the length-bucketed batches' widths vary (prefix examples: most
are short), so a step's time is skewed by the batch and not just by noise, and the median step x batches
underestimates an epoch (measured: CE median 50 ms, mean 68 ms); the median-based figure is recorded too.
Evaluation (the same full-ranking validation after every epoch for every loss) and batch building (the same
batches for every loss) are excluded.

Writes benchmarks/results/sasrec_beauty_history_loss_per_second_cpu.json (--quick:
benchmarks/scratch/sasrec_beauty_history_loss_per_second_quick_cpu.json, not a result): per setting the source
files and their commits, test NDCG@10 / HR@10 (mean over seeds), best epoch, step CPU ms (mean, median, each),
epoch CPU seconds, CPU seconds to the best epoch, test NDCG@10 per CPU hour, test NDCG@10 relative to full CE and
the relative logits cost (items scored per target row / n_items: ce 1, sampled (negatives + 1) / n_items, in_batch
targets per batch / n_items); and a summary: the setting with the best test NDCG@10 per CPU second, and the fastest
setting (least CPU to its best epoch) whose test NDCG@10 is within 5% of CE's, overall and among the settings run
on at least as many seeds as CE (one seed can land in the band by luck).
"""
from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import provenance, write_result  # noqa: E402

NAME = "sasrec_beauty_history_loss_per_second_cpu"
DEFAULT_GLOB = "benchmarks/results/sasrec_beauty_history_*.json"
METRIC, METRIC_HR = "NDCG@10", "HR@10"
WITHIN = 0.05               # "within 5% of CE": test NDCG@10 >= (1 - WITHIN) x CE's
GBCE_T = 0.75               # LossConfig.gbce_t's default: not shown in a setting's label
LOSS_KEYS = ("model.loss", "model.negatives", "model.negative_sampler", "model.negatives_per", "model.gbce_t",
             "model.gbce_shift")


# ---------------------------------------------------------------------------------------------------------------
# grouping (pure: no data, no timing; tested in tests/test_benchmark_loss_per_second.py)
def loss_setting(model: dict) -> dict:
    """The loss setting of a model config dict: the keys that matter for its loss, the others None."""
    loss = model.get("loss", "ce")
    if loss == "ce":
        return {"loss": "ce", "sampler": None, "negatives": None, "negatives_per": None, "gbce_t": None,
                "gbce_shift": None}
    sampler = model.get("negative_sampler", "uniform")
    in_batch = sampler == "in_batch"
    return {"loss": loss, "sampler": sampler, "negatives": None if in_batch else int(model.get("negatives", 256)),
            "negatives_per": None if in_batch else model.get("negatives_per", "batch"),
            "gbce_t": float(model.get("gbce_t", GBCE_T)) if loss == "gbce" else None,
            # a gbce file without the key was trained before it existed: the paper's unshifted form
            "gbce_shift": model.get("gbce_shift", "none") if loss == "gbce" else None}


def setting_label(s: dict) -> str:
    """'ce', 'sampled_softmax/uniform/256', 'sampled_softmax/in_batch', 'gbce/uniform/256/per_row', ...; gbce's t
    only where it is not the default 0.75 ('gbce/uniform/256/t0.5'), its shift only where it is not the default
    equilibrium ('gbce/uniform/256/unshifted')."""
    parts = [s["loss"]] + [str(x) for x in (s["sampler"], s["negatives"]) if x is not None]
    if s["negatives_per"] == "row":
        parts.append("per_row")
    if s.get("gbce_t") is not None and s["gbce_t"] != GBCE_T:
        parts.append(f"t{s['gbce_t']:g}")
    if s.get("gbce_shift") == "none":
        parts.append("unshifted")
    return "/".join(parts)


def training_config(cfg: dict) -> dict:
    """The flat config (today's keys and defaults) minus what does not change what is trained (the trainer's
    resumable keys: patience, max_epochs, threads, ...; and the seed) and minus the loss keys (`loss_setting`)."""
    from seqrec.config import config_from_dict
    from seqrec.train.checkpoint import upgrade_config
    from seqrec.train.trainer import RESUMABLE_KEYS, flat_config
    flat = flat_config(config_from_dict(upgrade_config(cfg), source="result config").to_dict())
    ignored = set(RESUMABLE_KEYS) | {"train.seed"} | set(LOSS_KEYS)
    return {k: v for k, v in flat.items() if k not in ignored}


def is_trainer_result(d: dict) -> bool:
    return isinstance(d, dict) and all(k in d for k in ("metrics", "best_epoch", "config")) \
        and METRIC in (d["metrics"].get("test") or {})


def group_results(results: dict[str, dict]) -> list[dict]:
    """Group result dicts {file name: trainer result} by loss setting (see the module docstring). Returns the
    groups in label order, each: label, setting, seeds, files (used, with git commits), superseded, the per-seed
    values, mean test NDCG@10 / HR@10, mean best epoch, and `config` (the raw config of its first seed's file: what
    the timing builds)."""
    entries = []
    for name in sorted(results):
        d = results[name]
        if not is_trainer_result(d):
            continue
        cfg = d["config"]
        entries.append({"file": name, "d": d, "setting": loss_setting(cfg.get("model") or {}),
                        "other": training_config(cfg), "seed": (cfg.get("train") or {}).get("seed", d.get("seed"))})
    if not entries:
        return []
    # the reference training config: that of the CE runs if any, else the most common one
    keyed: dict[str, list] = {}
    for e in entries:
        keyed.setdefault(json.dumps(e["other"], sort_keys=True, default=str), []).append(e)
    ce_first = sorted(keyed.values(), key=lambda es: (-sum(e["setting"]["loss"] == "ce" for e in es), -len(es)))
    reference = ce_first[0][0]["other"]
    groups: dict[tuple, list] = {}
    for e in entries:
        diff = sorted(k for k in set(e["other"]) | set(reference) if e["other"].get(k) != reference.get(k))
        label = setting_label(e["setting"])
        # a key of the reference's model that this model has not (another model's SASRec keys) is not listed:
        # the differing model.name says it; the group key below still holds the whole config
        shown = [k for k in diff if k in e["other"]]
        if shown:
            label += " [" + ", ".join(f"{k}={e['other'][k]}" for k in shown) + "]"
        key = (label, json.dumps(e["other"], sort_keys=True, default=str))
        groups.setdefault(key, []).append(e)
    out = []
    for (label, _), es in sorted(groups.items()):
        by_seed: dict = {}
        for e in es:
            by_seed.setdefault(e["seed"], []).append(e)
        used, superseded = [], []
        for seed in sorted(by_seed, key=str):
            # the same seed and config twice: the longer run (it saw every epoch the shorter one saw)
            runs = sorted(by_seed[seed], key=lambda e: (-int(e["d"].get("epochs_run", 0)), e["file"]))
            used.append(runs[0])
            superseded += [{"file": e["file"], "seed": seed, "epochs_run": e["d"].get("epochs_run"),
                            "superseded_by": runs[0]["file"]} for e in runs[1:]]
        ndcg = [e["d"]["metrics"]["test"][METRIC] for e in used]
        hr = [e["d"]["metrics"]["test"].get(METRIC_HR) for e in used]
        best = [int(e["d"]["best_epoch"]) for e in used]
        out.append({
            "label": label, "setting": es[0]["setting"],
            "is_reference_config": label == setting_label(es[0]["setting"]),      # no differing training keys
            "seeds": [e["seed"] for e in used], "n_seeds": len(used),
            "files": [{"file": e["file"], "git_commit": e["d"].get("git_commit"), "seed": e["seed"],
                       f"test_{METRIC}": e["d"]["metrics"]["test"][METRIC],
                       f"test_{METRIC_HR}": e["d"]["metrics"]["test"].get(METRIC_HR),
                       "best_epoch": int(e["d"]["best_epoch"]), "epochs_run": e["d"].get("epochs_run")}
                      for e in used],
            "superseded": superseded,
            f"test_{METRIC}": statistics.fmean(ndcg),
            f"test_{METRIC_HR}": statistics.fmean(hr) if None not in hr else None,
            "best_epoch": statistics.fmean(best),
            "config": used[0]["d"]["config"],
        })
    return out


def logits_cost(setting: dict, n_items: int, targets_per_batch: float) -> float:
    """Items scored per target row / n_items: ce 1, sampled (negatives + 1) / n_items, in_batch: the batch's
    targets / n_items."""
    if setting["loss"] == "ce":
        return 1.0
    if setting["sampler"] == "in_batch":
        return targets_per_batch / n_items
    return (setting["negatives"] + 1) / n_items


def summarise(groups: list[dict], timing: dict[str, dict], within: float = WITHIN) -> tuple[list[dict], dict]:
    """Per-setting rows (accuracy + timing + derived) and the summary. timing[label]: step_cpu_ms (the mean step:
    epoch seconds = it x batches_per_epoch), batches_per_epoch, n_items, targets_per_batch (and anything else, such as
    step_cpu_ms_median, copied)."""
    ce = next((g for g in groups if g["setting"]["loss"] == "ce" and g["is_reference_config"]), None)
    ce_ndcg = ce[f"test_{METRIC}"] if ce else None
    rows = []
    for g in groups:
        t = timing.get(g["label"])
        row = {k: v for k, v in g.items() if k != "config"}
        if t is None:
            rows.append({**row, "timing": "not measured"})
            continue
        epoch_s = t["step_cpu_ms"] / 1000 * t["batches_per_epoch"]
        to_best = g["best_epoch"] * epoch_s
        ndcg = g[f"test_{METRIC}"]
        median_epoch = {"epoch_cpu_s_from_median_step": t["step_cpu_ms_median"] / 1000 * t["batches_per_epoch"]} \
            if "step_cpu_ms_median" in t else {}
        rows.append({**row, **t, "epoch_cpu_s": epoch_s, **median_epoch, "cpu_s_to_best_epoch": to_best,
                     f"test_{METRIC}_per_cpu_s": ndcg / to_best if to_best > 0 else None,
                     f"test_{METRIC}_per_cpu_hour": ndcg / (to_best / 3600) if to_best > 0 else None,
                     f"relative_test_{METRIC}_vs_ce": ndcg / ce_ndcg if ce_ndcg else None,
                     "relative_logits_cost": logits_cost(g["setting"], t["n_items"], t["targets_per_batch"])})
    timed = [r for r in rows if r.get(f"test_{METRIC}_per_cpu_s") is not None]

    def brief(r: dict | None) -> dict | None:
        if r is None:
            return None
        return {"setting": r["label"], f"test_{METRIC}": r[f"test_{METRIC}"], "n_seeds": r["n_seeds"],
                "cpu_s_to_best_epoch": r["cpu_s_to_best_epoch"], "best_epoch": r["best_epoch"],
                f"test_{METRIC}_per_cpu_hour": r[f"test_{METRIC}_per_cpu_hour"],
                f"relative_test_{METRIC}_vs_ce": r[f"relative_test_{METRIC}_vs_ce"]}

    best_rate = max(timed, key=lambda r: r[f"test_{METRIC}_per_cpu_s"], default=None)
    close = [r for r in timed if ce_ndcg and r[f"test_{METRIC}"] >= (1 - within) * ce_ndcg]
    fastest_close = min(close, key=lambda r: r["cpu_s_to_best_epoch"], default=None)
    # a single seed can land inside the band by luck (gBCE's seed 2020 did, its three-seed mean did not): the same
    # question among the settings measured on at least as many seeds as CE
    seeded = [r for r in close if ce and r["n_seeds"] >= ce["n_seeds"]]
    fastest_seeded = min(seeded, key=lambda r: r["cpu_s_to_best_epoch"], default=None)
    summary = {
        f"best_test_{METRIC}_per_cpu_second": brief(best_rate),
        f"fastest_within_{round(within * 100)}pct_of_ce": brief(fastest_close),
        f"fastest_within_{round(within * 100)}pct_of_ce_on_as_many_seeds": brief(fastest_seeded),
        "ce": brief(next((r for r in timed if ce and r["label"] == ce["label"]), None)),
        f"ce_test_{METRIC}_mean": ce_ndcg,
        "threshold": None if ce_ndcg is None else (1 - within) * ce_ndcg,
        "settings_within": [r["label"] for r in close],
    }
    return rows, summary


# ---------------------------------------------------------------------------------------------------------------
# timing
def measure(groups: list[dict], warmup: int, steps: int, seed: int, threads: int, log=print) -> dict[str, dict]:
    """Side-by-side CPU seconds of Trainer.training_step for every group (see the module docstring)."""
    import numpy as np
    import torch

    from seqrec.config import apply_overrides, config_from_dict
    from seqrec.data.batch import loss_norms
    from seqrec.data.loading import load_dataset
    from seqrec.train.checkpoint import upgrade_config
    from seqrec.train.trainer import Trainer

    overrides = [f"train.seed={seed}", f"train.threads={threads}", "train.device=cpu", "train.prefetch=0",
                 "train.track_test=false", "train.time_budget_s=null"]
    data_cache: dict[str, object] = {}
    setups = {}
    for g in groups:
        raw = apply_overrides(json.loads(json.dumps(upgrade_config(g["config"]))), overrides)
        cfg = config_from_dict(raw, source=f"{g['label']} (config)")
        key = json.dumps(cfg.to_dict()["data"], sort_keys=True)
        if key not in data_cache:
            data_cache[key] = load_dataset(cfg.data)
        t0 = time.perf_counter()
        tr = Trainer(cfg, None, quiet=True, data=data_cache[key], command="loss_quality_per_second")
        epoch1 = tr._epoch_batches(1)
        # timed: every batch of epoch 1 (steps <= 0), else `steps` of them spread evenly over it (deterministic);
        # warm-up: the first batches of epoch 2
        pick = range(len(epoch1)) if steps <= 0 or steps >= len(epoch1) else \
            np.linspace(0, len(epoch1) - 1, num=steps).round().astype(int)
        index_batches = tr._epoch_batches(2)[:warmup] + [epoch1[i] for i in pick]
        per_target, _ = loss_norms(tr.examples, tr.model.objective == "causal")
        setups[g["label"]] = {"trainer": tr, "n": len(index_batches), "cpu": [], "widths": [],
                              # built one at a time in this thread (prefetch 0), outside the timed region
                              "batches": iter(tr.loader.epoch(1, index_batches)),
                              "info": {"batches_per_epoch": tr.batches_per_epoch, "n_items": tr.data.n_items,
                                       "train_examples": len(tr.examples), "batch_size": cfg.train.batch_size,
                                       "examples": cfg.train.examples, "precision": tr.precision,
                                       "targets_per_batch": cfg.train.batch_size * (per_target or 1.0),
                                       "whole_epoch_timed": len(pick) == tr.batches_per_epoch}}
        log(f"built {g['label']}: {tr.batches_per_epoch} batches/epoch ({time.perf_counter() - t0:.1f}s)")
    torch.set_num_threads(threads)
    t0, logged = time.perf_counter(), -1
    for j, label in round_robin({label: s["n"] for label, s in setups.items()}):
        s = setups[label]
        batch = next(s["batches"]).to(s["trainer"].device)
        c0 = time.process_time()
        s["trainer"].training_step(batch)
        dt = time.process_time() - c0
        if j >= warmup:
            s["cpu"].append(dt)
            s["widths"].append(int(batch.items.shape[1]))
        if j % 100 == 99 and j != logged:
            logged = j
            log(f"step {j + 1} ({time.perf_counter() - t0:.0f}s)")
    out = {}
    for label, s in setups.items():
        ms = [x * 1000 for x in s["cpu"]]
        out[label] = {"step_cpu_ms": statistics.mean(ms), "step_cpu_ms_median": statistics.median(ms),
                      "step_cpu_ms_all": [round(x, 3) for x in ms], "timed_steps": len(ms),
                      "mean_batch_width": statistics.fmean(s["widths"]), **s["info"]}
    return out


def round_robin(counts: dict[str, int]):
    """(step j, label) pairs in timing order: at step j every label that has a j-th batch, the order rotated at
    every step so that no setting always goes first. A setting whose epoch has fewer batches (e.g. one example per
    user instead of one per prefix) drops out when they are done, so that every setting's whole epoch is timed."""
    labels = list(counts)
    for j in range(max(counts.values(), default=0)):
        k = j % len(labels)
        for label in labels[k:] + labels[:k]:
            if j < counts[label]:
                yield j, label


def src_uncommitted() -> list[str]:
    import subprocess
    try:
        return subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"], capture_output=True,
                              text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return ["(git status failed)"]


def load_results(pattern: str) -> dict[str, dict]:
    own = {f"{NAME}.json", f"{NAME.replace('_cpu', '_quick_cpu')}.json"}
    out = {}
    for path in sorted(glob.glob(pattern if Path(pattern).is_absolute() else str(ROOT / pattern))):
        p = Path(path)
        if p.name in own:
            continue
        d = json.loads(p.read_text())
        if is_trainer_result(d):
            out[p.name] = d
    return out


def table(rows: list[dict]) -> str:
    head = (f"{'setting':36s} {'seeds':>5s} {'NDCG@10':>8s} {'rel CE':>7s} {'best ep':>7s} {'step ms':>8s} "
            f"{'median':>7s} {'epoch s':>8s} {'s to best':>9s} {'NDCG/h':>8s} {'logits':>8s}")
    lines = [head]
    for r in sorted(rows, key=lambda r: -(r.get(f"test_{METRIC}_per_cpu_s") or 0)):
        if "step_cpu_ms" not in r:
            lines.append(f"{r['label']:36s} {r['n_seeds']:5d} {r[f'test_{METRIC}']:8.4f}  (not timed)")
            continue
        rel = r[f"relative_test_{METRIC}_vs_ce"]
        lines.append(f"{r['label']:36s} {r['n_seeds']:5d} {r[f'test_{METRIC}']:8.4f} "
                     f"{(f'{rel:.3f}' if rel else '-'):>7s} {r['best_epoch']:7.1f} {r['step_cpu_ms']:8.1f} "
                     f"{r.get('step_cpu_ms_median', float('nan')):7.1f} {r['epoch_cpu_s']:8.1f} "
                     f"{r['cpu_s_to_best_epoch']:9.0f} {r[f'test_{METRIC}_per_cpu_hour']:8.4f} "
                     f"{r['relative_logits_cost']:8.4f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=DEFAULT_GLOB, help="glob of trainer result files (relative to the repo)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per setting first (default 3; quick 1)")
    ap.add_argument("--steps", type=int, default=None,
                    help="timed steps per setting, spread over epoch 1 (default 0: every batch of the epoch; quick 2)")
    ap.add_argument("--seed", type=int, default=2020, help="train.seed of every setting's trainer (same batches)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 timed steps; writes to benchmarks/scratch/")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    steps = args.steps if args.steps is not None else (2 if args.quick else 0)
    t_start = time.time()
    results = load_results(args.results)
    groups = group_results(results)
    if not groups:
        raise SystemExit(f"no trainer result files match {args.results}")
    for g in groups:
        print(f"{g['label']}: seeds {g['seeds']}, test {METRIC} {g[f'test_{METRIC}']:.4f}, best epoch "
              f"{g['best_epoch']:.1f}" + (f", superseded {[s['file'] for s in g['superseded']]}"
                                          if g["superseded"] else ""), flush=True)
    import torch
    torch.set_num_threads(args.threads)
    timing = measure(groups, warmup, steps, args.seed, args.threads, log=lambda m: print(m, flush=True))
    rows, summary = summarise(groups, timing)
    print(table(rows))
    print(json.dumps(summary, indent=1))
    out = {
        "name": NAME.replace("_cpu", "_quick_cpu") if args.quick else NAME,
        "provenance": provenance(threads=args.threads, device="cpu"),
        # the commit is HEAD's; files of src/ that differ from it (uncommitted edits) ran too
        "src_uncommitted": src_uncommitted(),
        "results_glob": args.results,
        "config": {"warmup_steps": warmup, "timed_steps": steps or "every batch of epoch 1", "seed": args.seed,
                   "threads": args.threads,
                   "within_ce": WITHIN, "metric": METRIC},
        "protocol": (
            "Accuracy from the result files of benchmarks/baselines_beauty.py (SASRec, Beauty, leave-one-out, full "
            "ranking, eval.exclude=history), grouped by loss setting (loss; sampler, negatives, negatives_per for "
            "the sampled losses); files differing in other training keys (not the trainer's resumable keys nor the "
            "seed) are separate groups labelled by those keys; seeds averaged (test NDCG@10, HR@10, best epoch); "
            "of two files of one seed the one that ran more epochs is used. Their wall times are not used (measured "
            "under different load). Time: one Trainer per setting with that setting's config from its result file "
            f"and train.seed={args.seed} for all (the same batches where batch size and examples agree), "
            f"{warmup} warm-up steps (epoch 2's first batches) then timed Trainer.training_step calls (forward + "
            "loss, backward, optimiser and scheduler step) on "
            + (f"{steps} of epoch 1's batches spread evenly over it" if steps else "every batch of epoch 1")
            + ", round-robin over the settings with the first rotated every step, CPU time (time.process_time), "
            f"{args.threads} thread(s). Epoch CPU s = mean step x batches per epoch (the mean, not the median: step "
            "times are skewed by the batches' widths, not only by noise; epoch_cpu_s_from_median_step is recorded "
            "too); CPU s to the best epoch = mean best epoch x epoch CPU s. "
            "Excluded: evaluation (the same full-ranking validation after every epoch for every loss) and batch "
            "building (the same batches for every loss). Test NDCG@10 per CPU hour = test NDCG@10 / (CPU s to the "
            "best epoch / 3600). Relative logits cost = items scored per target row / n_items (ce 1; sampled "
            "(negatives + 1) / n_items; in_batch: targets per batch / n_items). Summary: the best test NDCG@10 per "
            "CPU second, and the least CPU to the best epoch among settings with test NDCG@10 >= "
            f"{1 - WITHIN:.2f} x CE's (mean over CE's seeds)."),
        "summary": summary,
        "settings": rows,
        "seconds": time.time() - t_start,
    }
    write_result(out, smoke=args.quick, path=args.out)


if __name__ == "__main__":
    main()
