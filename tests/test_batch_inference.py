"""Batch inference (issue 14): the chunked top-k (torch.topk per item chunk, running merge) against a naive
reference (full score rows, exclusions, a Python sort by (-score, item id)); recommend_users / the file writers
against the same reference in original ids; atomic output; the `seqrec recommend --users` command."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from seqrec.data.batch import history_batch
from seqrec.data.dataset import InteractionData
from seqrec.data.vocab import Vocabulary
from seqrec.errors import SeqrecError
from seqrec.eval.topk import chunk_topk, topk_chunked
from seqrec.serve.batch import iter_recommendations, recommend_users, user_rows, write_recommendations
from seqrec.serve.recommender import Recommender


class LastItemTable(torch.nn.Module):
    """A fake model whose scores are table[last item of the window]: a known function of the history, with
    score_query / score_items like the real models; records the widest item range it was asked for."""

    def __init__(self, table: torch.Tensor, history_len: int):
        super().__init__()
        self.table = table
        self.n_items = table.shape[1] - 1
        self.history_len = history_len
        self.widths: list[int] = []

    def score_query(self, batch):
        return batch.items.gather(1, (batch.lengths - 1)[:, None])[:, 0]

    def score_items(self, last, lo, hi):
        self.widths.append(hi - lo)
        s = self.table[last, lo:hi].clone()
        if lo == 0:
            s[:, 0] = float("-inf")
        return s

    def score(self, batch):
        return self.score_items(self.score_query(batch), 0, self.n_items + 1)


def random_table(n_items: int, seed: int, ties: bool) -> torch.Tensor:
    """[n_items + 1, n_items + 1] scores: small integers (many ties, also at every top-k cut) or floats."""
    g = torch.Generator().manual_seed(seed)
    if ties:
        return torch.randint(0, 4, (n_items + 1, n_items + 1), generator=g).float()
    return torch.randn(n_items + 1, n_items + 1, generator=g)


def random_histories(n_users: int, n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat, starts, lengths) of random histories of 1..12 items, repeats allowed."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 13, size=n_users)
    flat = rng.integers(1, n_items + 1, size=int(lengths.sum()))
    return flat, np.cumsum(lengths) - lengths, lengths


def naive_topk(scores_row: list[float], excluded: set[int], k: int) -> list[tuple[int, float]]:
    """The k best (item, score) of one full row: item 0 and `excluded` at -inf, sorted by (-score, item id)."""
    s = [float("-inf") if j == 0 or j in excluded else v for j, v in enumerate(scores_row)]
    order = sorted(range(len(s)), key=lambda j: (-s[j], j))
    return [(j, s[j]) for j in order[:k]]


# -- top-k ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("exclude", [False, True])
def test_topk_chunked_matches_naive_reference(ties, exclude):
    n_items, history_len = 40, 5
    model = LastItemTable(random_table(n_items, seed=1, ties=ties), history_len)
    flat, starts, lengths = random_histories(17, n_items, seed=2)
    batch = history_batch(flat, starts, lengths, history_len)
    last = flat[starts + lengths - 1]
    for k in (1, 5, 17, 40, 41, 60):        # 41 = every item and the padding item; 60: more than there are
        want = []
        for b in range(len(starts)):
            seen = set(flat[starts[b]: starts[b] + lengths[b]].tolist()) if exclude else set()
            want.append(naive_topk(model.table[last[b]].tolist(), seen, min(k, n_items + 1)))
        for chunk in (1, 3, 7, 16, 40, 41, 100, 0):
            model.widths.clear()
            v, i = topk_chunked(model, batch, k, chunk, (flat, starts, lengths) if exclude else None)
            got = [list(zip(ri, rv)) for ri, rv in zip(i.tolist(), v.tolist())]
            assert got == want, (k, chunk)
            if chunk:
                assert max(model.widths) <= max(chunk, 8)       # memory bounded (8 = MIN_COLS, see evaluator)


def test_chunk_topk_takes_the_lower_ids_at_a_tie_across_the_cut():
    s = torch.tensor([[1.0, 3.0, 2.0, 3.0, 3.0, 0.0],       # k=2: 3.0 at items 1, 3, 4 -> 1, 3
                      [5.0, 4.0, 4.0, 4.0, 4.0, 4.0],       # k=2: 5.0, then the lowest of five 4.0s
                      [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])      # no tie
    v, i = chunk_topk(s, 10, 2)                             # ids start at 10; ascending id order
    assert i.tolist() == [[11, 13], [10, 11], [14, 15]]
    assert v.tolist() == [[3.0, 3.0], [5.0, 4.0], [4.0, 5.0]]
    v, i = chunk_topk(torch.full((1, 4), float("-inf")), 0, 3)
    assert i.tolist() == [[0, 1, 2]]


# -- recommend_users and the writers ----------------------------------------------------------------------------

N_ITEMS = 30
ITEM_IDS = [f"sku,{j:02d}" if j % 7 else f'q"{j}' for j in range(N_ITEMS)]     # commas and quotes: csv quoting


@pytest.fixture(scope="module")
def setup():
    """Data with string item and user ids (users of 1..12 items, one with all but 2 items seen), a fake model."""
    flat, starts, lengths = random_histories(23, N_ITEMS, seed=5)
    seqs = [flat[s: s + n] for s, n in zip(starts, lengths)] + [np.arange(1, N_ITEMS - 1)]
    lengths = np.array([len(q) for q in seqs])
    data = InteractionData(name="strings", items=np.concatenate(seqs), offsets=np.r_[0, np.cumsum(lengths)],
                           item_vocab=Vocabulary.from_values(ITEM_IDS, "item"),
                           user_vocab=Vocabulary.from_values([f"user-{u}" for u in range(len(seqs))], "user"))
    model = LastItemTable(random_table(N_ITEMS, seed=6, ties=True), history_len=4)
    return data, model


def reference_table(data, model, users, k, exclude_seen):
    """[(user, item, rank, score)] from the naive top-k of each user's whole history, original ids."""
    rows = []
    for user in users:
        u = int(data.user_vocab.encode([user])[0]) - 1
        hist = data.sequence(u)
        top = naive_topk(model.table[hist[-1]].tolist(), set(hist.tolist()) if exclude_seen else set(), k)
        rows += [(user, ITEM_IDS[j - 1], r, s) for r, (j, s) in enumerate(top, 1) if s != float("-inf")]
    return rows


