"""The training loop.

    result = train(cfg, out_dir="runs/x")

One loop for every model. The trainer owns optimisation; models only describe their losses (seqrec.models.base):
each step runs forward + loss under the precision's autocast, backward (scaled under fp16), gradient clipping, the
optimiser and LR-scheduler steps, with `train.accumulate` batches per optimiser step. A model that needs several
updates per batch (MCLRec) declares manual optimisation and gets a ManualOptimization handle (seqrec.train.manual)
that does the same per update. Loss terms stay on the device and are read back (a host sync) only every
`train.log_every` batches.

Each epoch cuts the training spans into shuffled, length-bucketed batches, built ahead by a background thread
(seqrec.data.loader); every `eval_every` epochs it validates with full ranking, keeps the best weights (early
stopping on `train.metric` with `patience`), and writes `last.pt` (everything needed to resume exactly: weights,
optimisers, schedulers, gradient scaler, every rank's RNG state, epoch, early-stopping state, history) and `best.pt`.
At the end the best weights are tested and `result.json` is written (format: docs/protocol.md).

Under torchrun each process takes every world_size-th batch of the same shuffled epoch, draws its own dropout,
masks and augmentations (its own seed), gradients are averaged by DistributedDataParallel (or by the manual handle),
evaluation is sharded across ranks, and only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seqrec.config import Config, config_from_dict
from seqrec.data.batch import build_examples, causal_batch, epoch_batches, loss_norms, span_batch
from seqrec.data.loader import BatchLoader, stream_seed
from seqrec.data.loading import make_split
from seqrec.errors import ConfigError, SeqrecError, TrainingDiverged
from seqrec.eval.evaluator import evaluate
from seqrec.models import DatasetInfo, build_model
from seqrec.train.checkpoint import (check_same_data, info_to_plain, load_checkpoint, save_checkpoint,
                                     upgrade_config)
from seqrec.train.distributed import (any_rank, barrier, broadcast_parameters, cleanup, from_rank0, gather,
                                      setup_distributed)
from seqrec.train.manual import ManualOptimization
from seqrec.train.precision import autocast_factory, grad_scaler, resolve_precision
from seqrec.train.progress import Progress
from seqrec.train.threads import default_threads
from seqrec.utils import (atomic_write_json, atomic_write_text, device_name, git_commit, peak_rss_mb,
                          seed_everything, versions)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' requested but no CUDA device is available; valid here: auto, cpu")
    return torch.device(name)


class LossModule(nn.Module):
    """The model's training computation as a module: forward(batch) = model.loss(batch). What DDP wraps (its
    hooks need the training computation to run through a module's forward) and what torch.compile compiles; the
    model's own forward is inference (score)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch) -> dict[str, torch.Tensor]:
        return self.model.loss(batch)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr at optimiser step `step` (0-based) of `total` (train.schedule, train.warmup_steps)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    s = min(1.0, (step - warmup) / max(1, total - warmup))
    return 1.0 - s if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * s))


# config keys that may differ between a run and its resumption: how long and how it is watched, not what is trained
RESUMABLE_KEYS = {"train.max_epochs", "train.patience", "train.time_budget_s", "train.log_every", "train.prefetch",
                  "train.threads", "train.track_test", "eval.batch_size", "eval.item_chunk", "data.data_dir",
                  "data.download"}


