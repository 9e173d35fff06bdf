"""Paired comparison of two models (seqrec.eval.paired, `seqrec compare`): per-user metric values against hand-computed
ones, the statistics against a hand-computed case and a naive resampling loop, and the command against
`seqrec evaluate` of each checkpoint."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import TINY
from seqrec.cli import compare_checkpoints, main
from seqrec.errors import SeqrecError
from seqrec.eval.metrics import METRICS, metric_values, metrics_from_ranks
from seqrec.eval.paired import bootstrap_means, paired_difference

SETS = [a for s in TINY for a in ("--set", s)]


def test_metric_values_hand_computed():
    ranks = torch.tensor([0.0, 1.0, 9.0, 10.0, math.inf])       # inf: the target was excluded from the ranking
    assert metric_values(ranks, "HR", 10).tolist() == [1, 1, 1, 0, 0]
    assert metric_values(ranks, "NDCG", 10).tolist() == pytest.approx([1, 1 / math.log2(3), 1 / math.log2(11), 0, 0])
    assert metric_values(ranks, "MRR", 10).tolist() == pytest.approx([1, 1 / 2, 1 / 10, 0, 0])
    with pytest.raises(ValueError, match="unknown metric"):
        metric_values(ranks, "AUC", 10)


def test_metric_values_average_to_the_reported_metrics():
    g = torch.Generator().manual_seed(0)
    ranks = torch.randint(0, 40, (500,), generator=g).double()
    ranks[::7] = math.inf
    reported = metrics_from_ranks(ranks, [1, 5, 10, 20])
    for k in (1, 5, 10, 20):
        for kind in METRICS:
            assert float(metric_values(ranks, kind, k).mean()) == pytest.approx(reported[f"{kind}@{k}"], abs=1e-15)


def test_paired_difference_hand_computed():
    # d = [1, 0, 0, 0]: mean 0.25, sd 0.5, se 0.25, so t = 1 and p = erfc(1 / sqrt 2) = 0.3173
    r = paired_difference([0, 0, 1, 1], [1, 0, 1, 1], resamples=0)
    assert r["a"] == 0.5 and r["b"] == 0.75 and r["difference"] == 0.25 and r["relative"] == 0.5
    assert r["z"] == pytest.approx(1.0) and r["p_value"] == pytest.approx(0.31731, abs=1e-5)
    assert (r["b_better"], r["a_better"], r["same"], r["users"]) == (1, 0, 3, 4)
    assert r["ci_low"] is None and r["ci_high"] is None


def test_identical_models_differ_by_nothing():
    v = np.random.default_rng(0).random(300)
    r = paired_difference(v, v.copy(), resamples=200)
    assert r["difference"] == 0 and r["p_value"] == 1.0 and r["ci_low"] == 0 and r["ci_high"] == 0
    assert r["same"] == 300


def test_constant_shift_has_no_noise():
    v = np.random.default_rng(0).random(50)
    r = paired_difference(v, v + 0.5, resamples=0)
    assert r["difference"] == pytest.approx(0.5) and r["p_value"] == 0.0 and r["b_better"] == 50


def test_bootstrap_means_match_a_naive_loop():
    d = np.random.default_rng(1).normal(size=301)
    rng = np.random.default_rng(7)
    naive = [d[rng.integers(0, len(d), size=len(d))].mean() for _ in range(150)]   # one resample at a time
    np.testing.assert_allclose(bootstrap_means(d, 150, seed=7), naive, rtol=1e-12)


def test_interval_is_seeded_and_matches_the_normal_approximation():
    # 4,000 users, B better by 0.01 on average with per-user noise sd 0.1: the 95% interval is about
    # mean -/+ 1.96 x 0.1 / sqrt(4000) = -/+ 0.0031 around the observed difference
    rng = np.random.default_rng(3)
    a = rng.random(4000)
    b = a + 0.01 + rng.normal(0, 0.1, 4000)
    r = paired_difference(a, b, resamples=2000, seed=5)
    assert r == paired_difference(a, b, resamples=2000, seed=5)
    half = 1.96 * np.std(b - a, ddof=1) / math.sqrt(4000)
    assert r["ci_low"] < r["difference"] < r["ci_high"]
    assert (r["ci_high"] - r["ci_low"]) / 2 == pytest.approx(half, rel=0.1)
    assert r["ci_low"] > 0 and r["p_value"] < 1e-8


def test_paired_difference_rejects_unpaired_input():
    with pytest.raises(ValueError, match="same users"):
        paired_difference([0, 1, 0], [0, 1])
    with pytest.raises(ValueError, match="at least 2 users"):
        paired_difference([1.0], [0.0])


# --- the command ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    for name, extra in (("a", ["train.max_epochs=1"]), ("b", ["train.max_epochs=3", "train.seed=7"])):
        sets = [a for s in extra for a in ("--set", s)]
        assert main(["train", *SETS, *sets, "--out", str(root / name), "--quiet", "--no-baseline"]) == 0
    return root / "a" / "best.pt", root / "b" / "best.pt"


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_compare_agrees_with_evaluate_of_each(two_runs, capsys):
    a, b = two_runs
    rc, out, err = run(capsys, "compare", a, b, "--metric", "NDCG@10", "--metric", "HR@5", "--resamples", "500",
                       "--json")
    assert rc == 0, err
    got = json.loads(out)
    assert got["split"] == "test" and got["users"] == 200 and got["exclude"] == "none"
    for key, path in (("a", a), ("b", b)):
        rc, ev, err = run(capsys, "evaluate", path, "--json")
        assert rc == 0, err
        metrics = json.loads(ev)["metrics"]
        for name in ("NDCG@10", "HR@5"):
            assert got["comparisons"][name][key] == pytest.approx(metrics[name], abs=1e-12)
    for c in got["comparisons"].values():
        assert c["difference"] == pytest.approx(c["b"] - c["a"], abs=1e-12)
        assert c["b_better"] + c["a_better"] + c["same"] == 200
        assert c["ci_low"] <= c["difference"] <= c["ci_high"]


def test_compare_a_model_with_itself(two_runs, capsys):
    a, _ = two_runs
    rc, out, err = run(capsys, "compare", a, a, "--resamples", "100")
    assert rc == 0, err
    row = next(line for line in out.splitlines() if line.startswith("NDCG@10"))
    assert "+0.0000" in row and "[+0.0000, +0.0000]" in row and row.split()[-6] == "1"      # p = 1
    assert row.endswith("0 / 0 / 200")


def test_compare_refuses_different_protocols_and_data(two_runs, tmp_path, capsys):
    a, b = two_runs
    rc, out, err = run(capsys, "compare", a, b, "--set", "eval.exclude=history", "--exclude", "window",
                       "--resamples", "0", "--json")
    assert rc == 0 and json.loads(out)["exclude"] == "window"
    other = tmp_path / "other"
    assert main(["train", *SETS, "--set", "train.max_epochs=1", "--set", "eval.exclude=history",
                 "--out", str(other), "--quiet", "--no-baseline"]) == 0
    rc, out, err = run(capsys, "compare", a, other / "best.pt")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "eval.exclude=none" in err and "--exclude" in err
    bigger = tmp_path / "bigger"
    assert main(["train", *SETS, "--set", "train.max_epochs=1", "--set", "data.synthetic_users=250",
                 "--out", str(bigger), "--quiet", "--no-baseline"]) == 0
    rc, out, err = run(capsys, "compare", a, bigger / "best.pt", "--exclude", "none")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and str(bigger / "best.pt") in err and "trained on" in err


def test_compare_checks_its_arguments_before_loading(tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    rc, out, err = run(capsys, "compare", missing, missing, "--metric", "AUC@10")
    assert rc == 2 and "AUC@10" in err and "missing.pt" not in err
    rc, out, err = run(capsys, "compare", missing, missing, "--level", "95")
    assert rc == 2 and "--level" in err
    with pytest.raises(SeqrecError, match="--exclude"):         # from Python, where argparse does not check
        compare_checkpoints(missing, missing, exclude="all")


def test_compare_refuses_different_evaluation_users(tmp_path, capsys):
    # the same table split two ways: leave-one-out vs a global temporal split evaluate other users and targets
    rng = np.random.default_rng(0)
    rows = ["user_id,item_id,timestamp"] + [f"{u},{rng.integers(1, 30)},{u * 10 + t + rng.integers(0, 200)}"
                                            for u in range(60) for t in range(8)]
    table = tmp_path / "events.csv"
    table.write_text("\n".join(rows) + "\n")
    for name, split in (("loo", "loo"), ("temporal", "temporal")):
        assert main(["train", *SETS, "--set", f"data.path={table}", "--set", f"data.split={split}",
                     "--set", "train.max_epochs=1", "--out", str(tmp_path / name), "--quiet", "--no-baseline"]) == 0
    rc, out, err = run(capsys, "compare", tmp_path / "loo" / "best.pt", tmp_path / "temporal" / "best.pt")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "different users, histories or targets" in err and "data.split" in err
