"""Shared losses against naive references: the item cross entropy at target positions (whole and in recomputed
chunks) and the chunked log-partition."""
from __future__ import annotations

import math

import pytest
import torch

from seqrec.data.batch import Batch
from seqrec.losses import chunked_logsumexp, item_cross_entropy, rows_at


def naive_ce(hidden, targets, emb, padding_class=False):
    """Per target position: -log softmax over items 1..n (padding_class: over ids 0..n), by a Python loop; mean
    over positions."""
    first = 0 if padding_class else 1
    vals = []
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            y = int(targets[b, t])
            if y > 0:
                s = hidden[b, t].double() @ emb[first:].double().T
                vals.append(torch.logsumexp(s, 0) - s[y - first])
    return torch.stack(vals).mean()


@pytest.mark.parametrize("padding_class", [False, True])
@pytest.mark.parametrize("chunk", [0, 1, 4, 7, 1000])
def test_item_cross_entropy_at_batch_targets_matches_loop_in_any_chunking(chunk, padding_class):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 6, generator=g, requires_grad=True)
    emb = torch.randn(10, 6, generator=g, requires_grad=True)      # row 0 = padding, a class only if padding_class
    targets = torch.tensor([[1, 0, 9, 3, 0], [0, 0, 0, 0, 2], [4, 4, 5, 6, 7]])
    batch = Batch(torch.zeros(3, 5, dtype=torch.long), torch.full((3,), 5), targets)    # describes the targets
    got = item_cross_entropy(rows_at(hidden, batch.target_index), batch.target_items, lambda h: h @ emb.T,
                             chunk_rows=chunk, padding_class=padding_class)
    ref = naive_ce(hidden, targets, emb, padding_class)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(got, (hidden, emb))
    for a, b in zip(grads, torch.autograd.grad(ref, (hidden, emb))):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-6)
    # the padding row is trained by the CE exactly when it is a class
    assert bool(grads[1][0].abs().sum() > 0) == padding_class


def test_cross_entropy_without_targets_is_zero_with_a_graph():
    hidden = torch.randn(2, 3, 4, requires_grad=True)
    index = torch.zeros(0, dtype=torch.long)
    loss = item_cross_entropy(rows_at(hidden, index), index, lambda h: h @ torch.ones(5, 4).T, 2)
    assert loss.item() == 0.0 and loss.requires_grad


@pytest.mark.parametrize("chunk", [0, 3, 50])
def test_chunked_logsumexp_matches_direct(chunk):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(10, 4, generator=g, requires_grad=True)
    k = torch.randn(8, 4, generator=g, requires_grad=True)
    got = chunked_logsumexp(q, k, chunk)
    ref = torch.tensor([math.log(sum(math.exp(float(q[i] @ k[j])) for j in range(8))) for i in range(10)])
    torch.testing.assert_close(got.double(), ref.double(), rtol=1e-5, atol=1e-5)
    g1 = torch.autograd.grad(got.sum(), (q, k))
    g2 = torch.autograd.grad(torch.logsumexp(q @ k.T, 1).sum(), (q, k))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
