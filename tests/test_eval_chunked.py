"""Evaluation and top-k over item chunks (eval.item_chunk, issue 16): the same ranks and metrics as scoring every
item at once, for every exclusion mode, ties included, on fake and real models; the models' score_query /
score_items against their full score; topk_chunked against a full sort."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import hand_split
from seqrec.config import load_config
from seqrec.data.batch import history_batch
from seqrec.errors import ConfigError
from seqrec.eval import topk_chunked
from seqrec.eval.baselines import Popularity
from seqrec.eval.evaluator import MIN_COLS, evaluate
from seqrec.models import DatasetInfo, build_model
from seqrec.models.base import ModelConfig, SeqRecModel
from test_eval import KS, FixedScores, integer_scores, naive_evaluate

MODES = ("none", "window", "history")
CHUNKS = (1, 7, 1000, 0)


class ChunkedFixedScores(FixedScores):
    """FixedScores with score_query / score_items; records the widest chunk asked for and whether score ran."""

    def __init__(self, table, history_len):
        super().__init__(table, history_len)
        self.n_items = table.shape[1] - 1
        self.widths, self.full_calls = [], 0

    def score(self, batch):
        self.full_calls += 1
        return super().score(batch)

    def score_query(self, batch):
        return batch.users

    def score_items(self, users, lo, hi):
        self.widths.append(hi - lo)
        s = self.table[users, lo:hi].clone()
        if lo == 0:
            s[:, 0] = float("-inf")
        return s


@pytest.mark.parametrize("exclude", MODES)
@pytest.mark.parametrize("cls", [FixedScores, ChunkedFixedScores])
def test_chunked_ranks_equal_full_with_ties(synthetic_split, exclude, cls):
    split = synthetic_split
    table = integer_scores(split.data.n_users, split.n_items, high=3, seed=7)    # many ties with the target
    _, naive = naive_evaluate(table, split, "test", exclude, 4, KS)
    full = evaluate(cls(table, 4), split, "test", exclude, KS, batch_size=37, return_ranks=True)
    assert full["ranks"].tolist() == naive
    for chunk in CHUNKS:
        model = cls(table, 4)
        res = evaluate(model, split, "test", exclude, KS, batch_size=37, return_ranks=True, item_chunk=chunk)
        assert res["ranks"].tolist() == naive, chunk
        assert res["metrics"] == full["metrics"], chunk
        assert res["users"] == full["users"]
        if cls is ChunkedFixedScores and 0 < chunk <= split.n_items:
            assert model.full_calls == 0 and max(model.widths) <= max(chunk, MIN_COLS)     # never the whole row


@pytest.mark.parametrize("exclude", MODES)
def test_chunked_exclusions_on_hand_made_split(exclude):
    """Excluded targets (repeats in and outside the window) get rank inf in every chunking."""
    split = hand_split([[1, 2, 3, 4, 5, 6, 7], [5, 1, 5, 2, 5], [3, 9, 8, 7, 6, 5, 4, 3], [1, 2]], n_items=9)
    table = torch.rand(4, 10, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    for u, t in ((0, 7), (1, 5), (2, 3)):
        table[u, t] = 10.0
    want = {"none": [0, 0, 0], "window": [0, float("inf"), 0], "history": [0, float("inf"), float("inf")]}[exclude]
    for chunk in (1, 2, 3, 4, 9, 10, 0):
        res = evaluate(ChunkedFixedScores(table, 3), split, "test", exclude, (1, 5), batch_size=2,
                       return_ranks=True, item_chunk=chunk)
        assert res["ranks"].tolist() == want, chunk


def real_model(name: str, *overrides: str, n_items: int):
    size = {"gru4rec": ["model.hidden=16"], "mqsa_ted": ["model.heads=2"]}.get(name, ["model.heads=2",
                                                                                     "model.inner=32"])
    cfg = load_config(None, [f"model.name={name}", "model.d=16", "model.max_len=8", *size, *overrides]).model
    torch.manual_seed(0)
    return build_model(cfg, DatasetInfo(n_items)).eval()


REAL = [("sasrec",), ("gru4rec",), ("mqsa_ted", "model.lambda_kd=0"), ("bert4rec",), ("bert4rec", "model.tied=true"),
        ("emkd", "model.backbone=sasrec", "model.use_attr=false", "model.n_networks=2"),
        ("emkd", "model.use_attr=false", "model.n_networks=2", "model.combine=probs")]


@pytest.mark.filterwarnings("ignore:EMKD")
@pytest.mark.parametrize("spec", REAL, ids=lambda s: "-".join(x.split("=")[-1] for x in s))
def test_real_models_chunked_equal_full(synthetic_split, spec):
    split = synthetic_split
    model = real_model(*spec, n_items=split.n_items)
    for exclude in MODES:
        full = evaluate(model, split, "valid", exclude, KS, return_ranks=True)
        for chunk in CHUNKS[:-1]:
            res = evaluate(model, split, "valid", exclude, KS, return_ranks=True, item_chunk=chunk)
            assert torch.equal(res["ranks"], full["ranks"]), (exclude, chunk)
            assert res["metrics"] == full["metrics"], (exclude, chunk)


@pytest.mark.filterwarnings("ignore:EMKD")
@pytest.mark.parametrize("spec", REAL, ids=lambda s: "-".join(x.split("=")[-1] for x in s))
def test_score_items_matches_score(synthetic_split, spec):
    split = synthetic_split
    model = real_model(*spec, n_items=split.n_items)
    starts, lengths, _ = split.eval_inputs("valid")
    batch = history_batch(split.data.items, starts[:9], lengths[:9], model.history_len)
    with torch.no_grad():
        full = model.score(batch)
        q = model.score_query(batch)
        assert torch.equal(model.score_items(q, 0, split.n_items + 1), full)         # one code path
        for c in (1, 7, 25):
            parts = torch.cat([model.score_items(q, lo, min(lo + c, split.n_items + 1))
                               for lo in range(0, split.n_items + 1, c)], 1)
            assert parts.shape == full.shape
            assert torch.isneginf(parts[:, 0]).all() and torch.isfinite(parts[:, 1:]).all()
            torch.testing.assert_close(parts, full, rtol=1e-5, atol=1e-5)


def test_popularity_and_default_protocol(synthetic_split):
    split = synthetic_split
    pop = Popularity(split)
    full = evaluate(pop, split, "test", "history", KS, return_ranks=True)
    res = evaluate(pop, split, "test", "history", KS, return_ranks=True, item_chunk=7)
    assert torch.equal(res["ranks"], full["ranks"])

    class OnlyScore(SeqRecModel):          # a model with score alone: the default score_query / score_items
        def __init__(self):
            super().__init__(ModelConfig(name="x", max_len=4), DatasetInfo(split.n_items))
            self.table = integer_scores(split.data.n_users, split.n_items, high=4, seed=1)

        def score(self, batch):
            return self.mask_padding_column(self.table[batch.users].clone())

    m = OnlyScore()
    full = evaluate(m, split, "test", "window", KS, return_ranks=True)
    res = evaluate(m, split, "test", "window", KS, return_ranks=True, item_chunk=5)
    assert torch.equal(res["ranks"], full["ranks"])

    class Neither(SeqRecModel):
        pass
    with pytest.raises(NotImplementedError):
        Neither(ModelConfig(name="y"), DatasetInfo(5)).score(None)


def test_item_chunk_config():
    assert load_config(None, ["eval.item_chunk=65536"]).eval.item_chunk == 65536
    assert load_config(None, []).eval.item_chunk == 0
    for bad in ("-1", "1.5", "true"):
        with pytest.raises(ConfigError, match="eval.item_chunk"):
            load_config(None, [f"eval.item_chunk={bad}"])


# ---------------------------------------------------------------------------------------------------------------
# top-k


def reference_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Score descending, ties by lower item id: a stable descending sort of the full row."""
    v, i = torch.sort(scores, dim=1, descending=True, stable=True)
    return v[:, :k], i[:, :k]


