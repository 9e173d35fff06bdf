"""The item-to-item transition matrix of MQSA-TED, from training sequences only, kept sparse.

C[a, b] = number of times item b directly follows item a in the (cut) training sequences (directed raw counts,
time span 1). Rows/columns are item ids (0 = padding, always empty), shape [n_items + 1, n_items + 1].
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def transition_matrix(flat: np.ndarray, offsets: np.ndarray, n_items: int, last: int | None = None,
                      dtype=np.float32) -> sp.csr_matrix:
    """Sparse [n_items + 1, n_items + 1] counts of consecutive pairs (s_n, s_{n+1}) within each sequence
    flat[offsets[u]:offsets[u+1]], each sequence first cut to its `last` most recent items (None / 0: all)."""
    flat = np.asarray(flat, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    total = int(offsets[-1]) if len(offsets) else 0
    if total < 2:
        return sp.csr_matrix((n_items + 1, n_items + 1), dtype=dtype)
    seq = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(total) - offsets[seq]
    first = np.maximum(lengths - last, 0) if last else np.zeros_like(lengths)
    p = np.arange(total - 1)
    valid = (seq[p] == seq[p + 1]) & (pos[p] >= first[seq[p]])
    src, dst = flat[p[valid]], flat[p[valid] + 1]
    c = sp.csr_matrix((np.ones(len(src), dtype=dtype), (src, dst)), shape=(n_items + 1, n_items + 1))
    c.sum_duplicates()
    return c


def split_transition_matrix(split, last: int | None = None) -> sp.csr_matrix:
    """Transition counts of a Split's training items only (validation and test targets never enter)."""
    flat, offsets = split.train_sequences_csr()
    return transition_matrix(flat, offsets, split.n_items, last)
