"""In-memory interaction data and its splits: leave-one-out and the global temporal split.

All users' chronological item sequences are kept in one flat int64 array with offsets (CSR), so that every slice
the library needs (a training span, an evaluation history) is a contiguous range and batches are built with numpy
fancy indexing instead of Python loops over users. Item ids are 1..n_items; 0 is padding. The ids of the file
(original ids) are kept in two vocabularies (seqrec.data.vocab): `item_vocab` (internal item id i <-> original) and
`user_vocab` (user row u has internal id u + 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seqrec.data.vocab import Vocabulary
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
    items: np.ndarray                 # flat int64 internal item ids 1..n_items
    offsets: np.ndarray               # [n_users + 1]
    item_vocab: Vocabulary            # original id of each internal item id; n_items = len(item_vocab)
    user_vocab: Vocabulary            # original id of each user row (row u = internal user id u + 1)
    attributes: ItemAttributes | None = None
    source: str = ""
    times: np.ndarray | None = None   # float64 timestamp of each entry of `items` (None: the source has none)

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_items(self) -> int:
        """Number of internal item ids (1..n_items); for S3-Rec files the largest item id, gaps included."""
        return len(self.item_vocab)

    @property
    def user_ids(self) -> np.ndarray:
        """Original user id of each row (int64 or str objects)."""
        return self.user_vocab.originals

    def fingerprint(self) -> dict:
        """What identifies the data a model was trained on: counts and a hash of the item vocabulary (stored in
        checkpoints; `same_data` compares two)."""
        return {"name": self.name, "n_users": self.n_users, "n_items": self.n_items,
                "n_interactions": int(len(self.items)), "item_vocab": self.item_vocab.fingerprint()}

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, u: int) -> np.ndarray:
        return self.items[self.offsets[u]: self.offsets[u + 1]]

    @classmethod
    def from_events(cls, users, items, times=None, name: str = "events", k_core: int = 0,
                    source: str = "") -> "InteractionData":
        """From an event log, one row per interaction: original user and item ids (str or int), optional
        timestamps (each user's events are stably sorted by them; None keeps the given order), optional k-core
        filter. Ids are remapped to 1..n in order of first appearance; the originals go to item_vocab / user_vocab
        (see seqrec.data.readers.build_from_rows, which the file readers use too)."""
        from seqrec.data.readers import build_from_rows     # readers build on this module
        return build_from_rows(users, items, times, k_core, name=name, source=source)

    @classmethod
    def from_sequences(cls, name: str, sequences: list, user_ids=None, n_items: int | None = None,
                       attributes: ItemAttributes | None = None, source: str = "",
                       times: list | None = None) -> "InteractionData":
        """times: optional per-user timestamp sequences, parallel to `sequences` (each non-decreasing)."""
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        items = (np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])
                 if len(sequences) else np.zeros(0, dtype=np.int64))
        user_vocab = (Vocabulary.identity(len(sequences), "user") if user_ids is None
                      else Vocabulary.from_values(user_ids, "user"))
        if n_items is None:
            n_items = int(items.max()) if len(items) else 0
        flat_times = None
        if times is not None:
            flat_times = (np.concatenate([np.asarray(t, dtype=np.float64) for t in times])
                          if len(times) else np.zeros(0, dtype=np.float64))
            if len(flat_times) != len(items):
                raise ValueError(f"times: {len(flat_times)} timestamps for {len(items)} items; expected one per item")
        return cls(name, items, offsets, Vocabulary.identity(int(n_items)), user_vocab, attributes, source,
                   flat_times)


@dataclass
class EvalTargets:
    """The users evaluated on one part of a split ('valid' or 'test') and where their targets are.

    Row users[i]'s target is data.items[data.offsets[u] + history_length[i]] and its history is every item
    before it, data.items[data.offsets[u]: data.offsets[u] + history_length[i]] (at least one item)."""
    users: np.ndarray            # row indices into the InteractionData, increasing
    history_length: np.ndarray   # [len(users)] items before the target


@dataclass
class Split:
    """Training items and evaluation targets over an InteractionData (docs/protocol.md, "Split").

    Made by `leave_one_out` or `temporal_split`. Every user's training items are the contiguous range
    data.items[train_start[u]: train_start[u] + train_length[u]] (a prefix of its sequence, possibly empty);
    `valid` and `test` say which users are evaluated and where their targets are (the two user sets are equal
    under leave-one-out, not under the temporal split).
    """
    data: InteractionData
    train_start: np.ndarray    # [n_users] start of each user's training items in data.items
    train_length: np.ndarray   # [n_users]
    valid: EvalTargets
    test: EvalTargets
    protocol: dict = field(default_factory=dict)
    """What every result records about the split (`protocol` of result.json): 'split' (leave-one-out | temporal)
    and the method's own counts and cut points."""
    note: str = ""
    """One line for the person running it (users not evaluated and why); empty when there is nothing to say."""

    @property
    def n_items(self) -> int:
        return self.data.n_items

    def targets(self, which: str) -> EvalTargets:
        if which not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {which!r}")
        return self.valid if which == "valid" else self.test

    def users(self, which: str) -> np.ndarray:
        """Rows evaluated on 'valid' or 'test', in the order of `eval_inputs`."""
        return self.targets(which).users

    def eval_inputs(self, which: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(history_start, history_length, target) per user of `users(which)` for 'valid' or 'test'."""
        t = self.targets(which)
        start = self.data.offsets[t.users]
        return start, t.history_length, self.data.items[start + t.history_length]

    def train_sequences_csr(self) -> tuple[np.ndarray, np.ndarray]:
        """(flat training items, offsets) of all users, e.g. for a transition matrix built on training data only."""
        lengths = self.train_length
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        idx = np.repeat(self.train_start - offsets[:-1], lengths) + np.arange(offsets[-1])
        return self.data.items[idx], offsets


def leave_one_out(data: InteractionData, short_users: str = "train_only") -> Split:
    """Split every user's sequence by position (docs/protocol.md).

    For user u with items s (length n): train = s[:-2], validation target s[-2] with input s[:-2], test target
    s[-1] with input s[:-1]. Users shorter than 3 are handled by `short_users`: kept for training only
    ('train_only': all their items are training items, they are not evaluated), 'drop'ped, or an 'error'.
    """
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
    note = ""
    if n_short:
        note = (f"note: {n_short} users have fewer than 3 interactions and are not evaluated "
                f"(data.short_users={short_users}: "
                f"{'their items are used for training' if short_users == 'train_only' else 'dropped'})")
    return Split(data, start, train_len,
                 valid=EvalTargets(eval_users, lengths[eval_users] - 2),
                 test=EvalTargets(eval_users, lengths[eval_users] - 1),
                 protocol={"split": "leave-one-out", "short_users": n_short, "short_users_policy": short_users},
                 note=note)


def temporal_split(data: InteractionData, valid_cut: float | None = None, test_cut: float | None = None,
                   valid_quantile: float = 0.8, test_quantile: float = 0.9) -> Split:
    """Global temporal split at two points in time (docs/protocol.md, "Temporal split").

    valid_cut, test_cut: the cuts as timestamps (the data's unit); a cut left None is the given quantile of all
        interaction times (numpy's linearly interpolated quantile). The validation cut must be before the test cut.
    An interaction at time t is before a cut when t < cut. Training items: every interaction before valid_cut.
    Validation target of a user: its first interaction with valid_cut <= t < test_cut; test target: its first
    interaction with t >= test_cut; the history of a target is everything the user did before it (for test, the
    validation period included). A user with a target but no interaction before it is not evaluated on that part
    (counted as `*_users_without_history`). Each user's times must be non-decreasing (the readers sort them).
    """
    where = data.source or data.name
    if data.times is None:
        raise DataError(f"{where}: data.split=temporal needs interaction timestamps and this data has none "
                        f"(S3-Rec text files and the synthetic data have none); use a table with data.time_col, "
                        f"or data.split=loo")
    if data.n_users == 0 or len(data.items) == 0:
        raise DataError(f"{where}: no interactions")
    cut_info = {}
    if valid_cut is None:
        valid_cut, cut_info["valid_time_quantile"] = float(np.quantile(data.times, valid_quantile)), valid_quantile
    if test_cut is None:
        test_cut, cut_info["test_time_quantile"] = float(np.quantile(data.times, test_quantile)), test_quantile
    if not valid_cut < test_cut:
        raise DataError(f"{where}: the validation cut {valid_cut!r} is not before the test cut {test_cut!r}; "
                        f"expected data.valid_time(_quantile) < data.test_time(_quantile)")
    times, offsets = data.times, data.offsets
    span = f"timestamps {float(times.min())!r}..{float(times.max())!r}"
    rows = np.repeat(np.arange(data.n_users), data.lengths)
    backwards = np.flatnonzero((np.diff(times) < 0) & (rows[1:] == rows[:-1]))
    if len(backwards):
        u = int(rows[backwards[0]])
        raise DataError(f"{where}: user {data.user_ids[u]}: timestamps go backwards at position "
                        f"{int(backwards[0] + 1 - offsets[u]) + 1}; a user's interactions must be in time order")
    # items before a cut form a prefix of each user's sequence: count them per user
    n_before_valid = np.bincount(rows[times < valid_cut], minlength=data.n_users)
    n_before_test = np.bincount(rows[times < test_cut], minlength=data.n_users)
    lengths = data.lengths
    has_valid = n_before_test > n_before_valid          # some interaction in [valid_cut, test_cut)
    has_test = lengths > n_before_test                  # some interaction at or after test_cut
    valid_users = np.flatnonzero(has_valid & (n_before_valid > 0))
    test_users = np.flatnonzero(has_test & (n_before_test > 0))
    train_length = n_before_valid
    protocol = {"split": "temporal", **cut_info, "valid_cut": valid_cut, "test_cut": test_cut,
                "train_interactions": int(train_length.sum()),
                "valid_users": len(valid_users), "test_users": len(test_users),
                "valid_users_without_history": int((has_valid & (n_before_valid == 0)).sum()),
                "test_users_without_history": int((has_test & (n_before_test == 0)).sum())}
    if protocol["train_interactions"] == 0:
        raise DataError(f"{where}: no interaction is before the validation cut {valid_cut!r} ({span}); "
                        f"move data.valid_time(_quantile) later")
    for part, users in (("validation", valid_users), ("test", test_users)):
        if len(users) == 0:
            raise DataError(f"{where}: no user has a {part} target with an earlier interaction (cuts "
                            f"{valid_cut!r} and {test_cut!r}, {span}); move data.valid_time(_quantile) / "
                            f"data.test_time(_quantile)")
    note = ""
    skipped = protocol["valid_users_without_history"] + protocol["test_users_without_history"]
    if skipped:
        note = (f"note: temporal split: {protocol['valid_users_without_history']} validation and "
                f"{protocol['test_users_without_history']} test users have no interaction before their target "
                f"and are not evaluated")
    return Split(data, offsets[:-1].copy(), train_length,
                 valid=EvalTargets(valid_users, n_before_valid[valid_users]),
                 test=EvalTargets(test_users, n_before_test[test_users]),
                 protocol=protocol, note=note)
