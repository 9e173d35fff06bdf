"""In-memory interaction data and the leave-one-out split.

All users' chronological item sequences are kept in one flat int64 array with offsets (CSR), so that every slice
the library needs (a training span, an evaluation history) is a contiguous range and batches are built with numpy
fancy indexing instead of Python loops over users. Item ids are 1..n_items; 0 is padding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seqrec.errors import DataError


@dataclass
class ItemAttributes:
    """Multi-hot item attributes in CSR form: attributes of item i are ids[offsets[i]:offsets[i+1]] (1-based)."""
    offsets: np.ndarray  # [n_items + 2]: rows 0 (padding) .. n_items + 1 (a [MASK] token has none)
    ids: np.ndarray
    n_attributes: int    # largest attribute id

    def dense(self, n_rows: int | None = None) -> np.ndarray:
        """Multi-hot matrix [rows, n_attributes + 1] (column 0 unused)."""
        n_rows = n_rows or len(self.offsets) - 1
        out = np.zeros((n_rows, self.n_attributes + 1), dtype=np.float32)
        counts = np.diff(self.offsets)[:n_rows]
        rows = np.repeat(np.arange(n_rows), counts)
        out[rows, self.ids[: self.offsets[n_rows]]] = 1.0
        return out


@dataclass
class InteractionData:
    """Users' item sequences in chronological order (CSR), plus optional item attributes."""
    name: str
    items: np.ndarray                 # flat int64 item ids
    offsets: np.ndarray               # [n_users + 1]
    user_ids: np.ndarray              # original user id of each row
    n_items: int                      # largest item id (ids are 1..n_items)
    attributes: ItemAttributes | None = None
    source: str = ""

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, u: int) -> np.ndarray:
        return self.items[self.offsets[u]: self.offsets[u + 1]]

    @classmethod
    def from_sequences(cls, name: str, sequences: list, user_ids=None, n_items: int | None = None,
                       attributes: ItemAttributes | None = None, source: str = "") -> "InteractionData":
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        items = (np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
                 if len(sequences) else np.zeros(0, dtype=np.int64))
        if user_ids is None:
            user_ids = np.arange(1, len(sequences) + 1, dtype=np.int64)
        if n_items is None:
            n_items = int(items.max()) if len(items) else 0
        return cls(name, items, offsets, np.asarray(user_ids, dtype=np.int64), int(n_items), attributes, source)


@dataclass
class Split:
    """Leave-one-out split over an InteractionData (see docs/protocol.md).

    For user u with items s (length n): train = s[:-2], validation target s[-2] with input s[:-2], test target
    s[-1] with input s[:-1]. Users shorter than 3 are handled by `short_users`: kept for training only
    ('train_only': all their items are training items, they are not evaluated) or dropped.
    """
    data: InteractionData
    train_start: np.ndarray    # [n_users] start of each user's training items in data.items
    train_length: np.ndarray   # [n_users]
    eval_users: np.ndarray     # users with a validation and a test target
    n_short_users: int = 0     # users with fewer than 3 items (not evaluated)
    short_policy: str = "train_only"

    @property
    def n_items(self) -> int:
        return self.data.n_items

    def eval_inputs(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(history_start, history_length, target) per evaluated user for 'valid' or 'test'."""
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        u = self.eval_users
        start = self.data.offsets[u]
        length = self.data.lengths[u] - (2 if split == "valid" else 1)
        target = self.data.items[start + length]
        return start, length, target

    def train_sequences_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """(flat training items, offsets) of all users, e.g. for a transition matrix built on training data only."""
        lengths = self.train_length
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        idx = np.repeat(self.train_start - offsets[:-1], lengths) + np.arange(offsets[-1])
        return self.data.items[idx], offsets


def leave_one_out(data: InteractionData, short_users: str = "train_only") -> Split:
    """Split every user's sequence into train / valid / test by position (PROTOCOL.md)."""
    if data.n_users == 0:
        raise DataError(f"{data.source or data.name}: no users")
    lengths = data.lengths
    short = lengths < 3
    n_short = int(short.sum())
    if n_short and short_users == "error":
        first = int(np.flatnonzero(short)[0])
        raise DataError(
            f"{data.source or data.name}: {n_short} users have fewer than 3 interactions (first: user "
            f"{data.user_ids[first]} with {lengths[first]}); they cannot be split into train/valid/test. "
            f"Set data.short_users to 'drop' or 'train_only'")
    start = data.offsets[:-1].copy()
    train_len = np.where(short, lengths, lengths - 2)
    if short_users == "drop":
        train_len = np.where(short, 0, train_len)
    eval_users = np.flatnonzero(~short)
    if len(eval_users) == 0:
        raise DataError(f"{data.source or data.name}: no user has the 3 interactions needed for a split")
    return Split(data, start, train_len, eval_users, n_short, short_users)
