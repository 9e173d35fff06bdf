"""Vocabularies: the ids people use (a file's item and user ids) <-> the internal ids 1..n models use.

Models, batches and evaluation work on contiguous internal ids (0 is padding); files, the command line, the Python
API and the server speak original ids. A `Vocabulary` is the one place that translates between the two:

    vocab = Vocabulary.from_values(["b7", "a3", "c1"], kind="item")   # internal ids 1, 2, 3 in this order
    vocab.encode(["c1", "b7"])           # array([3, 1])
    vocab.decode(np.array([2, 3]))       # array(['a3', 'c1'], dtype=object)

Originals are either all integers (int64) or all strings. `from_values` makes them integers when every value is an
int or a canonical integer string ('12'; not '012' or '+12', so that tokens a file writes differently stay
different), else strings. An id that is not in the vocabulary is an error that names it, or is dropped with a
warning (`unknown="skip"`); it is never mapped to another id.

Datasets whose ids already are 1..n (S3-Rec files, the synthetic data) use `Vocabulary.identity(n)`, stored in a
checkpoint as just n.
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable

import numpy as np
import torch

from seqrec.errors import SeqrecError, SeqrecWarning

UNKNOWN_POLICIES = ("error", "skip")


def _canonical_int(value) -> int | None:
    """value as an int when it is an integer or a canonical integer string ('12', '-3'), else None."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, str):
        digits = value[1:] if value.startswith("-") else value
        if digits.isascii() and digits.isdigit() and str(int(value)) == value:
            return int(value)
    return None


