"""The training loop on tiny synthetic data: result.json fields, metrics.jsonl, checkpoints, exact resume, early
stopping restoring the best weights, the time budget, divergence, and beating the popularity ranking."""
from __future__ import annotations

import json
import math
from datetime import datetime

import pytest
import torch

from conftest import tiny_config
from seqrec.data.dataset import leave_one_out
from seqrec.errors import TrainingDiverged
from seqrec.eval.baselines import Popularity
from seqrec.eval.evaluator import evaluate
from seqrec.models.sasrec import SASRec
from seqrec.train import Trainer, train
from seqrec.train.checkpoint import model_from_checkpoint

METRIC_KEYS = {"HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR@10"}


@pytest.fixture(scope="module")
def run_a(synthetic, tmp_path_factory):
    """An uninterrupted 4-epoch run."""
    out = tmp_path_factory.mktemp("run_a")
    result = train(tiny_config("train.max_epochs=4"), out, quiet=True, data=synthetic, command="pytest run_a")
    return out, result


def test_result_json_has_every_protocol_field(run_a):
    out, result = run_a
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    r = on_disk
    assert r["method"] == "sasrec" and r["dataset"] == "synthetic"
    assert {"split": "leave-one-out", "ranking": "full", "exclude": "none", "max_len": 20}.items() <= r["protocol"].items()
    for split in ("valid", "test"):
        assert METRIC_KEYS <= set(r["metrics"][split])
        assert all(0.0 <= v <= 1.0 for v in r["metrics"][split].values())
    assert r["metrics"]["test"]["HR@10"] >= r["metrics"]["test"]["HR@5"] >= r["metrics"]["test"]["NDCG@5"]
    assert 1 <= r["best_epoch"] <= 4 and r["epochs_run"] == 4 and r["stopped_by"] == "max_epochs"
    for k in ("wall_time_s", "seconds_per_epoch", "eval_seconds", "peak_rss_mb"):
        assert isinstance(r[k], float) and r[k] > 0, k
    assert r["wall_time_s"] >= 4 * r["seconds_per_epoch"]
    assert isinstance(r["device"], str) and r["device"]
    assert r["threads"] == 1 and r["seed"] == 2020
    assert r["config"] == tiny_config("train.max_epochs=4").to_dict()
    assert isinstance(r["git_commit"], str) and r["git_commit"]
    datetime.strptime(r["date"], "%Y-%m-%dT%H:%M:%S%z")
    assert r["command"] == "pytest run_a"
    assert {"seqrec", "torch", "python"} <= set(r["versions"])


def test_metrics_jsonl_one_line_per_epoch(run_a):
    out, result = run_a
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    for r in lines:
        assert math.isfinite(r["train"]["loss"]) and "ce" in r["train"]
        assert METRIC_KEYS <= set(r["valid"])
    assert lines[-1]["train"]["loss"] < lines[0]["train"]["loss"]
    best = max(lines, key=lambda r: r["valid"]["NDCG@10"])
    assert best["epoch"] == result["best_epoch"]
    assert result["metrics"]["valid"] == pytest.approx(lines[result["best_epoch"] - 1]["valid"], abs=1e-12)


def test_checkpoints_load_with_weights_only(run_a, synthetic):
    out, result = run_a
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(out / name, map_location="cpu", weights_only=True)
        assert "model" in ckpt and "config" in ckpt
    model, cfg, ckpt = model_from_checkpoint(out / "best.pt")
    assert ckpt["epoch"] == result["best_epoch"]
    split = leave_one_out(synthetic)
    test = evaluate(model, split, "test", "none", cfg.eval.ks)["metrics"]
    assert test == pytest.approx(result["metrics"]["test"], abs=1e-12)


