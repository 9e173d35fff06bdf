"""Sequence augmentations of CL4SRec / MCLRec (crop, mask, reorder), vectorised over a batch in torch.

All functions take right-padded item tensors `items` [B, T] (0 = padding) and `lengths` [B] and return new
right-padded tensors (row b holds its new length's items at positions 0..len-1, zeros after). Randomness comes from
`generator` when given, else from the global torch RNG (which the trainer checkpoints, so a resumed run draws the
same augmentations). No Python loop over sequences.

* crop(ratio):    keep a random contiguous window of max(1, floor(ratio * len)) items, moved to position 0.
* mask(ratio):    set floor(ratio * len) distinct random positions (< len) to the padding id 0. The length is
                  unchanged: masked positions stay inside the sequence and are hidden from attention by the encoder.
* reorder(ratio): shuffle a random contiguous span of floor(ratio * len) items (uniform permutation of the span).
* two_views:      per row, two different operators drawn without replacement from {crop, mask, reorder}.
A row of length 1 is returned unchanged by every operator.
"""
from __future__ import annotations

import torch

CROP, MASK, REORDER = 0, 1, 2
OPERATORS = ("crop", "mask", "reorder")


def _rand(shape, ref: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # drawn on the batch's device (a CPU draw copied to a GPU would wait for the copy: a host sync per call); a
    # generator draws on its own device
    if generator is None:
        return torch.rand(shape, device=ref.device)
    return torch.rand(shape, generator=generator, device=generator.device).to(ref.device)


def _inside(items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return torch.arange(items.shape[1], device=items.device)[None, :] < lengths[:, None]


def crop(items: torch.Tensor, lengths: torch.Tensor, ratio: float = 0.5,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random contiguous window of max(1, floor(ratio * len)) items, left-aligned. Width stays T."""
    b, t = items.shape
    keep = torch.clamp(torch.floor(lengths.double() * ratio).long(), min=1)
    keep = torch.minimum(keep, lengths)
    start = torch.floor(_rand((b,), items, generator).double() * (lengths - keep + 1)).long()
    start = torch.minimum(start, lengths - keep)          # guards the (measure-zero) rand == 1 rounding case
    cols = torch.arange(t, device=items.device)[None, :]
    src = (start[:, None] + cols).clamp(max=t - 1)
    out = torch.gather(items, 1, src)
    out = torch.where(cols < keep[:, None], out, torch.zeros_like(out))
    return out, keep


def mask(items: torch.Tensor, lengths: torch.Tensor, ratio: float = 0.5,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """floor(ratio * len) distinct random positions among the first len set to 0; lengths unchanged."""
    inside = _inside(items, lengths)
    n_mask = torch.floor(lengths.double() * ratio).long()
    n_mask = torch.where(lengths > 1, torch.minimum(n_mask, lengths - 1), torch.zeros_like(n_mask))
    key = _rand(items.shape, items, generator).masked_fill(~inside, 2.0)   # padding sorts last
    rank = key.argsort(dim=1).argsort(dim=1)                               # rank of each position's key
    hit = rank < n_mask[:, None]
    return items.masked_fill(hit, 0), lengths.clone()


def reorder(items: torch.Tensor, lengths: torch.Tensor, ratio: float = 0.8,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniformly shuffle a random contiguous span of floor(ratio * len) items; everything else stays in place."""
    b, t = items.shape
    n = torch.minimum(torch.floor(lengths.double() * ratio).long(), lengths)
    begin = torch.floor(_rand((b,), items, generator).double() * (lengths - n + 1)).long()
    begin = torch.minimum(begin, lengths - n)
    cols = torch.arange(t, device=items.device)[None, :]
    in_span = (cols >= begin[:, None]) & (cols < (begin + n)[:, None])
    # sort keys: position index outside the span; inside, begin - 0.5 + n * U(0, 1), which lies strictly between
    # begin - 1 and begin + n, so sorting permutes the span uniformly and leaves the rest where it is
    u = _rand((b, t), items, generator).double()
    key = torch.where(in_span, begin[:, None].double() - 0.5 + n[:, None].double() * u, cols.double())
    perm = key.argsort(dim=1)
    return torch.gather(items, 1, perm), lengths.clone()


def draw_operator_pairs(batch_size: int, device: torch.device | str = "cpu",
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, 2] operator ids (CROP, MASK, REORDER), two different ones per row, uniform without replacement."""
    ref = torch.empty(0, device=device)
    return _rand((batch_size, 3), ref, generator).argsort(dim=1)[:, :2]


def two_views(items: torch.Tensor, lengths: torch.Tensor, crop_ratio: float = 0.5, mask_ratio: float = 0.5,
              reorder_ratio: float = 0.8, generator: torch.Generator | None = None, ops: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two augmented views of every row with different operators.

    Each operator is applied once to the whole batch and every view picks its operator's output per row (a row
    never uses the same operator twice, so the two views' randomness is independent). Views keep the input's
    width T (trimming them to their longest row would read a length back from the device: a host sync per
    batch); their padding columns change no output. Returns (items1, lengths1, items2, lengths2, ops [B, 2])."""
    if ops is None:
        ops = draw_operator_pairs(items.shape[0], items.device, generator)
    outs = [crop(items, lengths, crop_ratio, generator), mask(items, lengths, mask_ratio, generator),
            reorder(items, lengths, reorder_ratio, generator)]
    all_items = torch.stack([o[0] for o in outs])       # [3, B, T]
    all_len = torch.stack([o[1] for o in outs])         # [3, B]
    rows = torch.arange(items.shape[0], device=items.device)
    views = []
    for v in range(2):
        it = all_items[ops[:, v], rows]
        ln = all_len[ops[:, v], rows]
        single = lengths == 1                            # len 1: the original sequence
        it = torch.where(single[:, None], items, it)
        ln = torch.where(single, lengths, ln)
        views += [it, ln]
    return views[0], views[1], views[2], views[3], ops
