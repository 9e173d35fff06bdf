"""The Python API (seqrec.api.SeqRec) on DataFrames: fit on string ids and out-of-order timestamps, recommendations
in original ids, exclusion of seen items, save / load, polars = pandas, one-line errors, and the README example."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

pd = pytest.importorskip("pandas")

from conftest import TINY, event_log, one_line_error
from seqrec import SeqRec
from seqrec.errors import ConfigError, SeqrecError

# the tiny SASRec of the other tests, on a frame instead of the synthetic data
TINY_MODEL = [s for s in TINY if not s.startswith("data.")] + ["train.max_epochs=2"]
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def log():
    return event_log()


@pytest.fixture(scope="module")
def fitted(log):
    frame, _ = log
    return SeqRec("sasrec", overrides=TINY_MODEL).fit(frame, user_col="user_id", item_col="item_id",
                                                      time_col="timestamp")


def test_readme_example_runs(tmp_path, monkeypatch):
    """The README's "Python API" code block runs as written (in an empty folder, since it saves a file)."""
    text = README.read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README.md has no python block in its 'Python API' section"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md (Python API)", "exec"), namespace)
    assert (tmp_path / "model.pt").is_file()
    recs = namespace["recs"]
    assert list(recs.columns) == ["user", "item", "rank", "score"] and len(recs) > 0


def test_fit_records_the_frame_and_the_config(fitted):
    assert fitted.result_["epochs_run"] == 2
    assert fitted.result_["protocol"]["split"] == "leave-one-out"
    data = fitted.config.data
    assert (data.dataset, data.user_col, data.item_col, data.time_col) == ("DataFrame", "user_id", "item_id",
                                                                           "timestamp")
    assert "fitted" in repr(fitted)


def test_recommend_returns_original_ids_and_excludes_seen_items(fitted, log):
    frame, histories = log
    recs = fitted.recommend(k=5)
    assert list(recs.columns) == ["user", "item", "rank", "score"]
    assert set(recs["user"]) == set(histories)                       # users=None: every user
    assert set(recs["item"]) <= set(frame["item_id"])                # only the frame's own item ids
    for user, group in recs.groupby("user", sort=False):
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        assert np.all(np.diff(group["score"].to_numpy()) <= 0)
        assert not set(group["item"]) & set(histories[user])         # exclude_seen (default)
    assert all(len(g) == 5 for _, g in recs.groupby("user"))


def test_recommend_uses_each_users_history_in_time_order(fitted, log):
    """recommend(users) = recommend_for_histories of the users' items sorted by timestamp (the frame's rows are
    shuffled, so this holds only if fit ordered them by time)."""
    _, histories = log
    users = ["u3", "u17", "u0"]
    by_user = fitted.recommend(users=users, k=7, exclude_seen=False)
    assert by_user["user"].drop_duplicates().tolist() == users          # in the order given
    by_history = fitted.recommend_for_histories([histories[u] for u in users], k=7, exclude_seen=False)
    assert by_user["item"].tolist() == by_history["item"].tolist()
    np.testing.assert_allclose(by_user["score"], by_history["score"], rtol=1e-5, atol=1e-5)


def test_recommend_for_histories_frame(fitted, log):
    _, histories = log
    recs = fitted.recommend_for_histories([histories["u1"][:3], ["sku-0001"]], k=4)
    assert list(recs.columns) == ["history", "item", "rank", "score"]
    assert recs["history"].tolist() == [0] * 4 + [1] * 4 and recs["rank"].tolist() == [1, 2, 3, 4] * 2
    assert not set(recs[recs["history"] == 0]["item"]) & set(histories["u1"][:3])
    assert "sku-0001" not in set(recs[recs["history"] == 1]["item"])
    one_line_error(SeqrecError, ["'sku-9999'"], fitted.recommend_for_histories, [["sku-0001", "sku-9999"]])
    with pytest.warns(UserWarning, match="sku-9999"):
        skipped = fitted.recommend_for_histories([["sku-0001", "sku-9999"]], k=4, unknown="skip")
    assert skipped["item"].tolist() == recs[recs["history"] == 1]["item"].tolist()


