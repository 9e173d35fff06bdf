"""benchmarks/compare_runs.py: a finished run's result file wins over its progress snapshot, both give the same
fields, validation is compared at equal epochs, and a missing run is a one-line error before anything is printed."""
import json

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("compare_runs")


def history(valids):
    return [{"epoch": e, "valid": {"NDCG@10": v}} for e, v in enumerate(valids, 1)]


CONFIG = {"train": {"metric": "NDCG@10"}}
RESULT = {"metrics": {"valid": {"NDCG@10": 0.3}, "test": {"NDCG@10": 0.2, "HR@10": 0.4}}, "best_epoch": 2,
          "epochs_run": 3, "stopped_by": "early_stopping", "config": CONFIG, "history": history([0.1, 0.3, 0.25])}
PROGRESS = {"kind": "progress", "state": "running", "stopped_by": None, "epochs_run": 2, "best_epoch": 1,
            "best_valid": {"NDCG@10": 0.15}, "test_at_best_epoch": {"NDCG@10": 0.125, "HR@10": 0.5},
            "config": CONFIG, "history": history([0.15, 0.05])}


@pytest.fixture()
def results(tmp_path):
    (tmp_path / "progress").mkdir()
    (tmp_path / "done.json").write_text(json.dumps(RESULT))
    # a stale snapshot of the finished run: the result file supersedes it
    (tmp_path / "progress" / "done.json").write_text(json.dumps({**PROGRESS, "epochs_run": 1}))
    (tmp_path / "progress" / "going.json").write_text(json.dumps(PROGRESS))
    return tmp_path


def test_tables_from_result_and_progress_files(bench, results, capsys):
    assert bench.main(["done", "going", "--at", "1", "3", "--results", str(results)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| done | done.json | 3 | 2 | 0.3000 | 0.2000 | 0.4000 | early_stopping |"
    assert lines[3] == "| going | progress/going.json | 2 | 1 | 0.1500 | 0.1250 | 0.5000 | running |"
    assert lines[7] == "| done | 0.1000 | 0.2500 |"
    assert lines[8] == "| going | 0.1500 | - |"          # not at epoch 3 yet


def test_missing_run_is_one_line_error_naming_both_paths(bench, results, capsys):
    assert bench.main(["done", "nope", "--results", str(results)]) == 2
    out, err = capsys.readouterr()
    assert out == ""                                      # nothing printed for the runs that were found
    assert err.count("\n") == 1 and "nope.json" in err and str(results / "progress") in err


def test_file_without_the_fields_or_another_metric_is_named(bench, results, capsys):
    (results / "odd.json").write_text(json.dumps({"config": CONFIG}))
    assert bench.main(["done", "odd", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "odd.json" in err
    (results / "hr.json").write_text(json.dumps({**RESULT, "config": {"train": {"metric": "HR@10"}},
                                                 "history": [{"epoch": 1, "valid": {"HR@10": 0.5}}]}))
    assert bench.main(["done", "hr", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "HR@10" in err and "NDCG@10" in err
