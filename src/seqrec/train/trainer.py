"""The training loop.

    result = train(cfg, out_dir="runs/x")

One loop for every model: each epoch cuts the training spans into shuffled, length-bucketed batches and calls the
model's `training_step`; every `eval_every` epochs it validates with full ranking, keeps the best weights
(early stopping on `train.metric` with `patience`), and writes `last.pt` (everything needed to resume exactly:
weights, optimisers, RNG state, epoch, early-stopping state, history) and `best.pt`. At the end the best weights are
tested and `result.json` is written (format: docs/protocol.md).

Under torchrun each process takes every world_size-th batch of the same shuffled epoch, gradients are averaged by
DistributedDataParallel, evaluation is sharded across ranks, and only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from seqrec.config import Config
from seqrec.data.batch import build_examples, causal_batch, epoch_batches, span_batch
from seqrec.data.dataset import leave_one_out
from seqrec.errors import TrainingDiverged
from seqrec.eval.evaluator import evaluate
from seqrec.models import DatasetInfo, build_model
from seqrec.train.checkpoint import info_to_plain, load_checkpoint, save_checkpoint
from seqrec.train.distributed import any_rank, barrier, cleanup, setup_distributed
from seqrec.train.progress import Progress
from seqrec.utils import (atomic_write_json, atomic_write_text, device_name, git_commit, peak_rss_mb,
                          seed_everything, versions)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from seqrec.errors import ConfigError
        raise ConfigError("train.device: 'cuda' requested but no CUDA device is available; valid here: auto, cpu")
    return torch.device(name)


class Trainer:
    """Builds data, model and optimisers from a Config and runs the loop.

    cfg:     the resolved configuration.
    out_dir: folder for checkpoints, metrics.jsonl and result.json (None: keep nothing on disk).
    quiet:   no progress output.
    resume:  continue from out_dir/last.pt (exactly: same data order, dropout and masking as an uninterrupted run).
    data:    an already loaded InteractionData (skips loading cfg.data; used by tests and benchmarks).
    command: the command line recorded in result.json.
    """

    def __init__(self, cfg: Config, out_dir: str | Path | None = None, quiet: bool = False, resume: bool = False,
                 data=None, command: str | None = None):
        self.t_start = time.perf_counter()
        self.cfg = cfg
        self.out = Path(out_dir) if out_dir else None
        self.command = command or " ".join(sys.argv)
        # the commit of the code that runs: read now, since a long run's tree may change before it ends
        self.git_commit = git_commit()
        tc = cfg.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.device = resolve_device(tc.device)
        self.dist = setup_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.progress = Progress(enabled=not quiet and self.dist.is_main)
        if tc.amp and self.device.type != "cuda":
            from seqrec.errors import ConfigError
            raise ConfigError("train.amp: bfloat16 autocast is for CUDA devices; on a CPU without bfloat16 units it "
                              "is emulated and many times slower (measured ~30x here); set train.amp=false")
        seed_everything(tc.seed)

        if data is None:
            from seqrec.data.loading import load_dataset
            data = load_dataset(cfg.data)
        self.data = data
        self.split = leave_one_out(data, cfg.data.short_users)
        if self.split.n_short_users:
            self.progress.end_epoch(
                f"note: {self.split.n_short_users} users have fewer than 3 interactions and are not evaluated "
                f"(data.short_users={cfg.data.short_users}: "
                f"{'their items are used for training' if cfg.data.short_users == 'train_only' else 'dropped'})")
        self.info = DatasetInfo(data.n_items, data.attributes)
        self.model = build_model(cfg.model, self.info).to(self.device)
        self.model.prepare(self.split)          # training-data statistics some models need (no-op by default)
        self.optimizers = self.model.configure_optimizers(tc)
        self.examples = build_examples(self.split, tc.examples, self.model.span_len, tc.window_step,
                                       min_len=2 if self.model.objective == "causal" else 1)
        if len(self.examples) == 0:
            from seqrec.errors import DataError
            raise DataError(f"{data.source or data.name}: no training examples (every user's training part is "
                            f"too short for train.examples={tc.examples!r})")
        self.make_batch = causal_batch if self.model.objective == "causal" else span_batch
        self.forward = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel
            self.forward = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if tc.compile:
            self.forward = torch.compile(self.forward)
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

    def train_epoch(self, epoch: int) -> dict:
        tc = self.cfg.train
        self.model.train()
        batches = epoch_batches(self.examples.lengths, tc.batch_size, tc.seed, epoch, tc.bucket, tc.bucket_factor,
                                self.dist.rank, self.dist.world_size)
        # loss terms are summed on the device and read back (a sync) every step on a CPU, but only every
        # `sync_every` steps on a GPU, where each read would stall the queue
        sync_every = 1 if self.device.type == "cpu" else 25
        sums: dict[str, torch.Tensor] = {}
        means: dict[str, float] = {}
        n_examples, last_checked = 0, 0
        t0 = time.perf_counter()
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if tc.amp else contextlib.nullcontext()
        budget_hit = False
        for step, idx in enumerate(batches, 1):
            batch = self.make_batch(self.data.items, self.examples, idx).to(self.device, non_blocking=True)
            with amp:
                terms = self.model.training_step(batch, self.optimizers, forward=self.forward, clip=tc.grad_clip)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() * len(idx)
            n_examples += len(idx)
            if step % sync_every == 0 or step == len(batches):
                values = dict(zip(sums, torch.stack(list(sums.values())).tolist()))
                if not math.isfinite(values["loss"]):
                    where = f"batch {step}" if step - last_checked == 1 else f"batches {last_checked + 1}-{step}"
                    raise TrainingDiverged(f"loss became {values['loss'] / n_examples} at epoch {epoch}, {where}; "
                                           f"lower train.lr, set train.grad_clip, or check the data")
                last_checked = step
                means = {k: v / n_examples for k, v in values.items()}
                self.progress.update(epoch, step, len(batches), means, n_examples, t0)
            if tc.time_budget_s is not None and any_rank(self.elapsed() > tc.time_budget_s, self.dist):
                budget_hit = True
                break
        seconds = time.perf_counter() - t0
        if sums and step != last_checked:       # stopped by the budget between two reads
            means = {k: v / n_examples for k, v in zip(sums, torch.stack(list(sums.values())).tolist())}
        return {"terms": means, "seconds": seconds,
                "examples": n_examples, "batches": step if batches else 0, "budget_hit": budget_hit}

    def validate(self, which: str = "valid") -> dict:
        ec = self.cfg.eval
        return evaluate(self.model, self.split, which, ec.exclude, ec.ks, ec.batch_size, self.device,
                        self.dist.rank, self.dist.world_size)

    def fit(self) -> dict:
        tc = self.cfg.train
        while self.epoch < tc.max_epochs:
            self.epoch += 1
            stats = self.train_epoch(self.epoch)
            record = {"epoch": self.epoch, "train": stats["terms"], "train_seconds": round(stats["seconds"], 3),
                      "examples_per_s": round(stats["examples"] / max(stats["seconds"], 1e-9), 1)}
            stop = stats["budget_hit"]
            if self.epoch >= tc.eval_start and (self.epoch % tc.eval_every == 0 or stop):
                val = self.validate("valid")
                record["valid"] = val["metrics"]
                record["eval_seconds"] = round(val["seconds"], 3)
                if tc.track_test:        # reported only; never used for selection, its time not counted
                    t_track = time.perf_counter()
                    record["test"] = self.validate("test")["metrics"]
                    self.tracking_seconds += time.perf_counter() - t_track
                value = val["metrics"][self.metric_name]        # its K is in eval.ks (Config.validate)
                if value > self.best_metric:
                    self.best_metric, self.best_epoch, self.bad_validations = value, self.epoch, 0
                    self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                else:
                    self.bad_validations += 1
                if tc.patience and self.bad_validations >= tc.patience:
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
            val = self.validate("valid")
            self.best_metric, self.best_epoch = val["metrics"][self.metric_name], self.epoch
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.best_state)
        train_wall = self.elapsed()
        val = self.validate("valid")
        test = self.validate("test")
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

    def _state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "config": self.cfg.to_dict(),
            "dataset": info_to_plain(self.info, self.data.name),
            "epoch": self.epoch,
            "best_metric": self.best_metric, "best_epoch": self.best_epoch, "bad_validations": self.bad_validations,
            "best_state": self.best_state,
            "history": self.history, "elapsed_s": self.elapsed(), "stopped_by": self.stopped_by,
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }

    def _save_state(self, finished: bool) -> None:
        if not (self.out and self.dist.is_main):
            return
        state = self._state()
        state["finished"] = finished
        save_checkpoint(self.out / "last.pt", state)
        if self.best_epoch == self.epoch:
            save_checkpoint(self.out / "best.pt", {"model": self.best_state, "config": state["config"],
                                                   "dataset": state["dataset"], "epoch": self.epoch,
                                                   "best_metric": self.best_metric})

    def _load_resume_state(self) -> None:
        from seqrec.errors import SeqrecError
        if not self.out:
            raise SeqrecError("--resume needs --out DIR holding last.pt")
        ckpt = load_checkpoint(self.out / "last.pt")
        self.model.load_state_dict(ckpt["model"])
        for opt, sd in zip(self.optimizers, ckpt["optimizers"]):
            opt.load_state_dict(sd)
        self.epoch = int(ckpt["epoch"])
        self.best_metric = float(ckpt["best_metric"])
        self.best_epoch = int(ckpt["best_epoch"])
        self.bad_validations = int(ckpt["bad_validations"])
        self.best_state = ckpt["best_state"]
        self.history = list(ckpt["history"])
        self.elapsed_before = float(ckpt["elapsed_s"])
        self.stopped_by = ckpt["stopped_by"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if ckpt["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        if self.stopped_by == "early_stopping":
            self.epoch = self.cfg.train.max_epochs       # nothing left to train: just test again

    def _result(self, val: dict, test: dict, train_wall: float) -> dict:
        epochs_with_time = [r["train_seconds"] for r in self.history]
        mc = self.cfg.model
        return {
            "method": mc.name,
            "dataset": self.data.name,
            "protocol": {"split": "leave-one-out", "ranking": "full", "exclude": self.cfg.eval.exclude,
                         "max_len": mc.max_len, "history_len": self.model.history_len,
                         "ties": "rank = number of items scored strictly higher than the target",
                         "users_evaluated": test["users"], "short_users": self.split.n_short_users,
                         "short_users_policy": self.split.short_policy},
            "metrics": {"valid": val["metrics"], "test": test["metrics"]},
            "best_epoch": self.best_epoch, "epochs_run": self.epoch, "stopped_by": self.stopped_by,
            "wall_time_s": round(self.elapsed(), 3),
            "train_wall_time_s": round(train_wall, 3),
            "seconds_per_epoch": round(float(np.mean(epochs_with_time)), 3) if epochs_with_time else 0.0,
            "eval_seconds": round(test["seconds"], 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "device": device_name(self.device),
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
