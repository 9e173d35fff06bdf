"""Invariants of the vectorised crop / mask / reorder augmentations (seqrec.data.augment)."""
import math
from collections import Counter

import torch

from seqrec.data.augment import CROP, MASK, REORDER, crop, draw_operator_pairs, mask, reorder, two_views


def random_batch(seed=0, b=64, t=20):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0], lengths[1], lengths[2] = 1, 2, t
    # distinct items per row (1..t per row, shuffled) so positions can be traced
    items = torch.zeros(b, t, dtype=torch.long)
    for i in range(b):
        n = int(lengths[i])
        items[i, :n] = torch.randperm(100, generator=g)[:n] + 1
    return items, lengths


def rows(items, lengths):
    return [items[i, :int(lengths[i])].tolist() for i in range(items.shape[0])]


def test_crop_is_a_contiguous_window_left_aligned():
    items, lengths = random_batch(1)
    out, new_len = crop(items, lengths, 0.5, generator=torch.Generator().manual_seed(3))
    for i, (orig, l) in enumerate(zip(rows(items, lengths), lengths.tolist())):
        k = max(1, math.floor(0.5 * l))
        assert new_len[i] == k
        got = out[i, :k].tolist()
        assert all(x != 0 for x in got)
        assert (out[i, k:] == 0).all()
        # got occurs as a contiguous window of the original
        assert any(orig[s:s + k] == got for s in range(l - k + 1)), (orig, got)


def test_crop_start_covers_all_windows():
    items = torch.arange(1, 11)[None].repeat(2000, 1)
    lengths = torch.full((2000,), 10)
    out, _ = crop(items, lengths, 0.5, generator=torch.Generator().manual_seed(0))
    starts = Counter((out[:, 0] - 1).tolist())
    assert set(starts) == set(range(6))          # windows of 5 in 10 items: starts 0..5, all used
    assert min(starts.values()) > 2000 / 6 * 0.7


def test_mask_zeroes_exactly_floor_half_real_positions():
    items, lengths = random_batch(2)
    out, new_len = mask(items, lengths, 0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(new_len, lengths)
    for i in range(items.shape[0]):
        l = int(lengths[i])
        changed = (out[i] != items[i]).nonzero().flatten().tolist()
        assert len(changed) == math.floor(0.5 * l)
        assert all(p < l for p in changed)
        assert (out[i, changed] == 0).all()
        assert (out[i, l:] == 0).all()


def test_reorder_permutes_one_contiguous_span_only():
    items, lengths = random_batch(3)
    out, new_len = reorder(items, lengths, 0.8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(new_len, lengths)
    n_changed_rows = 0
    for i in range(items.shape[0]):
        l = int(lengths[i])
        a, b = items[i, :l].tolist(), out[i, :l].tolist()
        assert sorted(a) == sorted(b)                           # multiset preserved
        assert (out[i, l:] == 0).all()
        n = math.floor(0.8 * l)
        diff = [p for p in range(l) if a[p] != b[p]]
        if diff:
            n_changed_rows += 1
            lo, hi = diff[0], diff[-1]
            assert hi - lo + 1 <= n                             # changes fit in one span of n
            assert sorted(a[lo:hi + 1]) == sorted(b[lo:hi + 1])  # a permutation inside it
    assert n_changed_rows > items.shape[0] // 2


def test_reorder_permutation_is_uniform_over_the_span():
    items = torch.tensor([[1, 2, 3]]).repeat(6000, 1)
    lengths = torch.full((6000,), 3)
    out, _ = reorder(items, lengths, 1.0, generator=torch.Generator().manual_seed(0))
    counts = Counter(tuple(r) for r in out.tolist())
    assert len(counts) == 6 and min(counts.values()) > 1000 * 0.85


def test_length_one_unchanged_by_every_operator():
    items = torch.tensor([[7, 0, 0], [9, 0, 0]])
    lengths = torch.tensor([1, 1])
    for op in (crop, mask, reorder):
        out, ln = op(items, lengths, 0.9 if op is not crop else 0.1)
        assert torch.equal(out[:, :1], items[:, :1]) and torch.equal(ln, lengths)
    i1, l1, i2, l2, _ = two_views(items, lengths)
    assert torch.equal(i1[:, 0], items[:, 0]) and torch.equal(i2[:, 0], items[:, 0])
    assert torch.equal(l1, lengths) and torch.equal(l2, lengths)


def test_two_views_use_two_different_operators_matching_their_outputs():
    items, lengths = random_batch(4, b=300)
    ops = draw_operator_pairs(300, generator=torch.Generator().manual_seed(0))
    assert (ops[:, 0] != ops[:, 1]).all()
    assert set(map(tuple, ops.tolist())) == {(a, b) for a in range(3) for b in range(3) if a != b}
    torch.manual_seed(1)
    i1, l1, i2, l2, ops = two_views(items, lengths)
    assert (ops[:, 0] != ops[:, 1]).all()
    for v, (it, ln) in enumerate(((i1, l1), (i2, l2))):
        assert it.shape[1] == int(ln.max())
        for i in range(300):
            l, nl = int(lengths[i]), int(ln[i])
            if l == 1:
                continue
            orig, got = items[i, :l].tolist(), it[i, :nl].tolist()
            op = int(ops[i, v])
            if op == CROP:
                assert nl == max(1, l // 2) and any(orig[s:s + nl] == got for s in range(l - nl + 1))
            elif op == MASK:
                assert nl == l and sum(x == 0 for x in got) == l // 2
            else:
                assert op == REORDER and nl == l and sorted(got) == sorted(orig) and 0 not in got


def test_global_rng_makes_views_reproducible():
    items, lengths = random_batch(5)
    torch.manual_seed(11)
    a = two_views(items, lengths)
    torch.manual_seed(11)
    b = two_views(items, lengths)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
