"""Original ids everywhere: vocabularies, checkpoints that keep them, the Recommender and the CLI speaking them, and
the data fingerprint that makes evaluate / resume refuse other data."""
from __future__ import annotations

import hashlib
import json
import random
import warnings

import numpy as np
import pytest
import torch

from conftest import TINY
from seqrec.cli import main
from seqrec.data.dataset import InteractionData
from seqrec.data.vocab import Vocabulary
from seqrec.errors import SeqrecError, SeqrecWarning
from seqrec.serve import Recommender

TINY_MODEL = [s for s in TINY if not s.startswith("data.")] + ["train.max_epochs=1"]


# ---------------------------------------------------------------------------------------------------------------
# Vocabulary


@pytest.mark.parametrize("values", [["b7", "a3", "c1", "07", "7"], [1004, 1001, -3, 2**62], ["1004", "1001", "5"]])
def test_vocab_round_trip(values):
    vocab = Vocabulary.from_values(values)
    assert len(vocab) == len(values)
    internal = vocab.encode(values)
    assert internal.tolist() == list(range(1, len(values) + 1))       # internal ids in the given order
    expected = [int(v) for v in values] if not vocab.is_str else values
    assert vocab.decode(internal[::-1]).tolist() == expected[::-1]
    # to_plain survives torch.save / torch.load(weights_only=True)
    import io
    buf = io.BytesIO()
    torch.save(vocab.to_plain(), buf)
    buf.seek(0)
    again = Vocabulary.from_plain(torch.load(buf, weights_only=True))
    assert again == vocab and again.fingerprint() == vocab.fingerprint()


def test_vocab_types_follow_the_file():
    assert not Vocabulary.from_values(["1004", "1001"]).is_str              # canonical integers -> int64
    assert Vocabulary.from_values(["07", "7"]).is_str                         # '07' is not 7: both kept as text
    ints = Vocabulary.from_values([1004, 1001])
    assert ints.encode(["1001", 1004, np.int64(1001)]).tolist() == [2, 1, 2]  # '1001' on a command line is 1001
    with pytest.raises(SeqrecError, match="unknown item id '01001'"):
        ints.encode(["01001"])                                                # not silently read as 1001
    strs = Vocabulary.from_values(["a", "5"])
    assert strs.encode([5, "a"]).tolist() == [2, 1]                           # 5 compared as its text '5'
    with pytest.raises(SeqrecError, match="occurs twice"):
        Vocabulary.from_values(["a", "b", "a"])


def test_vocab_unknown_error_names_the_id_and_skip_warns():
    vocab = Vocabulary.from_values(["x", "y", "z"])
    with pytest.raises(SeqrecError, match=r"--history: unknown item id 'nope' \(and 1 more unknown\)"):
        vocab.encode(["x", "nope", "y", "also"], source="--history")
    with pytest.warns(SeqrecWarning, match=r"skipped 2 unknown item id\(s\): 'nope', 'also'"):
        assert vocab.encode(["x", "nope", "y", "also"], unknown="skip").tolist() == [1, 2]
    ints = Vocabulary.from_values([10, 20])
    for bad in (30, 1e30, "1e30", None, 2**70):
        with pytest.raises(SeqrecError, match="unknown item id"):
            ints.encode([bad])
    with pytest.raises(ValueError):
        ints.decode(np.array([0]))      # 0 is padding, never an item


def test_vocab_matches_a_dict_on_a_large_catalogue():
    rng = np.random.default_rng(0)
    originals = rng.choice(10**12, size=200_000, replace=False)     # sparse ids in random order
    vocab = Vocabulary(originals)
    query = np.concatenate([originals[rng.integers(0, len(originals), 5000)], [-1, 10**12 + 7]])
    reference = {int(v): i for i, v in enumerate(originals.tolist(), start=1)}
    internal, known = vocab.lookup(query)
    assert internal.tolist() == [reference.get(int(q), 0) for q in query]
    assert known.tolist() == [int(q) in reference for q in query]
    assert np.array_equal(vocab.decode(internal[known]), query[known])


def test_identity_vocab_is_lazy_and_hashes_as_its_ids():
    big = Vocabulary.identity(3_000_000_000)       # a sparse S3-Rec file's largest id: no array is made
    assert len(big) == 3_000_000_000 and big.encode([5, 2_999_999_999]).tolist() == [5, 2_999_999_999]
    assert big.to_plain() == {"kind": "item", "identity": 3_000_000_000}
    small = Vocabulary.identity(3)
    expected = hashlib.sha256(b"int64\0" + np.arange(1, 4, dtype="<i8").tobytes()).hexdigest()[:16]
    assert small.fingerprint() == expected == Vocabulary(np.array([1, 2, 3])).fingerprint()


