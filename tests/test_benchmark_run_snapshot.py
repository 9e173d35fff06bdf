"""benchmarks/run_snapshot.py: the snapshot of a run folder names the best epoch by the run's own selection, with
that epoch's validation and tracked test metrics, and says whether the run finished; a name that is not a run folder
is a one-line error."""
import pytest
import torch
from conftest import load_benchmark, tiny_config

from seqrec.errors import SeqrecError
from seqrec.train import Trainer


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("run_snapshot")


def test_snapshot_of_a_finished_run_matches_its_history(bench, tmp_path):
    cfg = tiny_config("train.max_epochs=3", "train.track_test=true")
    result = Trainer(cfg, tmp_path / "run", quiet=True).fit()
    snap = bench.snapshot("run", scratch=tmp_path)
    history = result["history"]
    # the best epoch by hand: the first epoch with the highest validation metric
    best = max(history, key=lambda r: (r["valid"][cfg.train.metric], -r["epoch"]))
    assert snap["state"] == "finished" and snap["epochs_run"] == 3 == len(snap["history"])
    assert snap["best_epoch"] == best["epoch"] == result["best_epoch"]
    assert snap["best_valid"] == best["valid"] and snap["test_at_best_epoch"] == best["test"]
    assert snap["selection_metric"] == cfg.train.metric and snap["stopped_by"] == result["stopped_by"]
    assert snap["run_commits"] == [result["git_commit"]]


def test_snapshot_of_an_unfinished_checkpoint_is_running(bench, tmp_path):
    # last.pt as the trainer leaves it between epochs of a run that goes on (finished=False)
    Trainer(tiny_config("train.max_epochs=2"), tmp_path / "run", quiet=True).fit()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    state["finished"] = False
    torch.save(state, tmp_path / "run" / "last.pt")
    snap = bench.snapshot("run", scratch=tmp_path)
    assert snap["state"] == "running" and snap["stopped_by"] is None and snap["epochs_run"] == 2


def test_missing_run_folder_is_named(bench, tmp_path):
    with pytest.raises(SeqrecError, match="nope/last.pt: no checkpoint"):
        bench.snapshot("nope", scratch=tmp_path)
