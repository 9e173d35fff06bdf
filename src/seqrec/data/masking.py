"""The cloze (masked item) rule of BERT4Rec, vectorised over a batch."""
from __future__ import annotations

from dataclasses import dataclass

import torch


def cloze_mask(items: torch.Tensor, lengths: torch.Tensor, p: float, mask_token: int, n_items: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose each real item with probability p; a chosen item becomes [MASK] (80%), a random item in 1..n_items
    (10%) or stays (10%). Returns (masked items, labels) with labels = original item at chosen positions, else 0."""
    real = items != 0
    # the generator is passed only when given: torch.compile cannot trace generator=None with symbolic shapes
    rng = {} if generator is None else {"generator": generator}
    u = torch.rand(items.shape, device=items.device, **rng)
    chosen = (u < p) & real
    # reuse u / p, uniform in [0, 1) among chosen positions, to pick the replacement kind
    r = u / p
    masked = torch.where(chosen & (r < 0.8), torch.full_like(items, mask_token), items)
    rand_items = torch.randint(1, n_items + 1, items.shape, device=items.device, **rng)
    masked = torch.where(chosen & (r >= 0.8) & (r < 0.9), rand_items, masked)
    labels = torch.where(chosen, items, torch.zeros_like(items))
    return masked, labels


@dataclass(frozen=True)
class ClozeMasking:
    """What the data pipeline needs to cloze-mask a batch for a model (BERT4Rec's `cloze_masking()`)."""
    prob: float
    mask_token: int
    n_items: int


def masked_batch(batch, masking: ClozeMasking, generator: torch.Generator | None = None):
    """The batch with its items cloze-masked and the masked positions as its targets (targets_at 'masked').

    Run where batches are built (CPU, background worker) with the epoch's generator, so that the positions are
    known there and the loss gathers them by index without a host-device sync."""
    from seqrec.data.batch import Batch
    items, labels = cloze_mask(batch.items, batch.lengths, masking.prob, masking.mask_token, masking.n_items,
                               generator)
    flat = labels.reshape(-1)
    index = flat.nonzero().squeeze(1)       # a CPU tensor here: no device sync
    return Batch(items, batch.lengths, labels, batch.users, index, flat[index], "masked")