def as_rows(df) -> list[tuple]:
    return list(zip(df["user"], df["item"], df["rank"].tolist(), df["score"].astype(float).tolist()))


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_recommend_users_matches_reference(setup, exclude_seen):
    data, model = setup
    users = ["user-5", "user-23", "user-0", "user-5", "user-11"]            # any order, repeats kept
    for chunk in (0, 4):
        rec = Recommender(model, data.item_vocab, item_chunk=chunk)
        df = recommend_users(rec, data, users, k=6, exclude_seen=exclude_seen, batch_size=2)
        assert as_rows(df) == reference_table(data, model, users, 6, exclude_seen)
    if exclude_seen:        # user-23 has seen all but items 29 and 30: two rows, ranks 1 and 2
        assert sorted(df[df.user == "user-23"]["item"]) == sorted([ITEM_IDS[28], ITEM_IDS[29]])
        assert df[df.user == "user-23"]["rank"].tolist() == [1, 2]


def test_blocks_and_batches_do_not_change_the_result(setup):
    data, model = setup
    rec = Recommender(model, data.item_vocab)
    rows = user_rows(data, None)
    whole = list(iter_recommendations(rec, data, rows, 5, batch_size=1000, block_users=1000))
    assert len(whole) == 1
    parts = list(iter_recommendations(rec, data, rows, 5, batch_size=2, block_users=3))
    assert len(parts) == 8
    for col in ("user", "item", "rank", "score"):
        assert np.array_equal(np.concatenate([p[col] for p in parts]), whole[0][col])
    want = reference_table(data, model, data.user_ids.tolist(), 5, True)
    assert list(zip(whole[0]["user"], whole[0]["item"], whole[0]["rank"].tolist(),
                    whole[0]["score"].astype(float).tolist())) == want


def test_unknown_user_and_bad_k(setup):
    data, model = setup
    rec = Recommender(model, data.item_vocab)
    with pytest.raises(SeqrecError, match="unknown user id 'nobody'"):
        recommend_users(rec, data, ["user-1", "nobody"], k=3)
    with pytest.raises(SeqrecError, match="k: expected a positive integer"):
        recommend_users(rec, data, ["user-1"], k=0)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_writers_round_trip(setup, tmp_path, suffix, monkeypatch):
    pd = pytest.importorskip("pandas")
    import seqrec.serve.batch
    monkeypatch.setattr(seqrec.serve.batch, "TEXT_ROWS", 7)        # text rows in several slices per block
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    data, model = setup
    rec = Recommender(model, data.item_vocab, item_chunk=7)
    want = recommend_users(rec, data, None, k=4)
    out = tmp_path / f"recs{suffix}"
    n = write_recommendations(rec, data, out, k=4, batch_size=3, progress=False)
    assert n == len(want)
    if suffix == ".parquet":
        got = pd.read_parquet(out)
        assert str(got["score"].dtype) == "float32"
    elif suffix == ".csv":
        with open(out, newline="") as f:
            lines = list(csv.reader(f))
        assert lines[0] == ["user", "item", "rank", "score"]
        got = pd.DataFrame(lines[1:], columns=lines[0])
        got["rank"] = got["rank"].astype(int)
        got["score"] = got["score"].astype(np.float32)          # the text reads back as the same float32
    else:
        got = pd.DataFrame([json.loads(line) for line in out.read_text().splitlines()])
        got["score"] = got["score"].astype(np.float32)
    assert as_rows(got) == as_rows(want)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]            # no temporary file left


