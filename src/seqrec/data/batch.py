"""The one batch type, how training examples are cut from the split, and how batches are built.

A training example is a *span*: a contiguous run of one user's training items, stored as (start, length) into the
flat item array. Batches are right-padded to the longest span in the batch only (bucketing by length keeps that
short), and position t of a row is the t-th item of its span. Models turn spans into inputs and targets:

* causal (SASRec, GRU4Rec, ...): input = span[:-1], target at position t = span[t + 1]
  ('prefix' examples supervise only the last position);
* cloze (BERT4Rec, EMKD): the span itself, with items masked by the model's objective.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from seqrec.data.dataset import Split


TARGETS_AT = ("none", "every", "last", "masked")


@dataclass
class Batch:
    """A batch of right-padded item sequences (0 = padding), with a static description of its targets.

    items:        [B, T] item ids; row b holds lengths[b] real items followed by padding.
    lengths:      [B] number of real items per row (>= 1).
    targets:      [B, T] item to predict at each position, 0 = no target there (None: no targets).
    users:        [B] row index of the user in the dataset (evaluation / serving only; None in training).
    target_index: [K] flat positions b * T + t of the targets, row-major (built on the CPU with the batch, so a
                  loss gathers its rows with an index instead of discovering them with a boolean mask, which
                  would force a host-device sync).
    target_items: [K] the item to predict at each of those positions.
    targets_at:   where the targets are: 'every' (each position with a next item: 'sequence' / 'windows'
                  examples), 'last' (exactly one per row, at its last real position: 'prefix' examples; then
                  target_index[b] = b * T + lengths[b] - 1 and a model may encode that position only),
                  'masked' (cloze-masked positions; `items` already holds the masked input) or 'none'.

    target_norm:  the denominator of the batch's per-target mean losses (None: the number of targets K). The
                  training loader sets it to rows x the epoch's expected targets per example when batches are
                  length-bucketed (`loss_norms`), so that every target position weighs the same in whatever
                  batch it lands; dividing by K would give the positions of a batch of short sequences (few
                  targets) more weight than the same positions in a random batch, i.e. change the objective.
    token_norm:   the same for per-input-token mean losses (MQSA-TED's TED term over the batch's items).

    Given `targets` only (tests, hand-made batches on the CPU), the description is derived from them here.
    """
    items: torch.Tensor
    lengths: torch.Tensor
    targets: torch.Tensor | None = None
    users: torch.Tensor | None = None
    target_index: torch.Tensor | None = None
    target_items: torch.Tensor | None = None
    targets_at: str = "none"
    target_norm: float | None = None
    token_norm: float | None = None

    def __post_init__(self) -> None:
        if self.targets_at not in TARGETS_AT:
            raise ValueError(f"Batch.targets_at: {self.targets_at!r}; expected one of {', '.join(TARGETS_AT)}")
        if self.targets is None or self.target_index is not None:
            return
        if self.targets.device.type != "cpu":
            raise ValueError("Batch: describe the targets (target_index, target_items, targets_at) where the batch "
                             "is built, on the CPU; deriving them from device tensors would force a host sync")
        self.target_index, self.target_items, kind = describe_targets(self.targets, self.lengths)
        if self.targets_at == "none":
            self.targets_at = kind

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, torch.Tensor):
                moved[k] = v.to(device, non_blocking=non_blocking)
        return Batch(**moved)

    def pin_memory(self) -> "Batch":
        """Page-locked copies of the tensors, so that `.to(cuda, non_blocking=True)` overlaps with compute."""
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, torch.Tensor):
                moved[k] = v.pin_memory()
        return Batch(**moved)


def describe_targets(targets: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(target_index [K], target_items [K], 'last' | 'every') of dense CPU targets [B, T] (0 = none)."""
    flat = targets.reshape(-1)
    index = flat.nonzero().squeeze(1)
    b, t = targets.shape
    last = torch.arange(b) * t + lengths - 1
    is_last = len(index) == b and b > 0 and bool((index == last).all())
    return index, flat[index], "last" if is_last else "every"