def test_unknown_user_is_an_error(fitted):
    one_line_error(SeqrecError, ["'nobody'"], fitted.recommend, users=["u1", "nobody"])


def test_save_load_round_trip(fitted, tmp_path):
    path = fitted.save(tmp_path / "model.pt")
    loaded = SeqRec.load(path)
    assert loaded.config.to_dict() == fitted.config.to_dict()
    pd.testing.assert_frame_equal(loaded.recommend(k=10), fitted.recommend(k=10))
    histories = [["sku-0003", "sku-0004"], ["sku-0010"]]
    pd.testing.assert_frame_equal(loaded.recommend_for_histories(histories, k=10),
                                  fitted.recommend_for_histories(histories, k=10))
    one_line_error(SeqrecError, [str(tmp_path), "folder"], fitted.save, tmp_path)


def test_saved_model_serves_the_command_line(fitted, tmp_path, capsys):
    """A file written by save is a checkpoint for `seqrec recommend`: --history, and --users all (which takes the
    users' histories from the interactions stored in it)."""
    import json

    from seqrec.cli import main
    path = fitted.save(tmp_path / "model.pt")
    assert main(["recommend", str(path), "--history", "sku-0003 sku-0004", "-k", "4", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    api = fitted.recommend_for_histories([["sku-0003", "sku-0004"]], k=4, exclude_seen=False)
    assert [r["item"] for r in cli] == api["item"].tolist()
    out = tmp_path / "recs.csv"
    assert main(["recommend", str(path), "--users", "all", "-k", "3", "--out", str(out)]) == 0
    batch = pd.read_csv(out, dtype={"user": str, "item": str})
    expected = fitted.recommend(k=3)
    assert batch[["user", "item", "rank"]].equals(expected[["user", "item", "rank"]])


def test_polars_frame_gives_the_same_model(fitted, log):
    pl = pytest.importorskip("polars")
    frame, _ = log
    model = SeqRec("sasrec", overrides=TINY_MODEL).fit(pl.from_pandas(frame))   # columns from the config
    for (name, a), (_, b) in zip(model._recommender.model.state_dict().items(),
                                 fitted._recommender.model.state_dict().items()):
        assert torch.equal(a, b), name
    pd.testing.assert_frame_equal(model.recommend(k=5), fitted.recommend(k=5))


def test_bad_frames_are_one_line_errors():
    frame = pd.DataFrame({"user": ["a", "a", "a"], "item": ["x", "y", "z"], "ts": [1, 2, 3]})
    model = SeqRec("sasrec", overrides=TINY_MODEL)
    one_line_error(SeqrecError, ["missing column 'user_id'", "available columns: user, item, ts"], model.fit, frame)
    one_line_error(SeqrecError, ["missing column 'time'", "user, item, ts"], model.fit, frame,
                   user_col="user", item_col="item", time_col="time")
    with_nan = frame.assign(item=["x", None, "z"])
    one_line_error(SeqrecError, ["row 2", "'item'"], model.fit, with_nan, user_col="user", item_col="item",
                   time_col="ts")
    one_line_error(SeqrecError, ["no rows"], model.fit, frame.iloc[:0], user_col="user", item_col="item",
                   time_col="ts")
    cols = dict(user_col="user", item_col="item", time_col="ts")
    one_line_error(SeqrecError, ["row 3", "'item'", "empty"], model.fit, frame.assign(item=["x", "y", " "]), **cols)
    one_line_error(SeqrecError, ["row 1", "'user'", "'null'"], model.fit, frame.assign(user=["null", "a", "a"]),
                   **cols)
    repeated = pd.concat([frame, frame[["item"]]], axis=1)
    one_line_error(SeqrecError, ["column 'item' occurs 2 times"], model.fit, repeated, **cols)
    one_line_error(SeqrecError, ["pandas or polars DataFrame", "list"], model.fit, [("a", "x", 1)])
    one_line_error(SeqrecError, ["not fitted"], model.recommend)


def test_config_forms_and_conflicts(tmp_path):
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("model:\n  name: gru4rec\n  d: 16\ntrain:\n  lr: 0.01\n")
    from_file = SeqRec(config=yaml_path, overrides=["train.max_epochs=1"])
    assert (from_file.config.model.name, from_file.config.model.d, from_file.config.train.lr,
            from_file.config.train.max_epochs) == ("gru4rec", 16, 0.01, 1)
    assert SeqRec("gru4rec", config=from_file.config).config.to_dict() == from_file.config.to_dict()
    assert SeqRec(config={"model": {"name": "bert4rec"}}).config.model.name == "bert4rec"
    one_line_error(ConfigError, ["'sasrec'", "'gru4rec'"], SeqRec, "sasrec", config=yaml_path)
    one_line_error(ConfigError, ["train", "unknown key 'nope'"], SeqRec, overrides=["train.nope=1"])


def test_frame_reads_as_the_same_table_file(log, tmp_path):
    """A frame and a CSV file of the same rows give the same data: same sequences, order and vocabularies."""
    from seqrec.data.frames import read_frame
    from seqrec.data.readers import read_table
    frame, _ = log
    frame.to_csv(tmp_path / "events.csv", index=False)
    for k_core in (0, 5):
        a = read_frame(frame, k_core=k_core)
        b = read_table(tmp_path / "events.csv", "csv", k_core=k_core)
        assert np.array_equal(a.items, b.items) and np.array_equal(a.offsets, b.offsets)
        assert a.item_vocab == b.item_vocab and a.user_vocab == b.user_vocab
        assert np.array_equal(a.times, b.times)


def test_datetime_and_text_timestamps_order_rows_like_numbers():
    from seqrec.data.frames import read_frame
    seconds = [30, 10, 20, 5]
    frame = pd.DataFrame({"user_id": ["a", "a", "a", "b"], "item_id": [3, 1, 2, 9], "timestamp": seconds})
    expected = read_frame(frame)
    assert expected.item_vocab.decode(expected.items).tolist() == [1, 2, 3, 9]     # sorted per user by time
    as_datetimes = frame.assign(timestamp=pd.to_datetime(seconds, unit="s"))
    as_text = frame.assign(timestamp=[t.isoformat() + "+00:00" for t in as_datetimes["timestamp"]])
    for variant in (as_datetimes, as_text):
        data = read_frame(variant)
        assert np.array_equal(data.items, expected.items) and np.array_equal(data.times, expected.times)


def test_fit_honours_the_configs_split_and_keeps_out_dir(log, tmp_path):
    frame, _ = log
    model = SeqRec("sasrec", overrides=TINY_MODEL + ["data.split=temporal"])
    model.fit(frame, out_dir=tmp_path / "run")
    assert model.result_["protocol"]["split"] == "temporal"
    for name in ("best.pt", "last.pt", "metrics.jsonl", "result.json"):
        assert (tmp_path / "run" / name).is_file(), name
    # the run's best.pt is a checkpoint like any other: it loads into SeqRec (histories then read from the
    # config's data, which for a frame is not a file: recommend_for_histories still works)
    loaded = SeqRec.load(tmp_path / "run" / "best.pt")
    pd.testing.assert_frame_equal(loaded.recommend_for_histories([["sku-0003"]], k=3),
                                  model.recommend_for_histories([["sku-0003"]], k=3))
    one_line_error(SeqrecError, ["DataFrame", "SeqRec.save", "recommend_for_histories"], loaded.recommend)


def test_ids_must_come_as_lists(fitted):
    one_line_error(SeqrecError, ["users", "list of user ids", "str"], fitted.recommend, users="u1")
    one_line_error(SeqrecError, ["histories", "str"], fitted.recommend_for_histories, "sku-0001")
    by_array = fitted.recommend(users=np.array(["u1", "u2"]), k=3)
    pd.testing.assert_frame_equal(by_array, fitted.recommend(users=pd.Series(["u1", "u2"]), k=3))