def test_fingerprint_changes_with_the_vocabulary():
    base = Vocabulary.from_values(["a", "b", "c"]).fingerprint()
    assert Vocabulary.from_values(["a", "b", "c"]).fingerprint() == base              # stable
    for other in (["a", "b", "d"], ["b", "a", "c"], ["a", "b"], ["a", "b", "c", "d"], ["ab", "", "c"]):
        assert Vocabulary.from_values(other).fingerprint() != base, other
    assert Vocabulary.from_values([1, 2]).fingerprint() != Vocabulary.from_values(["1", "x"]).fingerprint()
    ints = Vocabulary(np.array([1, 2, 3])).fingerprint()
    assert Vocabulary(np.array([1, 2, 4])).fingerprint() != ints
    assert Vocabulary(np.array(["1", "2", "3"], dtype=object)).fingerprint() != ints   # same digits, other type


def test_from_events_sorts_by_time_and_keeps_originals():
    data = InteractionData.from_events(users=["u2", "u1", "u2", "u1", "u2"], items=["c", "a", "a", "b", "b"],
                                       times=[30, 5, 10, 1, 20], name="log")
    assert data.user_ids.tolist() == ["u2", "u1"]                     # order of first appearance
    assert data.item_vocab.originals.tolist() == ["c", "a", "b"]
    seqs = [data.item_vocab.decode(data.sequence(u)).tolist() for u in range(data.n_users)]
    assert seqs == [["a", "b", "c"], ["b", "a"]]                      # by time, not by row
    fp = data.fingerprint()
    assert (fp["n_users"], fp["n_items"], fp["n_interactions"]) == (2, 3, 5)
    assert fp["item_vocab"] == data.item_vocab.fingerprint()


# ---------------------------------------------------------------------------------------------------------------
# checkpoints, Recommender and CLI on a CSV with string ids and out-of-order timestamps


def write_event_csv(path, n_users=50, seed=0, extra_row=False):
    """Users with 4-8 events on items 'sku-1001'..'sku-1025', rows shuffled (timestamps out of order)."""
    rng = random.Random(seed)
    rows = [(f"user{u}", f"sku-{rng.randint(1001, 1025)}", rng.randint(0, 10**6))
            for u in range(n_users) for _ in range(rng.randint(4, 8))]
    if extra_row:
        rows.append(("user0", "sku-1001", 10**6 + 1))
    rng.shuffle(rows)
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    return {i for _, i, _ in rows}


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ids")
    items = write_event_csv(folder / "events.csv")
    sets = [a for s in TINY_MODEL + [f"data.dataset={folder / 'events.csv'}"] for a in ("--set", s)]
    assert main(["train", *sets, "--out", str(folder / "run"), "--quiet", "--no-baseline"]) == 0
    return folder, items, sets


def test_checkpoints_keep_vocabularies_and_fingerprint(csv_run):
    folder, items, _ = csv_run
    from seqrec.data.loading import read_data_file
    from seqrec.train.checkpoint import load_checkpoint, trained_on
    data = read_data_file(folder / "events.csv")
    for name in ("best.pt", "last.pt"):
        ckpt = load_checkpoint(folder / "run" / name)
        stored = trained_on(ckpt, name)
        assert stored.item_vocab == data.item_vocab and stored.user_vocab == data.user_vocab
        assert set(stored.item_vocab.originals.tolist()) == items
        assert stored.fingerprint == data.fingerprint()


