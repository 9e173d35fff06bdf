"""Issue 14, "Must show": your data in, your ids out. For a CSV, a RecBole .inter and a Parquet file with string
item ids and rows out of time order: train with the CLI, then recommend through the CLI (`--history`), the Python
API (a checkpoint of `seqrec train` loads into SeqRec) and the batch command (`--users all --out`), and get the
file's own ids back, the same ones from all three."""
from __future__ import annotations

import json

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from conftest import TINY, event_log
from seqrec import SeqRec
from seqrec.cli import main

TINY_MODEL = [s for s in TINY if not s.startswith("data.")] + ["train.max_epochs=2"]
K = 5


def write_log(frame, path, fmt: str) -> None:
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "inter":      # RecBole atomic file: tab-separated, typed header
        header = "user_id:token\titem_id:token\ttimestamp:float\n"
        path.write_text(header + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in frame.itertuples(index=False)))
    else:
        pytest.importorskip("pyarrow")
        frame.to_parquet(path)


@pytest.fixture(scope="module")
def log():
    return event_log(n_users=120, seed=1)


@pytest.mark.parametrize("fmt", ["csv", "inter", "parquet"])
def test_original_ids_through_cli_api_and_batch(tmp_path, capsys, log, fmt):
    frame, histories = log
    item_set = set(frame["item_id"])
    path = tmp_path / f"events.{fmt}"
    write_log(frame, path, fmt)
    run = tmp_path / "run"
    sets = [a for s in TINY_MODEL + [f"data.dataset={path}"] for a in ("--set", s)]
    assert main(["train", *sets, "--out", str(run), "--quiet", "--no-baseline"]) == 0
    capsys.readouterr()
    best = run / "best.pt"

    # the CLI, for a history given in the file's ids
    history = histories["u5"][-4:]
    assert main(["recommend", str(best), "--history", " ".join(history), "-k", str(K), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    cli_items = [r["item"] for r in cli]
    assert len(cli_items) == K and set(cli_items) <= item_set

    # the Python API on the same checkpoint: the same items and scores
    model = SeqRec.load(best)
    api = model.recommend_for_histories([history], k=K, exclude_seen=False)
    assert api["item"].tolist() == cli_items
    np.testing.assert_allclose(api["score"], [r["score"] for r in cli], rtol=1e-5, atol=1e-6)

    # every user of the file, through the API and through the batch command: the same table
    by_api = model.recommend(k=K)
    assert set(by_api["user"]) == set(histories) and set(by_api["item"]) <= item_set
    for user, group in by_api.groupby("user"):
        assert not set(group["item"]) & set(histories[user])      # seen items excluded by default
    out = tmp_path / "recs.csv"
    assert main(["recommend", str(best), "--users", "all", "-k", str(K), "--out", str(out)]) == 0
    batch = pd.read_csv(out, dtype={"user": str, "item": str})
    key = ["user", "rank"]
    merged = by_api.sort_values(key).reset_index(drop=True)
    batch = batch.sort_values(key).reset_index(drop=True)
    assert batch["user"].tolist() == merged["user"].tolist()
    assert batch["item"].tolist() == merged["item"].tolist()
    np.testing.assert_allclose(batch["score"], merged["score"], rtol=1e-4, atol=1e-5)