class Vocabulary:
    """Original ids of internal ids 1..n: `originals[i - 1]` is the original id of internal id i.

    originals: int64 array, or object array of str; unique. kind: 'item' or 'user', used in messages.
    """

    def __init__(self, originals: np.ndarray, kind: str = "item"):
        self.kind = kind
        self._n_identity: int | None = None     # set by `identity`: no array is kept (n may be a sparse file's 3e9)
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None   # int ids: (sorted originals, their positions)
        self._index: dict[str, int] | None = None                   # str ids: {original: internal id}
        self._identity: bool | None = None
        originals = np.asarray(originals)
        if originals.dtype.kind in "iu":
            originals = originals.astype(np.int64, copy=False)
        elif originals.dtype == object and all(isinstance(v, str) for v in originals.tolist()):
            pass
        elif originals.dtype.kind == "U":
            originals = originals.astype(object)
        else:
            raise ValueError(f"{kind} vocabulary: originals must be all integers or all strings, got {originals.dtype}")
        if originals.ndim != 1:
            raise ValueError(f"{kind} vocabulary: expected a 1-d array of ids")
        self._originals = originals
        self._check_unique()

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_values(cls, values: Iterable, kind: str = "item") -> "Vocabulary":
        """Vocabulary of distinct values, numbered 1..n in the given order: integers when every value is an int or
        a canonical integer string, else strings."""
        values = list(values)
        ints = [_canonical_int(v) for v in values]
        if all(i is not None for i in ints):
            try:
                return cls(np.asarray(ints, dtype=np.int64), kind)
            except OverflowError:      # an integer beyond int64: keep it as a string
                pass
        return cls(np.asarray([str(v) for v in values], dtype=object), kind)

    @classmethod
    def identity(cls, n: int, kind: str = "item") -> "Vocabulary":
        """Original id i is internal id i, for i in 1..n (data whose ids already are 1..n)."""
        vocab = cls(np.zeros(0, dtype=np.int64), kind)
        vocab._originals, vocab._n_identity, vocab._identity = None, int(n), True
        return vocab

    def _check_unique(self) -> None:
        if self.is_str:
            if len(set(self.originals.tolist())) != len(self):
                seen: set = set()
                dup = next(v for v in self.originals.tolist() if v in seen or seen.add(v))
                raise SeqrecError(f"{self.kind} vocabulary: id {dup!r} occurs twice; expected distinct ids")
        elif len(self) > 1:
            s, _ = self._sorted_index()
            same = np.flatnonzero(s[1:] == s[:-1])
            if len(same):
                raise SeqrecError(f"{self.kind} vocabulary: id {int(s[same[0]])} occurs twice; expected distinct ids")

    # -- properties -----------------------------------------------------------------------------------------
    @property
    def originals(self) -> np.ndarray:
        """originals[i - 1] is the original id of internal id i (int64, or object array of str)."""
        if self._originals is None:         # an identity vocabulary: made when asked for
            self._originals = np.arange(1, self._n_identity + 1, dtype=np.int64)
        return self._originals

    def __len__(self) -> int:
        return self._n_identity if self._n_identity is not None else len(self._originals)

    def __repr__(self) -> str:
        if self.is_identity:
            return f"Vocabulary.identity({len(self)}, kind={self.kind!r})"
        head = ", ".join(repr(v) for v in self.originals[:3].tolist()) + (", ..." if len(self) > 3 else "")
        return f"Vocabulary([{head}], n={len(self)}, kind={self.kind!r})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, Vocabulary) or len(self) != len(other) or self.is_str != other.is_str:
            return False
        return (self.is_identity and other.is_identity) or bool(np.all(self.originals == other.originals))

    @property
    def is_str(self) -> bool:
        return self._originals is not None and self._originals.dtype == object

    @property
    def is_identity(self) -> bool:
        """True when original id i is internal id i for every i (ids already 1..n)."""
        if self._identity is None:
            n = len(self)
            self._identity = (not self.is_str and (n == 0 or (int(self.originals[0]) == 1 and
                              int(self.originals[-1]) == n and bool(np.all(np.diff(self.originals) == 1)))))
        return self._identity

    # -- translation ----------------------------------------------------------------------------------------
    def _sorted_index(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sorted is None:
            order = np.argsort(self.originals, kind="stable")
            self._sorted = (self.originals[order], order)
        return self._sorted

    def _str_index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {v: i for i, v in enumerate(self.originals.tolist(), start=1)}
        return self._index

    def encode(self, ids, unknown: str = "error", source: str = "") -> np.ndarray:
        """Internal ids (int64) of original ids, in order.

        ids: a sequence or array of original ids (for an integer vocabulary, ints or canonical integer strings
            such as '1004'; for a string vocabulary, strings, ints are compared as their decimal text).
        unknown: 'error' raises a SeqrecError naming the first unknown id (and `source`, e.g. '--history');
            'skip' drops unknown ids with a SeqrecWarning naming them.
        source: where the ids came from, for messages.
        """
        if unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown={unknown!r}; expected one of {UNKNOWN_POLICIES}")
        if not isinstance(ids, np.ndarray):
            ids = list(ids)
        internal, known = self.lookup(ids)
        if not known.all():
            self.report_unknown([ids[i] for i in np.flatnonzero(~known)], unknown, source)
            internal = internal[known]
        return internal

    def report_unknown(self, bad: list, unknown: str, source: str = "") -> None:
        """Raise the SeqrecError for unknown ids (unknown='error': names the first) or warn that they were skipped
        (unknown='skip': names up to five)."""
        where = f"{source}: " if source else ""
        if unknown == "error":
            more = f" (and {len(bad) - 1} more unknown)" if len(bad) > 1 else ""
            raise SeqrecError(f"{where}unknown {self.kind} id {_plain(bad[0])!r}{more}; not one of the "
                              f"{len(self):,} {self.kind}s of the data the model was trained on")
        shown = ", ".join(repr(_plain(b)) for b in bad[:5]) + (", ..." if len(bad) > 5 else "")
        warnings.warn(SeqrecWarning(f"{where}skipped {len(bad)} unknown {self.kind} id(s): {shown}"), stacklevel=3)

    def lookup(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(internal id, or 0 for an unknown id; known?) of each original id, without any message (see `encode`)."""
        if self.is_str:
            index = self._str_index()
            if isinstance(ids, np.ndarray):
                ids = ids.tolist()
            internal = np.fromiter((index.get(_as_str(v), 0) for v in ids), dtype=np.int64)
            return internal, internal > 0
        if isinstance(ids, np.ndarray) and ids.dtype.kind in "iu":
            values = ids.astype(np.int64, copy=False).ravel()
            valid = np.ones(len(values), dtype=bool)
            if ids.dtype == np.uint64:      # values beyond int64 wrapped around: unknown
                valid = ids.ravel() <= np.iinfo(np.int64).max
        else:
            ints = [_canonical_int(v) for v in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
            valid = np.fromiter((i is not None and -2**63 <= i < 2**63 for i in ints), dtype=bool, count=len(ints))
            values = np.fromiter((i if ok else 0 for i, ok in zip(ints, valid)), dtype=np.int64, count=len(ints))
        if self.is_identity:
            known = valid & (values >= 1) & (values <= len(self))
            return np.where(known, values, 0), known
        s, order = self._sorted_index()
        pos = np.minimum(np.searchsorted(s, values), max(len(s) - 1, 0))
        known = valid & (s[pos] == values) if len(s) else np.zeros(len(values), dtype=bool)
        return np.where(known, order[pos] + 1, 0), known

    def decode(self, internal) -> np.ndarray:
        """Original ids of internal ids (any shape): int64 array, or object array of str."""
        internal = np.asarray(internal, dtype=np.int64)
        if internal.size and (internal.min() < 1 or internal.max() > len(self)):
            raise ValueError(f"internal {self.kind} ids must be in 1..{len(self)}, got "
                             f"{int(internal.min())}..{int(internal.max())}")
        return internal.copy() if self.is_identity else self.originals[internal - 1]

    # -- storage --------------------------------------------------------------------------------------------
    def to_plain(self) -> dict:
        """Plain data for a checkpoint (loadable with torch.load(weights_only=True)): n for an identity vocabulary,
        an int64 tensor, or strings as one UTF-8 byte tensor + lengths (a list of a million str loads 100x slower)."""
        if self.is_identity:
            return {"kind": self.kind, "identity": len(self)}
        if self.is_str:
            encoded = [v.encode("utf-8", "surrogatepass") for v in self.originals.tolist()]
            utf8 = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
            return {"kind": self.kind, "utf8": torch.from_numpy(utf8),
                    "lengths": torch.tensor(list(map(len, encoded)), dtype=torch.int64)}
        return {"kind": self.kind, "int64": torch.from_numpy(np.ascontiguousarray(self.originals))}

    @classmethod
    def from_plain(cls, d: dict) -> "Vocabulary":
        kind = d.get("kind", "item")
        if "identity" in d:
            return cls.identity(int(d["identity"]), kind)
        if "utf8" in d:
            data = d["utf8"].numpy().tobytes()
            ends = np.cumsum(d["lengths"].numpy()).tolist()
            starts = [0] + ends[:-1]
            strings = [data[a:b].decode("utf-8", "surrogatepass") for a, b in zip(starts, ends)]
            return cls(np.asarray(strings, dtype=object), kind)
        return cls(np.asarray(d["int64"]), kind)

    def fingerprint(self) -> str:
        """A stable hash (16 hex digits of SHA-256) of the ids and their order: the same on every machine and
        run, different when any id, the order (hence the internal ids) or the id type differs."""
        h = hashlib.sha256()
        if self.is_str:
            encoded = [v.encode("utf-8", "surrogatepass") for v in self.originals.tolist()]
            h.update(b"str\0")
            h.update(np.fromiter(map(len, encoded), dtype="<i8", count=len(encoded)).tobytes())
            h.update(b"".join(encoded))
        else:
            h.update(b"int64\0")
            if self._originals is None:     # identity: the same bytes as arange(1, n + 1), made a block at a time
                for lo in range(1, len(self) + 1, 1 << 20):
                    h.update(np.arange(lo, min(lo + (1 << 20), len(self) + 1), dtype="<i8").tobytes())
            else:
                h.update(self._originals.astype("<i8", copy=False).tobytes())
        return h.hexdigest()[:16]


def _as_str(value) -> str | None:
    if isinstance(value, str):
        return value
    as_int = _canonical_int(value)
    return None if as_int is None else str(as_int)


def _plain(value):
    """numpy scalars as Python values, so that messages show 12 and 'a', not np.int64(12)."""
    return value.item() if isinstance(value, np.generic) else value


# ----------------------------------------------------------------------------------------------------------------
# data fingerprints: InteractionData.fingerprint() -> {"name", "n_users", "n_items", "n_interactions", "item_vocab"}

FINGERPRINT_KEYS = ("n_users", "n_items", "n_interactions", "item_vocab")
"""The keys two fingerprints must agree on to be the same data (the name may differ: a file and its copy)."""


def same_data(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in FINGERPRINT_KEYS)


def describe_fingerprint(fp: dict) -> str:
    """'Beauty (22,363 users, 12,101 items, 198,502 interactions, item vocabulary 3f2a...)' for messages."""
    return (f"{fp.get('name', '?')} ({fp['n_users']:,} users, {fp['n_items']:,} items, "
            f"{fp['n_interactions']:,} interactions, item vocabulary {fp['item_vocab']})")
