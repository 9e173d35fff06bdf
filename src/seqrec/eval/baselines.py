"""Non-learned reference rankers, scored with the same evaluator as the models."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from seqrec.data.dataset import Split


class Popularity(nn.Module):
    """Scores every item by its count in the training part of the split (the same list for every user)."""

    def __init__(self, split: Split, history_len: int = 50):
        super().__init__()
        flat, _ = split.train_sequences_csr()
        counts = np.bincount(flat, minlength=split.n_items + 1).astype(np.float32)
        counts[0] = -np.inf
        self.register_buffer("counts", torch.from_numpy(counts))
        self.history_len = history_len
        self.n_items = split.n_items

    def score(self, batch) -> torch.Tensor:
        return self.counts.expand(batch.items.shape[0], -1).clone()

    def score_query(self, batch) -> torch.Tensor:
        return self.counts.new_zeros(batch.items.shape[0], 0)      # nothing per user but the row count

    def score_items(self, query: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return self.counts[lo:hi].expand(query.shape[0], -1).clone()
