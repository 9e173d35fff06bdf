"""Recommend from a trained checkpoint.

    rec = Recommender.from_checkpoint("runs/x/best.pt")
    rec.recommend([12, 7, 93], k=10)      # [(item, score), ...], best first
"""
from __future__ import annotations

import numpy as np
import torch

from seqrec.data.batch import history_batch
from seqrec.errors import SeqrecError
from seqrec.eval.topk import topk_chunked
from seqrec.train.checkpoint import model_from_checkpoint


class Recommender:
    def __init__(self, model, n_items: int, item_chunk: int = 0):
        self.model = model.eval()
        self.n_items = n_items
        self.item_chunk = item_chunk
        """Items scored at a time (seqrec.eval.topk.topk_chunked); 0 = all at once."""

    @classmethod
    def from_checkpoint(cls, path) -> "Recommender":
        model, cfg, _ = model_from_checkpoint(path)
        return cls(model, model.n_items)

    def _check(self, history) -> np.ndarray:
        h = np.asarray(list(history), dtype=np.int64)
        if len(h) == 0:
            raise SeqrecError("history: expected at least one item id")
        bad = h[(h < 1) | (h > self.n_items)]
        if len(bad):
            raise SeqrecError(f"history: item id {int(bad[0])} is outside the model's items 1..{self.n_items}")
        return h

    @torch.no_grad()
    def recommend_batch(self, histories: list, k: int = 10, exclude_history: bool = False) -> list[list[tuple[int, float]]]:
        """Top-k (item, score) per history, best first. exclude_history removes the history's items."""
        if k < 1:
            raise SeqrecError(f"k: expected a positive integer, got {k}")
        hs = [self._check(h) for h in histories]
        lengths = np.array([len(h) for h in hs], dtype=np.int64)
        flat = np.concatenate(hs)
        starts = np.cumsum(lengths) - lengths
        batch = history_batch(flat, starts, lengths, self.model.history_len)
        values, ids = topk_chunked(self.model, batch, min(k, self.n_items), self.item_chunk,
                                   (flat, starts, lengths) if exclude_history else None, self.n_items)
        return [[(int(i), float(s)) for i, s in zip(row_i, row_s) if np.isfinite(float(s))]
                for row_i, row_s in zip(ids.tolist(), values.tolist())]

    def recommend(self, history, k: int = 10, exclude_history: bool = False) -> list[tuple[int, float]]:
        return self.recommend_batch([history], k, exclude_history)[0]