def round_width(width: int, multiple: int, cap: int) -> int:
    """`width` rounded up to a multiple of `multiple`, at most `cap` (and never below `width`): batches of a few
    fixed widths instead of one per length, so that a compiled model is not recompiled for every width."""
    if multiple <= 1:
        return width
    return max(width, min(-(-width // multiple) * multiple, cap))


def pad_slices(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, keep_last: int | None = None,
               width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded matrix of flat[start:start+length] rows, keeping only the last `keep_last` items of each.

    Returns (matrix [B, width or max kept length], kept lengths)."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if keep_last is not None:
        cut = np.minimum(lengths, keep_last)
        starts = starts + lengths - cut
        lengths = cut
    t = int(lengths.max()) if len(lengths) else 0
    width = t if width is None else width
    cols = np.arange(width)[None, :]
    valid = cols < lengths[:, None]
    idx = np.where(valid, starts[:, None] + cols, 0)
    out = np.where(valid, flat[idx] if len(flat) else 0, 0)
    return out.astype(np.int64), lengths


@dataclass
class Examples:
    """Training spans: (start, length) into the flat item array, and the user each belongs to."""
    starts: np.ndarray
    lengths: np.ndarray
    users: np.ndarray
    last_target_only: bool = False   # 'prefix' examples: only the last position is supervised

    def __len__(self) -> int:
        return len(self.starts)


def build_examples(split: Split, mode: str, span_len: int, step: int = 1, min_len: int = 2) -> Examples:
    """Cut training spans from every user's training items.

    span_len: longest span (a causal model with max_len inputs needs max_len + 1 items, a cloze model max_len).
    mode: 'sequence' (last span_len items of each user), 'prefix' (every prefix ending at item t >= 2, cut to its
          last span_len items; only its last item is a target) or 'windows' (spans of span_len ending at n, n - step,
          ... >= span_len, plus the first span_len items; a user with n <= span_len gives one span).
    min_len: spans shorter than this are dropped (2 for causal models: one input and one target).
    """
    n = split.train_length.astype(np.int64)
    s = split.train_start.astype(np.int64)
    users = np.arange(len(n))
    if mode == "sequence":
        length = np.minimum(n, span_len)
        ex = Examples(s + n - length, length, users)
    elif mode == "prefix":
        # prefixes ending at positions 2..n (the end is the target) for each user
        counts = np.maximum(n - 1, 0)
        u = np.repeat(users, counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        end = np.arange(counts.sum()) - first + 2            # prefix length including its target
        length = np.minimum(end, span_len)
        ex = Examples(s[u] + end - length, length, u, last_target_only=True)
    elif mode == "windows":
        long = n > span_len
        # ends n, n - step, ..., while end >= span_len
        counts = np.where(long, (n - span_len) // step + 1, 1)
        u = np.repeat(users, counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        k = np.arange(counts.sum()) - first
        end = n[u] - k * step
        length = np.minimum(n[u], span_len)
        starts = s[u] + end - length
        # a window from the start when stepping back missed it
        needs_head = long & ((n - span_len) % step != 0)
        hu = users[needs_head]
        starts = np.concatenate([starts, s[hu]])
        length = np.concatenate([length, np.full(len(hu), span_len)])
        u = np.concatenate([u, hu])
        order = np.lexsort((starts, u))
        ex = Examples(starts[order], length[order], u[order])
    else:
        raise ValueError(f"unknown example mode {mode!r}; valid: sequence, prefix, windows")
    keep = ex.lengths >= min_len
    return Examples(ex.starts[keep], ex.lengths[keep], ex.users[keep], ex.last_target_only)


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, bucket: bool = True,
                  bucket_factor: int = 50, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
    """Index arrays of the batches of one epoch: a seeded shuffle, then (bucketing) each pool of
    batch_size * bucket_factor examples sorted by length and cut into batches, batch order shuffled.
    Deterministic in (seed, epoch); under DDP every rank gets every world_size-th batch (equal counts)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if bucket:
        pool = batch_size * bucket_factor
        chunks = []
        for i in range(0, len(order), pool):
            part = order[i:i + pool]
            chunks.append(part[np.argsort(lengths[part], kind="stable")])
        order = np.concatenate(chunks) if chunks else order
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if bucket:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    if world_size > 1:
        usable = len(batches) - len(batches) % world_size
        batches = batches[rank:usable:world_size]
    return batches


def loss_norms(ex: Examples, causal: bool, mask_prob: float | None = None) -> tuple[float | None, float]:
    """(targets, input tokens) per example, expected over the epoch's examples: a training batch of r rows divides
    its per-target mean losses by r x the first and its per-token ones by r x the second (`Batch.target_norm`,
    `token_norm`), which makes the weight of every target position 1 / (batch_size x targets per example) in every
    batch, as it is on average in random batches, whether or not batches are bucketed by length.

    causal: a span of L items has L - 1 inputs, each with a target ('sequence' / 'windows') or only the last one
    ('prefix'). Cloze (not causal): L inputs; with mask_prob the loader's cloze masking chooses each with that
    probability (expected p L targets); without it the model chooses its targets itself (None: divide by K)."""
    lengths = ex.lengths.astype(np.float64)
    if len(lengths) == 0:
        return None, 1.0
    if causal:
        tokens = float((lengths - 1).mean())
        return (1.0 if ex.last_target_only else tokens), tokens
    tokens = float(lengths.mean())
    return (None if mask_prob is None else mask_prob * tokens), tokens


def next_item_split(span: torch.Tensor, length: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded spans [B, T + 1] -> (inputs = span[:-1] [B, T], input lengths, targets = span[1:] [B, T]).

    The span's last item is only a target (zeroed in the input); every span needs length >= 2. Used for the
    causal training batches here and by ensembles that cut cloze windows for causal members (models.emkd)."""
    inputs = span[:, :-1].clone()
    in_len = length - 1
    inputs[torch.arange(inputs.shape[1], device=span.device)[None, :] >= in_len[:, None]] = 0
    return inputs, in_len, span[:, 1:].clone()


def causal_batch(flat: np.ndarray, ex: Examples, idx: np.ndarray, pad_multiple: int = 1,
                 max_len: int | None = None) -> Batch:
    """Spans -> (input = span[:-1], targets = span[1:]); 'prefix' examples keep only the last target.

    pad_multiple / max_len: the input width is rounded up to a multiple of pad_multiple, at most max_len (the
    model's input length); padding columns change no output of a right-padded model."""
    lengths = ex.lengths[idx]
    width = int(lengths.max()) - 1 if len(idx) else 0
    width = round_width(width, pad_multiple, max_len or width)
    span, length = pad_slices(flat, ex.starts[idx], lengths, width=width + 1)
    items, in_len, targets = next_item_split(torch.from_numpy(span), torch.from_numpy(length))
    if not ex.last_target_only:
        return Batch(items, in_len, targets, targets_at="every")
    rows = torch.arange(len(idx))
    last = targets[rows, in_len - 1]
    targets = torch.zeros_like(targets)
    targets[rows, in_len - 1] = last
    return Batch(items, in_len, targets, target_index=rows * targets.shape[1] + in_len - 1, target_items=last,
                 targets_at="last")


def span_batch(flat: np.ndarray, ex: Examples, idx: np.ndarray, pad_multiple: int = 1,
               max_len: int | None = None) -> Batch:
    """Spans as they are, no targets (a model that builds its own views from them, e.g. EMKD); width rounded as
    in causal_batch."""
    lengths = ex.lengths[idx]
    width = int(lengths.max()) if len(idx) else 0
    span, length = pad_slices(flat, ex.starts[idx], lengths, width=round_width(width, pad_multiple, max_len or width))
    return Batch(torch.from_numpy(span), torch.from_numpy(length))


def history_batch(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, max_len: int,
                  users: np.ndarray | None = None) -> Batch:
    """Evaluation/serving input: the last max_len items of each history, right-padded."""
    hist, kept = pad_slices(flat, starts, lengths, keep_last=max_len)
    return Batch(torch.from_numpy(hist), torch.from_numpy(kept), None,
                 None if users is None else torch.from_numpy(np.asarray(users, dtype=np.int64)))