def test_exact_resume(run_a, synthetic, tmp_path):
    out_a, result_a = run_a
    out_b = tmp_path / "run_b"
    first = train(tiny_config("train.max_epochs=2"), out_b, quiet=True, data=synthetic)
    assert first["epochs_run"] == 2
    result_b = Trainer(tiny_config("train.max_epochs=4"), out_b, quiet=True, resume=True, data=synthetic).fit()
    assert result_b["epochs_run"] == 4
    assert result_b["metrics"] == result_a["metrics"]
    assert result_b["best_epoch"] == result_a["best_epoch"]
    assert [h["train"] for h in result_b["history"]] == [h["train"] for h in result_a["history"]]
    for name in ("last.pt", "best.pt"):
        wa = torch.load(out_a / name, weights_only=True)["model"]
        wb = torch.load(out_b / name, weights_only=True)["model"]
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{name}: {k} differs after resume"
    sa = torch.load(out_a / "last.pt", weights_only=True)["optimizers"][0]["state"]
    sb = torch.load(out_b / "last.pt", weights_only=True)["optimizers"][0]["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def test_history_names_the_commit_of_each_epoch_across_a_resume(synthetic, tmp_path):
    # a run resumed in a later session may run newer code: each epoch's record keeps the commit that trained it
    first = Trainer(tiny_config("train.max_epochs=2"), tmp_path, quiet=True, data=synthetic)
    first.git_commit = "commit-one"
    first.fit()
    resumed = Trainer(tiny_config("train.max_epochs=3"), tmp_path, quiet=True, resume=True, data=synthetic)
    resumed.git_commit = "commit-two"
    result = resumed.fit()
    assert [r["git_commit"] for r in result["history"]] == ["commit-one", "commit-one", "commit-two"]
    assert result["git_commit"] == "commit-two"


def test_resume_with_a_longer_patience_continues_an_early_stopped_run(synthetic, tmp_path):
    """A run stopped by early stopping, resumed with a larger train.patience, trains on exactly as a run with that
    patience from the start (same losses, metrics and weights); resumed with the same patience it only retests."""
    wobbly = ["train.max_epochs=40", "train.lr=0.05", "model.dropout=0.1", "model.attn_dropout=0.1"]
    longer = train(tiny_config(*wobbly, "train.patience=4"), tmp_path / "p4", quiet=True, data=synthetic)
    short = train(tiny_config(*wobbly, "train.patience=1"), tmp_path / "cut", quiet=True, data=synthetic)
    assert short["stopped_by"] == "early_stopping" and short["epochs_run"] < longer["epochs_run"]
    again = Trainer(tiny_config(*wobbly, "train.patience=1"), tmp_path / "cut", quiet=True, resume=True,
                    data=synthetic).fit()
    assert again["epochs_run"] == short["epochs_run"] and again["metrics"] == short["metrics"]
    resumed = Trainer(tiny_config(*wobbly, "train.patience=4"), tmp_path / "cut", quiet=True, resume=True,
                      data=synthetic).fit()
    assert resumed["epochs_run"] == longer["epochs_run"] and resumed["stopped_by"] == longer["stopped_by"]
    assert resumed["best_epoch"] == longer["best_epoch"] and resumed["metrics"] == longer["metrics"]
    assert [h["train"] for h in resumed["history"]] == [h["train"] for h in longer["history"]]
    wa = torch.load(tmp_path / "p4" / "last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_early_stopping_restores_best_weights(synthetic, tmp_path):
    # a large step size makes the tiny model's validation metric peak early and then wobble
    cfg = tiny_config("train.max_epochs=40", "train.patience=2", "train.lr=0.05", "model.dropout=0.0",
                      "model.attn_dropout=0.0")
    result = train(cfg, tmp_path, quiet=True, data=synthetic)
    assert result["stopped_by"] == "early_stopping"
    assert result["epochs_run"] < 40
    assert result["epochs_run"] == result["best_epoch"] + 2
    hist = result["history"]
    best_value = hist[result["best_epoch"] - 1]["valid"]["NDCG@10"]
    assert all(h["valid"]["NDCG@10"] <= best_value for h in hist)
    assert result["metrics"]["valid"]["NDCG@10"] == pytest.approx(best_value, abs=1e-12)
    # the reported test metrics are those of best.pt, not of the last epoch's weights
    model, cfg2, _ = model_from_checkpoint(tmp_path / "best.pt")
    split = leave_one_out(synthetic)
    assert evaluate(model, split, "test", "none", cfg2.eval.ks)["metrics"] == pytest.approx(
        result["metrics"]["test"], abs=1e-12)
    last, _, _ = model_from_checkpoint(tmp_path / "last.pt")
    assert any(not torch.equal(a, b) for a, b in zip(last.state_dict().values(), model.state_dict().values()))


def test_run_that_never_validates_still_writes_best_pt(synthetic, tmp_path):
    # eval_start after the last epoch: the last weights are the result's, and best.pt must hold them
    result = train(tiny_config("train.max_epochs=1", "train.eval_start=3"), tmp_path, quiet=True, data=synthetic)
    assert result["best_epoch"] == 1
    best, _, _ = model_from_checkpoint(tmp_path / "best.pt")
    last, _, _ = model_from_checkpoint(tmp_path / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(best.state_dict().values(), last.state_dict().values()))


def test_time_budget_stops_with_time_budget(synthetic, tmp_path, monkeypatch):
    # a fake clock: every look at the elapsed time advances it by one second; an epoch has ~39 batches
    clock = {"t": 0.0}

    def fake_elapsed(self):
        clock["t"] += 1.0
        return clock["t"]

    monkeypatch.setattr(Trainer, "elapsed", fake_elapsed)
    result = train(tiny_config("train.max_epochs=50", "train.time_budget_s=50"), tmp_path, quiet=True,
                   data=synthetic)
    assert result["stopped_by"] == "time_budget"
    assert result["epochs_run"] == 2
    assert "valid" in result["history"][-1]            # the interrupted epoch is still validated
    assert METRIC_KEYS <= set(result["metrics"]["test"])
    assert json.loads((tmp_path / "result.json").read_text())["stopped_by"] == "time_budget"


def test_time_budget_real_clock(synthetic, tmp_path):
    result = train(tiny_config("train.max_epochs=1000", "train.time_budget_s=0.05"), tmp_path, quiet=True,
                   data=synthetic)
    assert result["stopped_by"] == "time_budget" and result["epochs_run"] == 1


def test_nan_loss_raises_training_diverged(synthetic, monkeypatch):
    original = SASRec.loss

    def nan_loss(self, batch):
        terms = original(self, batch)
        return {"loss": terms["loss"] * float("nan"), "ce": terms["ce"]}

    monkeypatch.setattr(SASRec, "loss", nan_loss)
    with pytest.raises(TrainingDiverged) as info:
        train(tiny_config("train.log_every=1"), None, quiet=True, data=synthetic)
    msg = str(info.value)
    assert "nan" in msg and "epoch 1" in msg and "batch 1" in msg and "train.lr" in msg


def test_huge_learning_rate_diverges(synthetic):
    with pytest.raises(TrainingDiverged, match="loss became"):
        train(tiny_config("train.lr=1e30", "train.max_epochs=2"), None, quiet=True, data=synthetic)


def test_sasrec_beats_popularity(run_a, synthetic):
    _, result = run_a
    split = leave_one_out(synthetic)
    pop = evaluate(Popularity(split), split, "test", "none")["metrics"]
    assert result["metrics"]["test"]["NDCG@10"] > 1.5 * pop["NDCG@10"]
    assert result["metrics"]["test"]["HR@10"] > pop["HR@10"]
