"""Training batches of one epoch, prepared ahead in a background thread.

    loader = BatchLoader(make_batch, masking=None, seed=2020, rank=0, prefetch=2, pin_memory=False)
    for batch in loader.epoch(epoch, index_batches): ...

`make_batch(idx) -> Batch` slices and pads the examples of one batch (seqrec.data.batch.causal_batch /
span_batch); with a ClozeMasking the batch is then masked on the CPU, with a generator seeded by (seed, epoch, rank):
every rank draws its own masks, and an epoch's masks do not depend on what ran before it, so a run resumed at an
epoch boundary draws the same ones. Building a batch (numpy slicing, masking) is host work that a thread overlaps
with the model's step; on CUDA the batch is also copied to page-locked memory so that the trainer's
`.to(device, non_blocking=True)` overlaps with compute.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Callable, Iterator

import numpy as np
import torch

from seqrec.data.batch import Batch
from seqrec.data.masking import ClozeMasking, masked_batch


def stream_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream (seed, *keys): numpy's SeedSequence mixing, so nearby keys give unrelated
    streams."""
    return int(np.random.SeedSequence([seed % 2**32, *keys]).generate_state(2, np.uint32).astype(np.uint64)
               .dot([1, 2**32]) % 2**63)


class BatchLoader:
    """make_batch: index array -> Batch. masking: cloze-mask each batch (BERT4Rec). prefetch: batches built ahead
    (0 = in the caller's thread). pin_memory: page-locked batches (for CUDA). norms: (targets, tokens) per example
    (`seqrec.data.batch.loss_norms`): each batch's `target_norm` / `token_norm` = its rows x these (None: the
    losses divide by the batch's own counts)."""

    def __init__(self, make_batch: Callable[[np.ndarray], Batch], masking: ClozeMasking | None = None,
                 seed: int = 0, rank: int = 0, prefetch: int = 2, pin_memory: bool = False,
                 norms: tuple[float | None, float] | None = None):
        self.make_batch = make_batch
        self.masking = masking
        self.seed = seed
        self.rank = rank
        self.prefetch = prefetch
        self.pin_memory = pin_memory
        self.norms = norms

    def epoch(self, epoch: int, index_batches: list[np.ndarray]) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(stream_seed(self.seed, 1, epoch, self.rank))

        def build(idx: np.ndarray) -> Batch:
            batch = self.make_batch(idx)
            if self.masking is not None:
                batch = masked_batch(batch, self.masking, generator)
            if self.norms is not None:
                rows = len(idx)
                per_target, per_token = self.norms
                batch = dataclasses.replace(batch, target_norm=None if per_target is None else rows * per_target,
                                            token_norm=rows * per_token)
            return batch.pin_memory() if self.pin_memory else batch

        if self.prefetch <= 0:
            return (build(idx) for idx in index_batches)
        return _prefetched((build(idx) for idx in index_batches), self.prefetch)


_DONE = object()


def _prefetched(items: Iterator, depth: int) -> Iterator:
    """Run `items` in a daemon thread, at most `depth` ahead of the consumer. An exception in the thread is raised
    in the consumer; a consumer that stops early (time budget) stops the thread at its next put."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for x in items:
                if not put(x):
                    return
            put(_DONE)
        except BaseException as e:          # handed to the consumer, raised there
            put(e)

    thread = threading.Thread(target=work, name="seqrec-batches", daemon=True)
    thread.start()
    try:
        while True:
            x = q.get()
            if x is _DONE:
                return
            if isinstance(x, BaseException):
                raise x
            yield x
    finally:
        stop.set()
        thread.join(timeout=5)
