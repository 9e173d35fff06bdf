"""RESULTS.md is generated from result files: accuracy rows carry the files' numbers, speed files their summary,
and a broken file is reported with its name and line."""
from __future__ import annotations

import json

import pytest

from seqrec.errors import SeqrecError
from seqrec.results import write_results_md


def test_rows_come_from_the_files(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    acc = {"method": "sasrec", "dataset": "Beauty", "protocol": {"exclude": "none"},
           "metrics": {"valid": {}, "test": {"HR@10": 0.08291, "NDCG@10": 0.04061, "HR@20": 0.1146, "NDCG@20": 0.0486}},
           "best_epoch": 30, "epochs_run": 34, "stopped_by": "time_budget", "wall_time_s": 1447.8,
           "config": {"train": {"examples": "prefix"}}, "benchmark": {"first_reached_by_selected_checkpoint":
                                                                    {"elapsed_s": 297.8}}}
    (res / "sasrec_x.json").write_text(json.dumps(acc))
    # one variant of a comparison, written by its own process: a row of its run
    (res / "cmp_part_z.json").write_text(json.dumps({"kind": "accuracy_part", "variant": "z",
                                                     "result": {**acc, "method": "mqsa_ted", "best_epoch": 7}}))
    (res / "speed_y.json").write_text(json.dumps({"kind": "speed", "description": "a speed test",
                                                  "summary": {"ratio": 6.43}}))
    out = tmp_path / "RESULTS.md"
    assert write_results_md(res, out) == 3
    text = out.read_text()
    part = next(line for line in text.splitlines() if line.startswith("| cmp_part_z |"))
    assert "| mqsa_ted |" in part and "| 0.0829 | 0.0406 | 0.1146 | 0.0486 | 7 / 34 |" in part
    row = next(line for line in text.splitlines() if line.startswith("| sasrec_x |"))
    assert "| prefix | none | 0.0829 | 0.0406 | 0.1146 | 0.0486 | 30 / 34 | time_budget | 1,447.8 | 297.8 |" in row
    assert "### speed_y" in text and "| ratio | 6.4300 |" in text


def test_broken_file_is_named(tmp_path):
    (tmp_path / "bad.json").write_text('{"a": 1,\n "b": }')
    with pytest.raises(SeqrecError, match=r"bad\.json:2"):
        write_results_md(tmp_path, tmp_path / "R.md")


def test_small_values_are_not_printed_as_zero():
    from seqrec.results import _fmt
    assert [_fmt(v) for v in (2.3e-21, -5.2e-05, 0.0, 0.0354, 12345.6, 7)] == \
        ["2.3e-21", "-5.2e-05", "0.0000", "0.0354", "12,345.6", "7"]
