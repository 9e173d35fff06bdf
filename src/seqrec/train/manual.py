"""Manual optimisation: the handle a model with `automatic_optimization = False` gets from the trainer.

    def manual_step(self, batch, opt):
        with opt.autocast():
            terms = self.loss(batch)
        opt.zero_grad()
        opt.backward(terms["loss"], params)
        opt.step(opt.optimizers[0], params)

The handle does for each update what the trainer does for an automatic model: autocast around the forward and the
loss only, the fp16 GradScaler (scale before backward, unscale before clipping, skip the step on inf/NaN gradients,
update the scale), gradient averaging over the ranks under torchrun (the model is not wrapped in
DistributedDataParallel, whose reducer expects one forward and one backward per step; the handle averages the
gradients of the parameters being stepped after each backward) and gradient clipping. The model never calls a
collective or touches precision itself. Gradient accumulation is not offered in this mode (train.accumulate must
be 1).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import torch

from seqrec.train.distributed import average_gradients


class ManualOptimization:
    """optimizers: the model's optimisers (configure_optimizers' order).
    autocast:   a factory of the context to run forward + loss in (default: none, fp32).
    scaler:     a torch.amp.GradScaler (fp16) or None.
    clip:       clip the gradient norm of the stepped parameters to this value (None = off).
    distributed: average gradients over the process group after each backward."""

    def __init__(self, optimizers: list[torch.optim.Optimizer],
                 autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
                 scaler: torch.amp.GradScaler | None = None, clip: float | None = None, distributed: bool = False):
        self.optimizers = optimizers
        self._autocast = autocast or contextlib.nullcontext
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.clip = clip
        self.distributed = distributed

    def autocast(self) -> contextlib.AbstractContextManager:
        """The precision context for forward + loss (never around backward or the step)."""
        return self._autocast()

    def zero_grad(self) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, params: Iterable[torch.nn.Parameter]) -> None:
        """Backpropagate `loss` (scaled under fp16); under torchrun average the gradients of `params`."""
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.distributed:
            average_gradients(params)

    def step(self, optimizer: torch.optim.Optimizer, params: Iterable[torch.nn.Parameter]) -> None:
        """Unscale (fp16), clip `params`, step `optimizer` (skipped by the scaler on inf/NaN gradients)."""
        params = list(params)
        if self.scaler:
            self.scaler.unscale_(optimizer)
        if self.clip:
            torch.nn.utils.clip_grad_norm_(params, self.clip, foreach=True)
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