def test_output_is_atomic_and_not_overwritten(setup, tmp_path):
    data, model = setup
    out = tmp_path / "recs.csv"
    out.write_text("earlier\n")
    with pytest.raises(SeqrecError, match="exists; pass --overwrite"):
        write_recommendations(Recommender(model, data.item_vocab), data, out, k=3, progress=False)

    class Failing(LastItemTable):
        def score_query(self, batch):
            if self.calls == 2:
                raise RuntimeError("boom")
            self.calls += 1
            return super().score_query(batch)

    failing = Failing(model.table, 4)
    failing.calls = 0
    with pytest.raises(RuntimeError, match="boom"):         # fails after two batches were written
        write_recommendations(Recommender(failing, data.item_vocab), data, out, k=3, batch_size=2, block_users=2,
                              overwrite=True, progress=False)
    assert out.read_text() == "earlier\n"                   # the earlier file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["recs.csv"]
    with pytest.raises(SeqrecError, match="unknown output format '.txt'"):
        write_recommendations(Recommender(model, data.item_vocab), data, tmp_path / "recs.txt", k=3)


# -- the command line -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import TINY
    from seqrec.cli import main
    out = tmp_path_factory.mktemp("batch") / "run"
    assert main(["train", *[a for s in TINY for a in ("--set", s)], "--set", "train.max_epochs=1", "--out",
                 str(out), "--quiet"]) == 0
    return out / "best.pt"


def cli(capsys, *argv) -> tuple[int, str, str]:
    from seqrec.cli import main
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_all_users(trained, tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from seqrec.data.synthetic import make_synthetic
    data = make_synthetic(n_users=200, n_items=60)          # the data of TINY
    out = tmp_path / "recs.parquet"
    rc, stdout, err = cli(capsys, "recommend", trained, "--users", "all", "-k", 5, "--out", out,
                          "--batch-size", 64, "--item-chunk", 16)
    assert rc == 0, err
    assert "1,000 recommendations for 200 users" in stdout and "200/200" in err      # the progress line
    df = pd.read_parquet(out)
    assert len(df) == 1000 and df["user"].tolist() == np.repeat(data.user_ids, 5).tolist()
    assert df["rank"].tolist() == [1, 2, 3, 4, 5] * 200
    for u in (0, 17, 199):                  # the same as the Recommender on the user's whole history
        got = df[df.user == data.user_ids[u]]
        rec = Recommender.from_checkpoint(trained)
        want = rec.recommend(data.sequence(u).tolist(), 5, exclude_history=True)
        assert got["item"].tolist() == [i for i, _ in want]
        np.testing.assert_allclose(got["score"], [s for _, s in want], rtol=1e-5, atol=1e-6)
        assert not set(got["item"]) & set(data.sequence(u).tolist())                 # seen items excluded
    rc, _, err = cli(capsys, "recommend", trained, "--users", "all", "-k", 60, "--out", out, "--include-seen",
                     "--overwrite")
    assert rc == 0, err
    assert len(pd.read_parquet(out)) == 200 * 60        # every item for every user: seen ones included


def test_cli_user_file_and_errors(trained, tmp_path, capsys):
    users = tmp_path / "users.txt"
    users.write_text("7\n\n  3 \n")
    out = tmp_path / "recs.jsonl"
    rc, _, err = cli(capsys, "recommend", trained, "--users", users, "-k", 2, "--out", out)
    assert rc == 0, err
    assert [json.loads(line)["user"] for line in out.read_text().splitlines()] == [7, 7, 3, 3]

    def error(*argv, expect):
        rc, _, err = cli(capsys, "recommend", *argv)
        assert rc == 2 and expect in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err

    users.write_text("7\nu-999\n")
    error(trained, "--users", users, "--out", tmp_path / "a.csv", expect="line 2: unknown user id 'u-999'")
    assert not (tmp_path / "a.csv").exists()
    error(tmp_path / "missing.pt", "--users", "all", "--out", tmp_path / "a.txt", expect="unknown output format")
    error(trained, "--users", "all", "--out", out, expect="the file exists; pass --overwrite")
    error(trained, "--users", "all", expect="needs --out")
    error(trained, "--users", tmp_path / "nope.txt", "--out", tmp_path / "b.csv", expect="file not found")
    error(trained, "--history", "1 2", "--out", out, expect="--out: applies to --users")
    error(trained, "--users", "all", "--out", tmp_path / "c.csv", "--batch-size", 0, expect="--batch-size")