def test_recommender_speaks_original_ids(csv_run):
    folder, items, _ = csv_run
    rec = Recommender.from_checkpoint(folder / "run" / "best.pt")
    assert rec.item_vocab.is_str and rec.fingerprint["n_items"] == len(items) and rec.config.model.name == "sasrec"
    history = ["sku-1004", "sku-1007"]
    top = rec.recommend(history, k=5)
    assert len(top) == 5 and {i for i, _ in top} <= items
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    # the same as scoring the internal ids directly
    flat = rec.item_vocab.encode(history)
    ids, scores = rec._topk_internal(flat, np.array([0]), np.array([2]), 5, False)
    assert rec.item_vocab.decode(ids[0]).tolist() == [i for i, _ in top]
    np.testing.assert_allclose(scores[0], [s for _, s in top], rtol=1e-6)
    # excluding the history with k beyond the catalogue: every other item once, none of the history
    everything = rec.recommend(history, k=1000, exclude_history=True)
    assert sorted(i for i, _ in everything) == sorted(items - set(history))
    # unknown ids: an error naming the id and the history, or skipped with a warning
    with pytest.raises(SeqrecError, match="history 2 of 2: unknown item id 'sku-9999'"):
        rec.recommend_batch([history, ["sku-1001", "sku-9999"]], k=3)
    with pytest.warns(SeqrecWarning, match="sku-9999"):
        rows = rec.recommend_batch([history, ["sku-9999"]], k=3, unknown="skip")
    assert rows[0] == rec.recommend(history, k=3) and rows[1] == []


def test_topk_internal_pads_to_k(csv_run):
    folder, items, _ = csv_run
    rec = Recommender.from_checkpoint(folder / "run" / "best.pt")
    flat = np.array([1, 2, 3, 4], dtype=np.int64)
    ids, scores = rec._topk_internal(flat, np.array([0, 1]), np.array([1, 3]), len(items) + 5, True)
    assert ids.shape == scores.shape == (2, len(items) + 5)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert np.isfinite(scores).sum(1).tolist() == [len(items) - 1, len(items) - 3]


def test_cli_recommend_takes_and_prints_original_ids(csv_run, capsys):
    folder, items, _ = csv_run
    best = str(folder / "run" / "best.pt")
    assert main(["recommend", best, "--history", "sku-1004,sku-1007 sku-1010", "-k", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 4 and {r["item"] for r in out} <= items
    assert main(["recommend", best, "--history", "sku-1004 sku-0000", "-k", "4"]) == 2
    assert "unknown item id 'sku-0000'" in capsys.readouterr().err
    assert main(["recommend", best, "--history", "sku-1004 sku-0000", "-k", "4", "--skip-unknown", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == "seqrec: warning: --history: skipped 1 unknown item id(s): 'sku-0000'"
    assert {r["item"] for r in json.loads(captured.out)} <= items


def test_evaluate_refuses_another_dataset(csv_run, capsys):
    folder, _, _ = csv_run
    best = str(folder / "run" / "best.pt")
    assert main(["evaluate", best, "--json"]) == 0             # its own data: fine
    capsys.readouterr()
    write_event_csv(folder / "other.csv", seed=1)
    assert main(["evaluate", best, "--set", f"data.dataset={folder / 'other.csv'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was trained on events (50 users, 25 items" in err[0]
    assert "the data given is other" in err[0] and "expected the same dataset to evaluate" in err[0]


def test_resume_refuses_changed_data(csv_run, tmp_path, capsys):
    folder, _, sets = csv_run
    import shutil
    shutil.copytree(folder / "run", tmp_path / "run")
    write_event_csv(folder / "events.csv", extra_row=True)     # the same path, one more row
    try:
        more = ["--set", "train.max_epochs=2"]
        assert main(["train", *sets, *more, "--out", str(tmp_path / "run"), "--resume", "--quiet"]) == 2
        assert "expected the same dataset to resume" in capsys.readouterr().err
    finally:
        write_event_csv(folder / "events.csv")


def test_checkpoint_without_vocabulary_still_loads(csv_run, tmp_path, capsys):
    folder, items, _ = csv_run
    from seqrec.train.checkpoint import load_checkpoint, save_checkpoint
    ckpt = load_checkpoint(folder / "run" / "best.pt")
    for key in ("item_vocab", "user_vocab", "fingerprint"):      # as written before vocabularies were stored
        del ckpt["dataset"][key]
    old = tmp_path / "old.pt"
    save_checkpoint(old, ckpt)
    with pytest.warns(SeqrecWarning, match="item ids are the internal 1..25"):
        rec = Recommender.from_checkpoint(old)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SeqrecWarning)
        top = rec.recommend([4, 7], k=3)
        assert all(isinstance(i, int) and 1 <= i <= 25 for i, _ in top)
    assert main(["recommend", str(old), "--history", "4 7", "-k", "3"]) == 0
    assert "seqrec: warning:" in capsys.readouterr().err
    # evaluate falls back on the item count
    assert main(["evaluate", str(old), "--set", "data.dataset=synthetic"]) == 2
    assert "the model knows items 1..25 but the data has 500" in capsys.readouterr().err