@pytest.mark.parametrize("exclude", [None, "window", "history"])
def test_topk_chunked_equals_full_sort_with_ties(synthetic_split, exclude):
    split = synthetic_split
    n = split.n_items
    table = integer_scores(split.data.n_users, n, high=4, seed=3)
    starts, lengths, _ = split.eval_inputs("test")
    users = split.users("test")[:50]
    flat = split.data.items
    model = ChunkedFixedScores(table, 4)
    batch = history_batch(flat, starts[:50], lengths[:50], 4, users)
    full = model.score(batch).float()
    ex = exclude
    if exclude == "window":
        full.scatter_(1, batch.items, float("-inf"))
    elif exclude == "history":
        from seqrec.eval.evaluator import exclude_items
        exclude_items(full, flat, starts[:50], lengths[:50])
        ex = (flat, starts[:50], lengths[:50])
    for k in (1, 5, 20, n + 1, n + 10):
        want_v, want_i = reference_topk(full, min(k, n + 1))
        assert torch.equal(torch.topk(full, min(k, n + 1)).values, want_v)      # the same values as torch.topk
        for chunk in CHUNKS + (n + 1, 3 * n):
            v, i = topk_chunked(model, batch, k, chunk, ex)
            assert torch.equal(v, want_v), (k, chunk)
            assert torch.equal(i, want_i), (k, chunk)       # ties: the lower item id first


def test_topk_tie_order_by_hand():
    table = torch.tensor([[0.0, 1.0, 3.0, 3.0, 2.0, 3.0, 1.0]])
    model = ChunkedFixedScores(table, 2)
    batch = history_batch(np.array([1]), np.array([0]), np.array([1]), 2, np.array([0]))
    for chunk in (0, 1, 2, 3, 4):
        v, i = topk_chunked(model, batch, 5, chunk)
        assert i.tolist() == [[2, 3, 5, 4, 1]] and v.tolist() == [[3.0, 3.0, 3.0, 2.0, 1.0]]


def test_recommender_uses_chunks(synthetic_split):
    from seqrec.serve.recommender import Recommender
    model = real_model("sasrec", n_items=synthetic_split.n_items)
    full = Recommender(model)                       # no vocabulary: identity, ids are internal
    chunked = Recommender(model, item_chunk=7)
    for h in ([3, 5, 8], [1], list(range(1, 30))):
        for ex in (False, True):
            a, b = full.recommend(h, 10, ex), chunked.recommend(h, 10, ex)
            assert [i for i, _ in a] == [i for i, _ in b]
            if ex:
                assert not set(i for i, _ in a) & set(h)