def flat_config(d: dict, prefix: str = "") -> dict:
    """{'train.lr': 0.001, 'model.member.tied': False, ...} of a nested config dict."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flat_config(v, key + ".") if isinstance(v, dict) and v else {key: v})
    return out


def check_resume_config(stored: dict, new: dict, path: Path) -> None:
    """Refuse a resume whose config differs from the run's in a key that changes what is trained (the optimiser
    would silently keep the old value, or the data / model would not match the weights). max_epochs may change
    only under a constant schedule (it sets the length of a linear / cosine one)."""
    a, b = flat_config(stored), flat_config(new)
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    allowed = set(RESUMABLE_KEYS)
    if a.get("train.schedule", "constant") != "constant":
        allowed.discard("train.max_epochs")
    refused = [k for k in changed if k not in allowed]
    if refused:
        shown = ", ".join(f"{k} ({a.get(k)!r} -> {b.get(k)!r})" for k in refused[:5])
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        raise ConfigError(f"{path}: --resume with a config that differs from the run's in {shown}{more}; only "
                          f"{', '.join(sorted(allowed))} may change on resume (start a new run in another folder)")


class Trainer:
    """Builds data, model and optimisers from a Config and runs the loop.

    cfg:     the resolved configuration.
    out_dir: folder for checkpoints, metrics.jsonl and result.json (None: keep nothing on disk). Under torchrun
             rank 0's value is used by every rank.
    quiet:   no progress output.
    resume:  continue from out_dir/last.pt (exactly: same data order, dropout and masking as an uninterrupted run).
             A run stopped early continues if resumed with a longer train.patience (or 0).
    data:    an already loaded InteractionData (skips loading cfg.data; used by tests and benchmarks).
    command: the command line recorded in result.json.
    """

    def __init__(self, cfg: Config, out_dir: str | Path | None = None, quiet: bool = False, resume: bool = False,
                 data=None, command: str | None = None):
        self.t_start = time.perf_counter()
        self.cfg = cfg
        self.command = command or " ".join(sys.argv)
        # the commit of the code that runs: read now, since a long run's tree may change before it ends
        self.git_commit = git_commit()
        tc = cfg.train
        self.device = resolve_device(tc.device)
        self.dist = setup_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        out_dir = from_rank0(None if out_dir is None else str(out_dir), self.dist)
        self.out = Path(out_dir) if out_dir else None
        self.progress = Progress(enabled=not quiet and self.dist.is_main)
        self.precision = resolve_precision(tc.precision, self.device)
        self.autocast = autocast_factory(self.precision, self.device)
        seed_everything(tc.seed)

        if data is None:
            from seqrec.data.loading import load_dataset
            data = load_dataset(cfg.data)
        self.data = data
        self.split = make_split(data, cfg.data)     # data.split: leave-one-out or temporal
        if self.split.note:
            self.progress.end_epoch(self.split.note)
        self.info = DatasetInfo(data.n_items, data.attributes)
        # every checkpoint's description of the data (vocabularies, fingerprint): built once, saved every epoch
        self.dataset_plain = info_to_plain(self.info, data)
        self.model = build_model(cfg.model, self.info).to(self.device)
        torch.set_num_threads(tc.threads or default_threads(self.model))
        self.model.prepare(self.split)          # training-data statistics some models need (no-op by default)
        self.examples = build_examples(self.split, tc.examples, self.model.span_len, tc.window_step,
                                       min_len=2 if self.model.objective == "causal" else 1)
        if len(self.examples) == 0:
            from seqrec.errors import DataError
            raise DataError(f"{data.source or data.name}: no training examples (every user's training part is "
                            f"too short for train.examples={tc.examples!r})")
        self.batches_per_epoch = len(self._epoch_batches(1))

        # optimisation: optimisers from the model, schedules / scaler / accumulation here
        self.optimizers = self.model.configure_optimizers(tc)
        steps_per_epoch = math.ceil(self.batches_per_epoch / tc.accumulate)
        factor = functools.partial(lr_factor, total=steps_per_epoch * tc.max_epochs, warmup=tc.warmup_steps,
                                   schedule=tc.schedule)
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in self.optimizers]
        self.scaler = grad_scaler(self.precision, self.device)
        self.manual = not self.model.automatic_optimization
        if self.manual and tc.accumulate > 1:
            raise ConfigError(f"train.accumulate: {self.model.name} runs several updates per batch (manual "
                              f"optimisation) and does not accumulate gradients; expected 1")
        # torch.compile's automatic dynamic shapes: the first graph is specialised to its shapes; a dimension seen
        # to change (the number of targets K of a batch, a new rounded width) is recompiled once as symbolic
        compile_fn = None
        if tc.compile:
            # on a CPU, inductor's own RNG builds a Philox generator per element of a dropout mask, slower than
            # ATen's bulk fill (docs/benchmarks.md "Compile on CPU"): keep ATen's there
            options = {"fallback_random": True} if self.device.type == "cpu" else None
            compile_fn = functools.partial(torch.compile, options=options)
        if self.manual:
            broadcast_parameters(self.model, self.dist)
            self.handle = ManualOptimization(self.optimizers, self.autocast, self.scaler, tc.grad_clip,
                                             distributed=self.dist.enabled)
            for name in self.model.compiled_methods if compile_fn else ():
                setattr(self.model, name, compile_fn(getattr(self.model, name)))
        else:
            self.loss_module: nn.Module = LossModule(self.model)
            if self.dist.enabled:
                from torch.nn.parallel import DistributedDataParallel
                self.loss_module = DistributedDataParallel(
                    self.loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if compile_fn:
                self.loss_module = compile_fn(self.loss_module)

        # batches: built ahead, width-rounded for compile, cloze-masked on the CPU where the model asks for it
        pad = tc.pad_multiple or (8 if tc.compile else 1)
        causal = self.model.objective == "causal"
        make = causal_batch if causal else span_batch
        width = self.model.span_len - 1 if causal else self.model.span_len
        masking = self.model.cloze_masking()
        # bucketed batches divide their mean losses by a fixed expected count, not their own (Batch.target_norm):
        # bucketing must change only how fast an epoch runs, not what it optimises
        norms = loss_norms(self.examples, causal, masking.prob if masking else None) if tc.bucket else None
        self.loader = BatchLoader(functools.partial(make, self.data.items, self.examples, pad_multiple=pad,
                                                    max_len=width),
                                  masking, tc.seed, self.dist.rank, tc.prefetch,
                                  pin_memory=self.device.type == "cuda", norms=norms)
        # every rank its own dropout / augmentation stream (rank 0 keeps the seed's stream, so a single process
        # draws exactly what it drew before DDP support); the weights were initialised identically above
        if self.dist.rank > 0:
            torch.manual_seed(stream_seed(tc.seed, 2, self.dist.rank))
        self.metric_name = tc.metric

        # loop state (all of it is checkpointed)
        self.epoch = 0
        self.best_metric = -math.inf
        self.best_epoch = 0
        self.bad_validations = 0
        self.history: list[dict] = []
        self.elapsed_before = 0.0      # training wall time spent before a resume
        self.tracking_seconds = 0.0    # time spent on train.track_test evaluations (excluded from elapsed)
        self.stopped_by = "max_epochs"
        self.best_state = None
        if resume:
            self._load_resume_state()

    # ------------------------------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Wall seconds of this run so far (across resumes), without train.track_test evaluations."""
        return self.elapsed_before + time.perf_counter() - self.t_start - self.tracking_seconds

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        tc = self.cfg.train
        return epoch_batches(self.examples.lengths, tc.batch_size, tc.seed, epoch, tc.bucket, tc.bucket_factor,
                             self.dist.rank, self.dist.world_size)

    def training_step(self, batch, group_size: int = 1, step_now: bool = True) -> dict[str, torch.Tensor]:
        """One batch: forward + loss under autocast, backward; with step_now, the optimiser step that ends a group
        of `group_size` accumulated batches. Returns the detached loss terms (still on the device)."""
        if self.manual:
            terms = self.model.manual_step(batch, self.handle)
        else:
            with self.autocast():
                terms = self.loss_module(batch)
            loss = terms["loss"] / group_size if group_size > 1 else terms["loss"]
            # under DDP only the last batch of an accumulation group all-reduces its gradients
            sync = contextlib.nullcontext() if step_now or not self.dist.enabled else self.loss_module.no_sync()
            with sync:
                self.scaler.scale(loss).backward()
            if step_now:
                self._optimizer_step()
        if step_now:
            for s in self.schedulers:
                s.step()
        return {k: v.detach() for k, v in terms.items()}

    def _optimizer_step(self) -> None:
        scaled = self.scaler.is_enabled()
        if self.cfg.train.grad_clip:
            for o in self.optimizers if scaled else ():
                self.scaler.unscale_(o)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip, foreach=True)
        for o in self.optimizers:
            if scaled:
                self.scaler.step(o)
            else:
                o.step()
        if scaled:
            self.scaler.update()
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)

    def train_epoch(self, epoch: int) -> dict:
        tc = self.cfg.train
        self.model.train()
        batches = self._epoch_batches(epoch)
        n = len(batches)
        sums: dict[str, torch.Tensor] = {}
        means: dict[str, float] = {}
        n_examples, last_read = 0, 0
        t0 = time.perf_counter()
        budget_hit = False
        step = 0
        for step, batch in enumerate(self.loader.epoch(epoch, batches), 1):
            batch = batch.to(self.device, non_blocking=True)
            group_start = (step - 1) // tc.accumulate * tc.accumulate
            group_size = min(tc.accumulate, n - group_start)
            terms = self.training_step(batch, group_size, step_now=step == group_start + group_size)
            size = batch.items.shape[0]
            for k, v in terms.items():           # summed on the device: no host sync here
                sums[k] = sums[k] + v.float() * size if k in sums else v.float() * size
            n_examples += size
            read_now = step % tc.log_every == 0 or step == n
            if read_now:                         # sync point: the logged values
                means = self._read(sums, n_examples, epoch, last_read, step)
                last_read = step
                self.progress.update(epoch, step, n, means, n_examples, t0)
            if tc.time_budget_s is not None:
                over = self.elapsed() > tc.time_budget_s
                # ranks agree on stopping only where they sync anyway (no collective in every step)
                if (over and not self.dist.enabled) or (read_now and any_rank(over, self.dist)):
                    budget_hit = True
                    break
        seconds = time.perf_counter() - t0
        if sums and step != last_read:       # stopped by the budget between two reads
            means = self._read(sums, n_examples, epoch, last_read, step)
        return {"terms": means, "seconds": seconds,
                "examples": n_examples, "batches": step, "budget_hit": budget_hit}

    def _read(self, sums: dict[str, torch.Tensor], n_examples: int, epoch: int, last_read: int,
              step: int) -> dict[str, float]:
        """The running means of the loss terms, read back from the device; stops a diverged run."""
        values = dict(zip(sums, torch.stack(list(sums.values())).tolist()))
        if not math.isfinite(values["loss"]):
            where = f"batch {step}" if step - last_read == 1 else f"batches {last_read + 1}-{step}"
            raise TrainingDiverged(f"loss became {values['loss'] / n_examples} at epoch {epoch}, {where}; "
                                   f"lower train.lr, set train.grad_clip, or check the data")
        return {k: v / n_examples for k, v in values.items()}

    def evaluate(self, which: str = "valid") -> dict:
        """Full-ranking metrics of the current weights on the 'valid' or 'test' split (sharded under torchrun)."""
        ec = self.cfg.eval
        return evaluate(self.model, self.split, which, ec.exclude, ec.ks, ec.batch_size, self.device,
                        self.dist.rank, self.dist.world_size, item_chunk=ec.item_chunk)

    def fit(self) -> dict:
        tc = self.cfg.train
        while self.epoch < tc.max_epochs and self.stopped_by != "early_stopping":
            self.epoch += 1
            stats = self.train_epoch(self.epoch)
            # git_commit per epoch: a run resumed across sessions may span commits (result.json names the last)
            record = {"epoch": self.epoch, "train": stats["terms"], "train_seconds": round(stats["seconds"], 3),
                      "examples_per_s": round(stats["examples"] / max(stats["seconds"], 1e-9), 1),
                      "git_commit": self.git_commit}
            stop = stats["budget_hit"]
            if self.epoch >= tc.eval_start and (self.epoch % tc.eval_every == 0 or stop):
                val = self.evaluate("valid")
                record["valid"] = val["metrics"]
                record["eval_seconds"] = round(val["seconds"], 3)
                if tc.track_test:        # reported only; never used for selection, its time not counted
                    t_track = time.perf_counter()
                    record["test"] = self.evaluate("test")["metrics"]
                    self.tracking_seconds += time.perf_counter() - t_track
                value = val["metrics"][self.metric_name]        # its K is in eval.ks (Config.validate)
                if value > self.best_metric:
                    self.best_metric, self.best_epoch, self.bad_validations = value, self.epoch, 0
                    self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                else:
                    self.bad_validations += 1
                if self._patience_exhausted():
                    self.stopped_by = "early_stopping"
                    stop = True
            if stats["budget_hit"]:
                self.stopped_by = "time_budget"
            record["elapsed_s"] = round(self.elapsed(), 3)
            self.history.append(record)
            self._log_epoch(record)
            self._save_state(finished=stop or self.epoch >= tc.max_epochs)
            if stop:
                break
        return self.finish()

    def finish(self) -> dict:
        """Restore the best weights, test them and write result.json."""
        if self.best_state is None:          # never validated (e.g. eval_start > epochs run): use the last weights
            val = self.evaluate("valid")
            self.best_metric, self.best_epoch = val["metrics"][self.metric_name], self.epoch
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self._save_state(finished=True)  # best.pt: these are the weights the result is of
        self.model.load_state_dict(self.best_state)
        train_wall = self.elapsed()
        val = self.evaluate("valid")
        test = self.evaluate("test")
        result = self._result(val, test, train_wall)
        if self.out and self.dist.is_main:
            atomic_write_json(self.out / "result.json", result)
        if self.progress.enabled:
            self.progress.end_epoch(f"best epoch {self.best_epoch}: valid " + _fmt(val["metrics"]))
            self.progress.end_epoch("test: " + _fmt(test["metrics"]))
        barrier(self.dist)
        cleanup(self.dist)
        return result

    # ------------------------------------------------------------------------------------------------------
    def _log_epoch(self, record: dict) -> None:
        line = f"epoch {record['epoch']}: " + " ".join(f"{k} {v:.4f}" for k, v in record["train"].items())
        line += f" | {record['train_seconds']:.1f}s {record['examples_per_s']:,.0f} ex/s"
        if "valid" in record:
            line += f" | valid {self.metric_name} {record['valid'][self.metric_name]:.4f}"
        self.progress.end_epoch(line)
        if self.out and self.dist.is_main:
            atomic_write_text(self.out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history))

    def _rng_state(self) -> dict:
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}

    def _state(self, rng: list[dict]) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "scaler": self.scaler.state_dict(),
            "config": self.cfg.to_dict(),
            "dataset": self.dataset_plain,
            "epoch": self.epoch,
            "best_metric": self.best_metric, "best_epoch": self.best_epoch, "bad_validations": self.bad_validations,
            "best_state": self.best_state,
            "history": self.history, "elapsed_s": self.elapsed(), "stopped_by": self.stopped_by,
            "rng": rng,                      # one entry per rank: each draws its own dropout / augmentations
        }

    def _save_state(self, finished: bool) -> None:
        if not self.out:
            return
        rng = gather(self._rng_state(), self.dist)       # a collective: every rank takes part
        if not self.dist.is_main:
            return
        state = self._state(rng)
        state["finished"] = finished
        save_checkpoint(self.out / "last.pt", state)
        if self.best_epoch == self.epoch:
            save_checkpoint(self.out / "best.pt", {"model": self.best_state, "config": state["config"],
                                                   "dataset": state["dataset"], "epoch": self.epoch,
                                                   "best_metric": self.best_metric})

    def _load_resume_state(self) -> None:
        if not self.out:
            raise SeqrecError("--resume needs --out DIR holding last.pt")
        path = self.out / "last.pt"
        ckpt = load_checkpoint(path)
        # through config_from_dict: keys added since the run started (e.g. data.split) get their defaults
        stored = config_from_dict(upgrade_config(ckpt["config"]), source=f"{path} (config)").to_dict()
        check_resume_config(stored, self.cfg.to_dict(), path)
        check_same_data(ckpt, path, self.data, "resume")     # the same config may read a changed file
        self.model.load_state_dict(ckpt["model"])
        for opt, sd in zip(self.optimizers, ckpt["optimizers"]):
            opt.load_state_dict(sd)
        for sched, sd in zip(self.schedulers, ckpt.get("schedulers", [])):
            sched.load_state_dict(sd)
        if "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch = int(ckpt["epoch"])
        self.best_metric = float(ckpt["best_metric"])
        self.best_epoch = int(ckpt["best_epoch"])
        self.bad_validations = int(ckpt["bad_validations"])
        self.best_state = ckpt["best_state"]
        self.history = list(ckpt["history"])
        self.elapsed_before = float(ckpt["elapsed_s"])
        self.stopped_by = ckpt["stopped_by"]
        rng = ckpt["rng"]
        if isinstance(rng, dict):            # written before per-rank states: one process's state
            rng = [{"torch": rng["torch"], "cuda": (rng.get("cuda") or [None])[0]}]
        if len(rng) != self.dist.world_size:
            raise SeqrecError(f"{path}: written by {len(rng)} process(es), resumed with {self.dist.world_size}; "
                              f"an exact resume needs the same number of processes")
        mine = rng[self.dist.rank]
        torch.set_rng_state(mine["torch"])
        if mine["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"], self.device)
        if self.stopped_by == "early_stopping" and not self._patience_exhausted():
            # resumed with a longer patience (or none): training goes on from the epoch it stopped at, exactly as a
            # run with that patience from the start (the stop decision changed nothing else); else fit() only retests
            self.stopped_by = "max_epochs"

    def _patience_exhausted(self) -> bool:
        patience = self.cfg.train.patience
        return bool(patience) and self.bad_validations >= patience

    def _result(self, val: dict, test: dict, train_wall: float) -> dict:
        epochs_with_time = [r["train_seconds"] for r in self.history]
        mc = self.cfg.model
        return {
            "method": mc.name,
            "dataset": self.data.name,
            # the split's own entries first ("split": leave-one-out | temporal, its counts and cuts)
            "protocol": {**self.split.protocol, "ranking": "full", "exclude": self.cfg.eval.exclude,
                         "max_len": mc.max_len, "history_len": self.model.history_len,
                         "ties": "rank = number of items scored strictly higher than the target",
                         "users_evaluated": test["users"], "valid_users_evaluated": val["users"]},
            "metrics": {"valid": val["metrics"], "test": test["metrics"]},
            "best_epoch": self.best_epoch, "epochs_run": self.epoch, "stopped_by": self.stopped_by,
            "wall_time_s": round(self.elapsed(), 3),
            "train_wall_time_s": round(train_wall, 3),
            "seconds_per_epoch": round(float(np.mean(epochs_with_time)), 3) if epochs_with_time else 0.0,
            "eval_seconds": round(test["seconds"], 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "device": device_name(self.device),
            "precision": self.precision,
            "compile": self.cfg.train.compile,
            "threads": torch.get_num_threads(),
            "world_size": self.dist.world_size,
            "seed": self.cfg.train.seed,
            "train_examples": len(self.examples),
            "config": self.cfg.to_dict(),
            "git_commit": self.git_commit,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": self.command,
            "versions": versions(),
            "history": self.history,
        }


def _fmt(metrics: dict) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def train(cfg: Config, out_dir: str | Path | None = None, quiet: bool = False, resume: bool = False,
          data=None, command: str | None = None) -> dict:
    """Train, select the best validation epoch, test it; returns the result dict (also written to out_dir)."""
    return Trainer(cfg, out_dir, quiet, resume, data, command).fit()
