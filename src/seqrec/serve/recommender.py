"""Recommend from a trained checkpoint, in the data's original item ids.

    rec = Recommender.from_checkpoint("runs/x/best.pt")
    rec.recommend(["B00X", "B01Y"], k=10)      # [(item, score), ...], best first, ids as in the training file

The public methods translate ids (rec.item_vocab) around one internal method, `_topk_internal`, which works on
internal ids 1..n_items in CSR form; batch inference calls it directly on the data's histories and the ONNX backend
overrides it.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from seqrec.data.batch import history_batch
from seqrec.data.vocab import UNKNOWN_POLICIES, Vocabulary
from seqrec.errors import SeqrecError, SeqrecWarning
from seqrec.eval.topk import topk_chunked
from seqrec.train.checkpoint import model_from_checkpoint, trained_on


class Recommender:
    """Top-k items for histories of original item ids.

    model: a trained model (put in eval mode). item_vocab: original id of each internal item id (None: identity,
    ids are internal). user_vocab, fingerprint, config: what the checkpoint records of the training data and run
    (None when unknown). item_chunk: items scored at a time (seqrec.eval.topk.topk_chunked); 0 = all at once.
    """

    def __init__(self, model, item_vocab: Vocabulary | None = None, user_vocab: Vocabulary | None = None,
                 fingerprint: dict | None = None, config=None, item_chunk: int = 0):
        self.model = model.eval()
        self.n_items = model.n_items
        self.history_len = model.history_len
        """The most recent items of a history the model reads (older ones are ignored)."""
        self.item_vocab = item_vocab if item_vocab is not None else Vocabulary.identity(self.n_items)
        if len(self.item_vocab) != self.n_items:
            raise ValueError(f"item vocabulary of {len(self.item_vocab)} ids for a model of {self.n_items} items")
        self.user_vocab = user_vocab
        self.fingerprint = fingerprint
        self.config = config
        self.item_chunk = item_chunk

    @classmethod
    def from_checkpoint(cls, path, item_chunk: int = 0) -> "Recommender":
        model, cfg, ckpt = model_from_checkpoint(path)
        data = trained_on(ckpt, path)
        if data.ids_are_internal:
            warnings.warn(SeqrecWarning(
                f"{path}: written before checkpoints kept the data's ids; item ids are the internal 1..{model.n_items} "
                f"(retrain to use the file's ids)"), stacklevel=2)
        return cls(model, data.item_vocab, data.user_vocab, data.fingerprint, cfg, item_chunk)

    # -- the scoring core: internal ids in, internal ids out ----------------------------------------------------
    @torch.no_grad()
    def _topk_internal(self, flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, k: int,
                       exclude_history: bool) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of each history given in CSR form (internal item ids flat[starts[b]:starts[b] + lengths[b]],
        every length >= 1): (internal item ids int64 [B, k], scores float32 [B, k]), best first, ties by lower id.
        Where fewer than k items remain (exclude_history, a small catalogue) the tail scores are -inf (ids there
        are meaningless: 0 or excluded items); callers drop them."""
        batch = history_batch(flat, starts, lengths, self.model.history_len)
        values, ids = topk_chunked(self.model, batch, k, self.item_chunk,
                                   (flat, starts, lengths) if exclude_history else None, self.n_items)
        ids = ids.cpu().numpy().astype(np.int64, copy=False)
        values = values.cpu().numpy().astype(np.float32, copy=False)
        if ids.shape[1] < k:        # k beyond the catalogue: pad to the promised width
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)))
            values = np.pad(values, ((0, 0), (0, pad)), constant_values=-np.inf)
        return ids, values

    # -- original ids ---------------------------------------------------------------------------------------------
    def encode_histories(self, histories: list, unknown: str = "error", source: str = "history"
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Histories of original item ids -> (flat internal ids, starts, lengths). unknown: 'error' (a SeqrecError
        naming the id and the history) or 'skip' (dropped with a warning; a history may become empty).
        source: what messages call a history (e.g. '--history')."""
        if unknown not in UNKNOWN_POLICIES:
            raise SeqrecError(f"unknown: expected one of {', '.join(UNKNOWN_POLICIES)}, got {unknown!r}")
        rows = []
        for b, h in enumerate(histories):
            if isinstance(h, (str, bytes)) or not hasattr(h, "__len__"):
                raise SeqrecError(f"{_name(source, b, len(histories))}: expected a list of item ids, got "
                                  f"{type(h).__name__} {h!r:.40}")
            if len(h) == 0:
                raise SeqrecError(f"{_name(source, b, len(histories))}: expected at least one item id")
            rows.append(h.tolist() if isinstance(h, np.ndarray) else list(h))
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        originals = [x for row in rows for x in row]
        flat, known = self.item_vocab.lookup(originals)
        if not known.all():
            bad = np.flatnonzero(~known)
            row_of = np.repeat(np.arange(len(rows)), lengths)
            if unknown == "error":          # raises, naming the first history with an unknown id
                b = int(row_of[bad[0]])
                self.item_vocab.report_unknown([originals[i] for i in bad if row_of[i] == b], "error",
                                               _name(source, b, len(rows)))
            else:                           # warns once for the whole batch
                self.item_vocab.report_unknown([originals[i] for i in bad], "skip",
                                               source if len(rows) == 1 else f"{source} (all)")
            flat = flat[known]
            lengths = np.bincount(row_of[known], minlength=len(rows)).astype(np.int64)
        starts = np.cumsum(lengths) - lengths
        return flat, starts, lengths

    def recommend_batch(self, histories: list, k: int = 10, exclude_history: bool = False,
                        unknown: str = "error", source: str = "history") -> list[list[tuple]]:
        """Top-k (original item id, score) per history of original item ids, best first. exclude_history
        removes the history's items. unknown, source: see `encode_histories`; a history left empty gets []."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise SeqrecError(f"k: expected a positive integer, got {k!r}")
        flat, starts, lengths = self.encode_histories(histories, unknown, source)
        out: list[list[tuple]] = [[] for _ in range(len(lengths))]
        rows = np.flatnonzero(lengths > 0)
        if len(rows) == 0:
            return out
        ids, scores = self._topk_internal(flat, starts[rows], lengths[rows], min(int(k), self.n_items),
                                          exclude_history)
        finite = np.isfinite(scores)
        for row, row_ids, row_scores, row_finite in zip(rows.tolist(), ids, scores, finite):
            kept = row_ids[row_finite]
            out[row] = list(zip(self.item_vocab.decode(kept).tolist(), row_scores[row_finite].tolist()))
        return out

    def recommend(self, history, k: int = 10, exclude_history: bool = False, unknown: str = "error",
                  source: str = "history") -> list[tuple]:
        """Top-k (original item id, score) for one history of original item ids, best first."""
        return self.recommend_batch([history], k, exclude_history, unknown, source)[0]


def _name(source: str, b: int, n: int) -> str:
    """How messages name history b of n."""
    return source if n == 1 else f"{source} {b + 1} of {n}"
