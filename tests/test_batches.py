"""Training examples and batches: exact spans on a hand-made split, a naive reference on synthetic data, the
Beauty counts, causal targets, padding widths, and the epoch order (determinism, coverage, DDP shards)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import hand_split, needs_beauty
from seqrec.data.batch import (build_examples, causal_batch, next_item_split, epoch_batches, history_batch, pad_slices,
                               span_batch)


def spans(split, ex) -> list[tuple[int, list[int]]]:
    return [(int(u), split.data.items[s:s + n].tolist()) for s, n, u in zip(ex.starts, ex.lengths, ex.users)]


def train_items(split, u: int) -> list[int]:
    s = split.train_start[u]
    return split.data.items[s:s + split.train_length[u]].tolist()


def naive_examples(split, mode: str, span_len: int, step: int, min_len: int) -> list[tuple[int, list[int]]]:
    out = []
    for u in range(split.data.n_users):
        t = train_items(split, u)
        n = len(t)
        if mode == "sequence":
            cand = [t[-span_len:]] if n else []
        elif mode == "prefix":
            cand = [t[max(0, end - span_len):end] for end in range(2, n + 1)]
        else:
            if n <= span_len:
                cand = [t]
            else:
                starts = {end - span_len for end in range(n, span_len - 1, -step)} | {0}
                cand = [t[s:s + span_len] for s in sorted(starts)]
        out += [(u, c) for c in cand if len(c) >= min_len]
    return out


@pytest.fixture
def hand():
    # train parts: u0 10..15 (6 items), u1 20 21, u2 30, u3 (short, train only) 40 41
    return hand_split([[10, 11, 12, 13, 14, 15, 16, 17], [20, 21, 22, 23], [30, 31, 32], [40, 41]], n_items=50)


def test_hand_split_train_parts(hand):
    assert [train_items(hand, u) for u in range(4)] == [[10, 11, 12, 13, 14, 15], [20, 21], [30], [40, 41]]
    assert hand.users("test").tolist() == [0, 1, 2]


def test_sequence_examples_exact(hand):
    ex = build_examples(hand, "sequence", span_len=3, min_len=2)
    assert spans(hand, ex) == [(0, [13, 14, 15]), (1, [20, 21]), (3, [40, 41])]
    assert not ex.last_target_only
    ex1 = build_examples(hand, "sequence", span_len=3, min_len=1)
    assert spans(hand, ex1) == [(0, [13, 14, 15]), (1, [20, 21]), (2, [30]), (3, [40, 41])]


def test_prefix_examples_exact(hand):
    ex = build_examples(hand, "prefix", span_len=3, min_len=2)
    assert spans(hand, ex) == [(0, [10, 11]), (0, [10, 11, 12]), (0, [11, 12, 13]), (0, [12, 13, 14]),
                               (0, [13, 14, 15]), (1, [20, 21]), (3, [40, 41])]
    assert ex.last_target_only


def test_windows_examples_exact(hand):
    ex = build_examples(hand, "windows", span_len=3, step=2, min_len=2)
    # u0: ends 6 and 4 -> [13 14 15], [11 12 13]; stepping back missed the start -> the head [10 11 12]
    assert spans(hand, ex) == [(0, [10, 11, 12]), (0, [11, 12, 13]), (0, [13, 14, 15]), (1, [20, 21]),
                               (3, [40, 41])]
    ex = build_examples(hand, "windows", span_len=3, step=1, min_len=1)
    assert spans(hand, ex) == [(0, [10, 11, 12]), (0, [11, 12, 13]), (0, [12, 13, 14]), (0, [13, 14, 15]),
                               (1, [20, 21]), (2, [30]), (3, [40, 41])]
    ex = build_examples(hand, "windows", span_len=3, step=3, min_len=1)     # ends 6, 3: the head is there
    assert spans(hand, ex)[:2] == [(0, [10, 11, 12]), (0, [13, 14, 15])]


def test_unknown_example_mode(hand):
    with pytest.raises(ValueError, match="sequence, prefix, windows"):
        build_examples(hand, "everything", 3)


@pytest.mark.parametrize("mode,span_len,step,min_len", [
    ("sequence", 6, 1, 2), ("prefix", 6, 1, 2), ("prefix", 51, 1, 2), ("windows", 5, 1, 1), ("windows", 5, 3, 1),
    ("windows", 7, 4, 2), ("windows", 100, 1, 1)])
def test_examples_match_naive_on_synthetic(synthetic_split, mode, span_len, step, min_len):
    ex = build_examples(synthetic_split, mode, span_len, step, min_len)
    assert spans(synthetic_split, ex) == naive_examples(synthetic_split, mode, span_len, step, min_len)


@needs_beauty
def test_beauty_example_counts(beauty_split):
    # SASRec (max_len 50): one example per prefix ending at the 2nd..last training item
    assert len(build_examples(beauty_split, "prefix", 51, min_len=2)) == 131_413
    # EMKD: windows of 15 stepping back by 1 (cloze spans, min_len 1)
    n = len(build_examples(beauty_split, "windows", 15, step=1, min_len=1))
    assert n == 43_793, f"EMKD windows on Beauty: {n} (expected 43,793)"


# ---------------------------------------------------------------------------------------------------------------
# batches


@pytest.mark.parametrize("mode", ["sequence", "prefix", "windows"])
def test_causal_batch_against_naive(synthetic_split, mode):
    split = synthetic_split
    ex = build_examples(split, mode, 8, 2, min_len=2)
    idx = np.random.default_rng(0).choice(len(ex), size=40, replace=False)
    b = causal_batch(split.data.items, ex, idx)
    rows = [split.data.items[ex.starts[i]:ex.starts[i] + ex.lengths[i]].tolist() for i in idx]
    width = max(len(r) for r in rows) - 1
    assert b.items.shape == b.targets.shape == (40, width)        # only as wide as the batch needs
    assert b.users is None                                        # training batches do not carry users
    assert b.targets_at == ("last" if mode == "prefix" else "every")
    expect_index, expect_items = [], []
    for r, row in enumerate(rows):
        inp, tgt = row[:-1], row[1:]
        if mode == "prefix":
            tgt = [0] * (len(inp) - 1) + [row[-1]]
        pad = width - len(inp)
        assert b.items[r].tolist() == inp + [0] * pad
        assert b.targets[r].tolist() == tgt + [0] * pad
        assert int(b.lengths[r]) == len(inp)
        expect_index += [r * width + t for t, y in enumerate(tgt) if y]
        expect_items += [y for y in tgt if y]
    # the static target description, built on the CPU with the batch (naive loop above as the reference)
    assert b.target_index.tolist() == expect_index and b.target_items.tolist() == expect_items


@pytest.mark.parametrize("mode", ["sequence", "prefix"])
def test_rounded_width_changes_only_padding(synthetic_split, mode):
    ex = build_examples(synthetic_split, mode, 21, min_len=2)
    idx = np.random.default_rng(1).choice(len(ex), size=30, replace=False)
    plain = causal_batch(synthetic_split.data.items, ex, idx)
    wide = causal_batch(synthetic_split.data.items, ex, idx, pad_multiple=8, max_len=20)
    w = plain.items.shape[1]
    assert wide.items.shape[1] == min(-(-w // 8) * 8, 20) >= w
    assert torch.equal(wide.items[:, :w], plain.items) and not wide.items[:, w:].any()
    assert torch.equal(wide.targets[:, :w], plain.targets)
    rows, cols = plain.target_index // w, plain.target_index % w
    assert torch.equal(wide.target_index, rows * wide.items.shape[1] + cols)
    assert torch.equal(wide.target_items, plain.target_items) and wide.targets_at == plain.targets_at


def test_prefix_batch_has_one_target_per_row(hand):
    ex = build_examples(hand, "prefix", span_len=3, min_len=2)
    b = causal_batch(hand.data.items, ex, np.arange(len(ex)))
    assert (b.targets != 0).sum(1).tolist() == [1] * len(ex)
    assert b.targets[torch.arange(len(ex)), b.lengths - 1].tolist() == [11, 12, 13, 14, 15, 21, 41]
    assert b.items.tolist()[0] == [10, 0]
    assert b.items.tolist()[1] == [10, 11]


def test_span_and_history_batches(hand):
    ex = build_examples(hand, "windows", span_len=3, step=1, min_len=1)
    b = span_batch(hand.data.items, ex, np.array([6, 0, 5]))       # [40 41], [10 11 12], [30]
    assert b.targets is None
    assert b.items.tolist() == [[40, 41, 0], [10, 11, 12], [30, 0, 0]]
    assert b.lengths.tolist() == [2, 3, 1]
    starts, lengths, _ = hand.eval_inputs("test")
    h = history_batch(hand.data.items, starts, lengths, max_len=4, users=hand.users("test"))
    assert h.items.tolist() == [[13, 14, 15, 16], [20, 21, 22, 0], [30, 31, 0, 0]]
    assert h.lengths.tolist() == [4, 3, 2]
    assert h.users.tolist() == [0, 1, 2]


def test_pad_slices_keep_last_and_width():
    flat = np.arange(1, 11)
    m, n = pad_slices(flat, np.array([0, 5]), np.array([5, 2]), keep_last=3, width=4)
    assert m.tolist() == [[3, 4, 5, 0], [6, 7, 0, 0]]
    assert n.tolist() == [3, 2]


def test_bucketing_keeps_batches_narrow(synthetic_split):
    ex = build_examples(synthetic_split, "prefix", 51, min_len=2)
    flat = synthetic_split.data.items

    def total_width(bucket):
        return sum(causal_batch(flat, ex, idx).items.shape[1] for idx in epoch_batches(ex.lengths, 32, 0, 1, bucket))

    narrow, wide = total_width(True), total_width(False)
    assert narrow < 0.6 * wide
    # each bucketed batch is as wide as its longest example needs
    for idx in epoch_batches(ex.lengths, 32, 0, 1, True):
        assert causal_batch(flat, ex, idx).items.shape[1] == ex.lengths[idx].max() - 1


# ---------------------------------------------------------------------------------------------------------------
# epoch order


def _flat(batches):
    return np.concatenate(batches)


@pytest.mark.parametrize("bucket", [True, False])
def test_epoch_batches_deterministic_and_complete(bucket):
    lengths = np.random.default_rng(1).integers(2, 40, size=1001)
    a = epoch_batches(lengths, 64, seed=7, epoch=3, bucket=bucket, bucket_factor=4)
    b = epoch_batches(lengths, 64, seed=7, epoch=3, bucket=bucket, bucket_factor=4)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert np.array_equal(np.sort(_flat(a)), np.arange(1001))          # every example exactly once
    assert len(a) == -(-1001 // 64) and max(len(x) for x in a) == 64
    other_epoch = epoch_batches(lengths, 64, seed=7, epoch=4, bucket=bucket, bucket_factor=4)
    other_seed = epoch_batches(lengths, 64, seed=8, epoch=3, bucket=bucket, bucket_factor=4)
    assert not np.array_equal(_flat(a), _flat(other_epoch))
    assert not np.array_equal(_flat(a), _flat(other_seed))


@pytest.mark.parametrize("world_size", [2, 3])
def test_epoch_batches_ddp_shards(world_size):
    lengths = np.random.default_rng(2).integers(2, 40, size=1000)
    full = epoch_batches(lengths, 50, seed=1, epoch=2)
    shards = [epoch_batches(lengths, 50, seed=1, epoch=2, rank=r, world_size=world_size) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1                           # equal batch counts on every rank
    seen = [set(_flat(s).tolist()) for s in shards]
    for i in range(world_size):
        for j in range(i + 1, world_size):
            assert not seen[i] & seen[j]                                 # disjoint
    union = set().union(*seen)
    assert union <= set(range(1000))
    assert len(full) - len(shards[0]) * world_size < world_size         # at most world_size - 1 batches dropped
    # the ranks take interleaved batches of the same shuffled epoch
    for r, s in enumerate(shards):
        for k, idx in enumerate(s):
            assert np.array_equal(idx, full[r + k * world_size])


def test_next_item_split_hand_example():
    span = torch.tensor([[5, 6, 7, 8], [3, 4, 0, 0], [9, 0, 0, 0]])
    inputs, in_len, targets = next_item_split(span[:2], torch.tensor([4, 2]))
    assert inputs.tolist() == [[5, 6, 7], [3, 0, 0]]       # the span's last item is only a target
    assert in_len.tolist() == [3, 1]
    assert targets.tolist() == [[6, 7, 8], [4, 0, 0]]
    assert span[0].tolist() == [5, 6, 7, 8]                  # the input spans are not modified
