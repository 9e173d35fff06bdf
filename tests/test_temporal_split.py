"""The global temporal split (data.split=temporal): a hand-computed case, the no-leakage property against a naive
per-user reference on random data, config and data errors, and a tiny model trained end to end on a CSV."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY, event_log
from seqrec.cli import main
from seqrec.config import load_config
from seqrec.data.dataset import InteractionData, temporal_split
from seqrec.data.loading import make_split
from seqrec.errors import ConfigError, DataError

# (items, times) per user; cuts at 5 (validation) and 8 (test)
HAND = [
    ([1, 2, 3, 4, 5], [1, 2, 5, 6, 9]),   # train 1 2 | valid target 3 (t=5) | test target 5 (t=9), history 1 2 3 4
    ([2, 3], [6, 7]),                     # only in the validation period: no history before it, not evaluated
    ([3, 1, 4], [1, 3, 4]),               # training only
    ([5, 2, 1], [2, 8, 9]),               # train 5 | nothing in [5, 8) | test target 2 (t=8, at the cut), history 5
    ([4, 5], [9, 10]),                    # only in the test period: not evaluated
    ([1, 3, 2], [4, 7, 7]),               # train 1 | valid target 3 (t=7), history 1 | no test target
]


def hand_data() -> InteractionData:
    return InteractionData.from_sequences("hand", [np.asarray(s) for s, _ in HAND], times=[t for _, t in HAND])


def test_hand_computed_split():
    split = temporal_split(hand_data(), valid_cut=5, test_cut=8)
    assert split.train_length.tolist() == [2, 0, 3, 1, 0, 1]
    flat, offsets = split.train_sequences_csr()
    assert flat.tolist() == [1, 2, 3, 1, 4, 5, 1] and offsets.tolist() == [0, 2, 2, 5, 6, 6, 7]
    starts, lengths, targets = split.eval_inputs("valid")
    assert split.users("valid").tolist() == [0, 5]
    assert lengths.tolist() == [2, 1] and targets.tolist() == [3, 3]
    starts, lengths, targets = split.eval_inputs("test")
    assert split.users("test").tolist() == [0, 3]
    assert lengths.tolist() == [4, 1] and targets.tolist() == [5, 2]
    assert [split.data.items[s:s + n].tolist() for s, n in zip(starts, lengths)] == [[1, 2, 3, 4], [5]]
    assert split.protocol == {"split": "temporal", "valid_cut": 5, "test_cut": 8, "train_interactions": 7,
                              "valid_users": 2, "test_users": 2, "valid_users_without_history": 1,
                              "test_users_without_history": 1}
    assert "1 validation and 1 test users have no interaction before their target" in split.note


def test_quantile_cuts_are_interpolated_quantiles():
    # one interaction per time 1..10: the 0.5 quantile is 5.5 (halfway between the 5th and 6th time)
    data = InteractionData.from_sequences("q", [np.arange(1, 6), np.arange(1, 6)],
                                          times=[[1, 3, 5, 7, 9], [2, 4, 6, 8, 10]])
    split = temporal_split(data, valid_quantile=0.5, test_quantile=0.75)
    assert split.protocol["valid_cut"] == 5.5 and split.protocol["test_cut"] == pytest.approx(7.75)
    assert split.protocol["valid_time_quantile"] == 0.5 and split.protocol["test_time_quantile"] == 0.75
    assert split.train_length.tolist() == [3, 2]       # times 1 3 5 and 2 4 are before 5.5


def naive_temporal(items, times, valid_cut, test_cut):
    """Per user in plain Python: (training items, (history, target) or None for valid, same for test)."""
    train = [i for i, t in zip(items, times) if t < valid_cut]
    out = []
    for lo, hi in ((valid_cut, test_cut), (test_cut, float("inf"))):
        first = next((k for k, t in enumerate(times) if lo <= t < hi), None)
        out.append(None if first is None or first == 0 else (items[:first], items[first]))
    return train, out[0], out[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_leakage_and_same_as_naive(seed):
    rng = np.random.default_rng(seed)
    sequences, times = [], []
    for _ in range(300):
        n = int(rng.integers(1, 12))
        sequences.append(rng.integers(1, 40, size=n))
        times.append(np.sort(rng.integers(0, 100, size=n)).astype(float))   # many ties, also across a cut
    data = InteractionData.from_sequences("random", sequences, times=times)
    q_valid, q_test = sorted(rng.uniform(0.3, 0.95, size=2))
    split = temporal_split(data, valid_quantile=q_valid, test_quantile=q_test)
    valid_cut, test_cut = split.protocol["valid_cut"], split.protocol["test_cut"]
    # every training interaction is before the validation cut
    flat_times = np.concatenate([data.times[s:s + n] for s, n in zip(split.train_start, split.train_length)])
    assert (flat_times < valid_cut).all()
    for which, lo, hi in (("valid", valid_cut, test_cut), ("test", test_cut, np.inf)):
        starts, lengths, targets = split.eval_inputs(which)
        for s, n in zip(starts, lengths):
            target_time = data.times[s + n]
            assert lo <= target_time < hi
            assert n >= 1 and (data.times[s:s + n] < target_time).all()    # history strictly before the target
            assert data.times[s + n - 1] < lo                               # the target is the first after the cut
    # the same users, histories and targets as the naive per-user loop
    for which, part in (("valid", 1), ("test", 2)):
        want = {u: naive_temporal(sequences[u].tolist(), times[u].tolist(), valid_cut, test_cut)[part]
                for u in range(len(sequences))}
        want = {u: v for u, v in want.items() if v is not None}
        starts, lengths, targets = split.eval_inputs(which)
        got = {int(u): (data.items[s:s + n].tolist(), int(t))
               for u, s, n, t in zip(split.users(which), starts, lengths, targets)}
        assert got == want
    for u in range(len(sequences)):
        train, _, _ = naive_temporal(sequences[u].tolist(), times[u].tolist(), valid_cut, test_cut)
        s, n = split.train_start[u], split.train_length[u]
        assert data.items[s:s + n].tolist() == train


def test_data_without_timestamps_is_refused():
    data = InteractionData.from_sequences("s3rec-like", [np.array([1, 2, 3])])
    with pytest.raises(DataError, match=r"data\.split=temporal needs interaction timestamps"):
        temporal_split(data)


def test_timestamps_must_not_go_backwards():
    data = InteractionData.from_sequences("bad", [np.array([1, 2]), np.array([1, 2, 3])],
                                          times=[[1, 2], [3, 5, 4]])
    with pytest.raises(DataError, match=r"user 2: timestamps go backwards at position 3"):
        temporal_split(data)


def test_cuts_that_leave_nothing_to_evaluate_are_errors():
    with pytest.raises(DataError, match=r"no interaction is before the validation cut"):
        temporal_split(hand_data(), valid_cut=0.5, test_cut=8)
    with pytest.raises(DataError, match=r"no user has a test target"):
        temporal_split(hand_data(), valid_cut=5, test_cut=11)
    with pytest.raises(DataError, match=r"validation cut 8 is not before the test cut 5"):
        temporal_split(hand_data(), valid_cut=8, test_cut=5)


@pytest.mark.parametrize("overrides, match", [
    (["data.split=random"], r"data\.split: invalid value 'random'; valid choices: loo, temporal"),
    (["data.split=temporal", "data.test_time_quantile=1.0"], r"data\.test_time_quantile: invalid value 1\.0"),
    (["data.split=temporal", "data.valid_time_quantile=0"], r"data\.valid_time_quantile: invalid value 0"),
    (["data.split=temporal", "data.valid_time_quantile=0.9", "data.test_time_quantile=0.8"],
     r"data\.valid_time_quantile: 0\.9 is not below data\.test_time_quantile 0\.8"),
    (["data.split=temporal", "data.valid_time=10", "data.test_time=10"], r"data\.valid_time: 10\.0 is not before"),
    (["data.split=temporal", "data.test_time=.inf"], r"data\.test_time: invalid value inf"),
    (["data.test_time=100"], r"data\.test_time: applies to data\.split=temporal only"),
    (["data.split=temporal"], r"data\.split: 'temporal' needs timestamps and the synthetic data has none"),
    (["data.split=temporal", "data.dataset=x.csv", "data.time_col=null"],
     r"data\.split: 'temporal' needs timestamps but data\.time_col is null"),
])
def test_bad_split_config_is_one_line_error(overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(None, overrides)
    assert "\n" not in str(e.value)


def test_s3rec_file_with_temporal_split_is_one_line_cli_error(tmp_path, capsys):
    path = tmp_path / "Mini.txt"
    path.write_text("1 1 2 3\n2 2 3 4\n")
    rc = main(["data", "check", str(path), "--set", "data.split=temporal"])
    out = capsys.readouterr().out
    assert rc == 0 and "problem:" in out and "needs interaction timestamps" in out
    rc = main(["train", "--set", f"data.dataset={path}", "--set", "data.split=temporal", "--out",
               str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "data.split=temporal needs interaction timestamps" in err


@pytest.fixture(scope="module")
def event_csv(tmp_path_factory):
    frame, _ = event_log()
    path = tmp_path_factory.mktemp("temporal") / "events.csv"
    frame.to_csv(path, index=False)
    return path


def test_train_end_to_end_with_temporal_split(event_csv, tmp_path, capsys):
    """A tiny SASRec trained on a CSV with data.split=temporal: the protocol records the split, the evaluated users
    are the split's, `seqrec evaluate` reproduces the test metrics, `seqrec results` shows the split."""
    out = tmp_path / "run"
    sets = [a for s in TINY + [f"data.dataset={event_csv}", "data.split=temporal", "data.valid_time_quantile=0.7",
                               "data.test_time_quantile=0.85", "train.max_epochs=2"] for a in ("--set", s)]
    assert main(["train", *sets, "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "result.json").read_text())
    protocol = result["protocol"]
    cfg = load_config(None, TINY + [f"data.dataset={event_csv}", "data.split=temporal",
                                    "data.valid_time_quantile=0.7", "data.test_time_quantile=0.85"])
    from seqrec.data.loading import load_dataset
    split = make_split(load_dataset(cfg.data), cfg.data)
    assert protocol["split"] == "temporal" and protocol["ranking"] == "full"
    assert protocol["valid_time_quantile"] == 0.7 and protocol["test_time_quantile"] == 0.85
    assert protocol["valid_cut"] == split.protocol["valid_cut"]
    assert protocol["users_evaluated"] == len(split.users("test")) == protocol["test_users"]
    assert protocol["valid_users_evaluated"] == len(split.users("valid"))
    assert 0 < protocol["train_interactions"] < split.data.items.size
    assert all(0.0 <= v <= 1.0 for v in result["metrics"]["test"].values())
    capsys.readouterr()
    assert main(["evaluate", str(out / "best.pt"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["protocol"]["split"] == "temporal" and got["users"] == protocol["test_users"]
    assert got["metrics"] == pytest.approx(result["metrics"]["test"], abs=1e-12)
    results = tmp_path / "results"
    results.mkdir()
    (results / "temporal_run.json").write_text(json.dumps(result))
    assert main(["results", "--results", str(results), "--out", str(tmp_path / "R.md")]) == 0
    row = next(line for line in (tmp_path / "R.md").read_text().splitlines() if line.startswith("| temporal_run |"))
    assert "| sasrec | temporal q0.7/q0.85 |" in row


def test_resume_of_a_run_from_before_the_split_keys(tmp_path, synthetic):
    """A last.pt whose config has no data.split keys (written before they existed) resumes: the missing keys take
    their defaults instead of counting as changed."""
    from conftest import tiny_config
    from seqrec.train import Trainer
    from seqrec.train.checkpoint import load_checkpoint, save_checkpoint
    out = tmp_path / "run"
    Trainer(tiny_config("train.max_epochs=1"), out, quiet=True, data=synthetic).fit()
    state = load_checkpoint(out / "last.pt")
    for key in ("split", "valid_time_quantile", "test_time_quantile", "valid_time", "test_time"):
        del state["config"]["data"][key]
    save_checkpoint(out / "last.pt", state)
    result = Trainer(tiny_config("train.max_epochs=2"), out, quiet=True, resume=True, data=synthetic).fit()
    assert result["epochs_run"] == 2 and result["protocol"]["split"] == "leave-one-out"


@pytest.mark.parametrize("fmt", ["csv", "inter", "parquet"])
def test_readers_keep_each_interactions_time(tmp_path, fmt):
    """Rows out of time order in, `data.times` out: per user non-decreasing and paired with the right item."""
    from seqrec.data.loading import read_data_file
    frame, _ = event_log(n_users=30)
    path = tmp_path / f"events.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "inter":
        frame.rename(columns={"user_id": "user_id:token", "item_id": "item_id:token",
                              "timestamp": "timestamp:float"}).to_csv(path, sep="\t", index=False)
    else:
        frame.to_parquet(path)
    data = read_data_file(path)
    assert data.times is not None and len(data.times) == len(data.items) == len(frame)
    got = set()
    for u in range(data.n_users):
        s, e = data.offsets[u], data.offsets[u + 1]
        assert (np.diff(data.times[s:e]) >= 0).all()
        items = data.item_vocab.originals[data.items[s:e] - 1]     # internal id i is originals[i - 1]
        got |= {(str(data.user_ids[u]), str(i), float(t)) for i, t in zip(items, data.times[s:e])}
    assert got == {(u, i, float(t)) for u, i, t in frame.itertuples(index=False)}
