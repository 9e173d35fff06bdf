"""The embedded default dataset: deterministic synthetic sequences with real sequential structure.

Items are grouped into topics of `topic_size` items arranged in a cycle. Each user has a home topic and walks it:
the next item is the successor of the current one in the cycle with probability 0.6, another item of the topic
with probability 0.25, and a popular item from anywhere (Zipf) with probability 0.15. A sequential model learns the
successor rule and the topic and clearly beats the popularity ranking; the item's topic is its attribute.
"""
from __future__ import annotations

import numpy as np

from seqrec.data.dataset import InteractionData, ItemAttributes


def make_synthetic(n_users: int = 2000, n_items: int = 500, topic_size: int = 25, min_len: int = 5,
                   mean_extra_len: float = 10.0, max_len: int = 60, seed: int = 0) -> InteractionData:
    rng = np.random.default_rng(seed)
    n_topics = max(1, n_items // topic_size)
    topic_of = (np.arange(n_items) // topic_size).clip(max=n_topics - 1)          # 0-based item -> topic
    topic_start = np.array([np.flatnonzero(topic_of == t)[0] for t in range(n_topics)])
    topic_len = np.bincount(topic_of, minlength=n_topics)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 1.1
    popularity = rng.permutation(popularity / popularity.sum())

    lengths = np.minimum(min_len + rng.geometric(1.0 / mean_extra_len, size=n_users) - 1, max_len)
    home = rng.integers(0, n_topics, size=n_users)
    sequences = []
    for u in range(n_users):
        t = home[u]
        cur = topic_start[t] + rng.integers(topic_len[t])
        seq = [cur]
        for _ in range(lengths[u] - 1):
            r = rng.random()
            if r < 0.6:
                cur = topic_start[t] + (cur - topic_start[t] + 1) % topic_len[t]
            elif r < 0.85:
                cur = topic_start[t] + rng.integers(topic_len[t])
            else:
                cur = rng.choice(n_items, p=popularity)
            seq.append(cur)
        sequences.append(np.asarray(seq, dtype=np.int64) + 1)    # 1-based ids
    # attribute of item i (1-based) = its topic (1-based); rows 0 and n_items + 1 have none
    counts = np.r_[0, np.ones(n_items, dtype=np.int64), 0]
    offsets = np.r_[0, np.cumsum(counts)]
    attrs = ItemAttributes(offsets.astype(np.int64), (topic_of + 1).astype(np.int64), int(n_topics))
    return InteractionData.from_sequences("synthetic", sequences, n_items=n_items, attributes=attrs,
                                          source=f"synthetic(users={n_users}, items={n_items}, seed={seed})")
