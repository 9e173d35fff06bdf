"""benchmarks/loss_quality_per_second.py: the grouping of result files by loss setting, the means over seeds, the
derived per-second figures and the summary's choices, on small hand-made result dicts (no data, no timing)."""
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("loss_quality_per_second")


def result(ndcg, hr, best, seed, epochs_run=None, commit="c0", **model):
    return {"metrics": {"valid": {"NDCG@10": ndcg}, "test": {"NDCG@10": ndcg, "HR@10": hr}},
            "best_epoch": best, "epochs_run": epochs_run or best + 10, "git_commit": commit,
            "config": {"model": {"name": "sasrec", **model},
                       "train": {"seed": seed, "batch_size": 64, "examples": "prefix", "patience": 10}}}


SAMPLED = {"loss": "sampled_softmax", "negative_sampler": "uniform", "negatives": 100}
FILES = {
    "ce_s1.json": result(0.050, 0.10, 10, 1, loss="ce"),
    # ce ignores the sampler keys: still the same setting
    "ce_s2.json": result(0.054, 0.12, 14, 2, loss="ce", negatives=512, negative_sampler="popularity"),
    "uni100_s1.json": result(0.049, 0.09, 6, 1, epochs_run=16, **SAMPLED),
    # the same seed run again with a longer patience (a resumable key): the longer run is used
    "uni100_patience20_s1.json": result(0.050, 0.095, 8, 1, epochs_run=28, commit="c1",
                                        **{**SAMPLED, "negatives_per": "batch"}),
    "inbatch_s1.json": result(0.030, 0.06, 2, 1, loss="sampled_softmax", negative_sampler="in_batch", negatives=7),
    # differs in what is trained (d): its own group, labelled by the difference
    "ce_d128_s1.json": result(0.060, 0.13, 5, 1, loss="ce", d=128),
    "not_a_result.json": {"name": "something else", "summary": {}},
}


def test_grouping_and_means(bench):
    groups = {g["label"]: g for g in bench.group_results(FILES)}
    assert sorted(groups) == ["ce", "ce [model.d=128]", "sampled_softmax/in_batch", "sampled_softmax/uniform/100"]
    ce = groups["ce"]
    assert ce["seeds"] == [1, 2] and ce["n_seeds"] == 2 and ce["is_reference_config"]
    assert ce["test_NDCG@10"] == pytest.approx(0.052)
    assert ce["test_HR@10"] == pytest.approx(0.11)
    assert ce["best_epoch"] == pytest.approx(12.0)
    assert [f["file"] for f in ce["files"]] == ["ce_s1.json", "ce_s2.json"]
    uni = groups["sampled_softmax/uniform/100"]
    assert uni["seeds"] == [1]
    assert uni["files"][0]["file"] == "uni100_patience20_s1.json" and uni["files"][0]["git_commit"] == "c1"
    assert uni["superseded"] == [{"file": "uni100_s1.json", "seed": 1, "epochs_run": 16,
                                  "superseded_by": "uni100_patience20_s1.json"}]
    assert uni["test_NDCG@10"] == pytest.approx(0.050) and uni["best_epoch"] == 8
    assert groups["sampled_softmax/in_batch"]["setting"]["negatives"] is None
    assert not groups["ce [model.d=128]"]["is_reference_config"]


def test_label_lists_another_models_own_keys_not_the_references_absent_ones(bench):
    gru = result(0.040, 0.08, 9, 1, loss="ce")
    gru["config"]["model"] = {"name": "gru4rec", "loss": "ce"}
    labels = [g["label"] for g in bench.group_results({**FILES, "gru_s1.json": gru})]
    gru_label = next(label for label in labels if "gru4rec" in label)
    assert gru_label.startswith("ce [") and "model.name=gru4rec" in gru_label
    # SASRec's keys (heads, norm_first, ...) are not GRU4Rec's: not listed as `=None`
    assert "model.heads" not in gru_label and "model.norm_first" not in gru_label


def test_derived_figures_and_summary(bench):
    groups = bench.group_results(FILES)
    # step_cpu_ms is the mean step (what the epoch seconds use); the median is only recorded
    timing = {label: {"step_cpu_ms": ms, "step_cpu_ms_median": ms / 2, "batches_per_epoch": 100, "n_items": 1000,
                      "targets_per_batch": 64}
              for label, ms in [("ce", 40.0), ("ce [model.d=128]", 80.0), ("sampled_softmax/uniform/100", 10.0),
                                ("sampled_softmax/in_batch", 10.0)]}
    rows, summary = bench.summarise(groups, timing)
    r = {row["label"]: row for row in rows}
    # ce: 40 ms x 100 batches = 4 s per epoch, best epoch 12 -> 48 s; 0.052 / 48 s
    assert r["ce"]["epoch_cpu_s"] == pytest.approx(4.0)
    assert r["ce"]["epoch_cpu_s_from_median_step"] == pytest.approx(2.0)
    assert r["ce"]["cpu_s_to_best_epoch"] == pytest.approx(48.0)
    assert r["ce"]["test_NDCG@10_per_cpu_hour"] == pytest.approx(0.052 / 48 * 3600)
    assert r["ce"]["relative_logits_cost"] == 1.0
    assert r["ce"]["relative_test_NDCG@10_vs_ce"] == pytest.approx(1.0)
    # uniform/100: 1 s per epoch, 8 epochs; (100 + 1) / 1000 items scored; 0.050 / 0.052 of CE
    assert r["sampled_softmax/uniform/100"]["cpu_s_to_best_epoch"] == pytest.approx(8.0)
    assert r["sampled_softmax/uniform/100"]["relative_logits_cost"] == pytest.approx(0.101)
    assert r["sampled_softmax/uniform/100"]["relative_test_NDCG@10_vs_ce"] == pytest.approx(0.050 / 0.052)
    # in_batch: the batch's 64 targets per row; 2 s to its best epoch
    assert r["sampled_softmax/in_batch"]["relative_logits_cost"] == pytest.approx(0.064)
    assert r["sampled_softmax/in_batch"]["cpu_s_to_best_epoch"] == pytest.approx(2.0)
    # per CPU second: in_batch 0.030 / 2 = 0.015 beats uniform 0.050 / 8, ce 0.052 / 48, d128 0.060 / 40
    assert summary["best_test_NDCG@10_per_cpu_second"]["setting"] == "sampled_softmax/in_batch"
    # within 5% of CE (>= 0.0494): ce, d128 and uniform/100 (0.050); the fastest to its best epoch is uniform/100
    assert summary["threshold"] == pytest.approx(0.95 * 0.052)
    assert sorted(summary["settings_within"]) == ["ce", "ce [model.d=128]", "sampled_softmax/uniform/100"]
    assert summary["fastest_within_5pct_of_ce"]["setting"] == "sampled_softmax/uniform/100"
    # ... but on one seed; among the settings with CE's two seeds only CE itself is left
    assert summary["fastest_within_5pct_of_ce_on_as_many_seeds"]["setting"] == "ce"
    assert summary["ce"]["setting"] == "ce" and summary["ce"]["n_seeds"] == 2


def test_labels(bench):
    assert bench.setting_label(bench.loss_setting({"loss": "gbce", "negatives": 256})) == "gbce/uniform/256/unshifted"
    assert bench.setting_label(bench.loss_setting({"loss": "gbce", "negatives": 256,
                                                   "gbce_shift": "equilibrium"})) == "gbce/uniform/256"
    assert bench.setting_label(bench.loss_setting({"loss": "gbce", "negatives": 256, "gbce_t": 0.5,
                                                   "gbce_shift": "equilibrium"})) == \
        "gbce/uniform/256/t0.5"
    assert bench.setting_label(bench.loss_setting({"loss": "sampled_softmax", "negatives": 4096,
                                                   "negative_sampler": "popularity", "negatives_per": "row"})) == \
        "sampled_softmax/popularity/4096/per_row"


def test_round_robin_times_every_settings_whole_epoch(bench):
    steps = list(bench.round_robin({"a": 3, "b": 1, "c": 2}))
    # every setting gets exactly its own number of steps, in step order
    for label, n in {"a": 3, "b": 1, "c": 2}.items():
        assert [j for j, lab in steps if lab == label] == list(range(n))
    # the order rotates while all are present, and the short ones drop out
    assert steps == [(0, "a"), (0, "b"), (0, "c"), (1, "c"), (1, "a"), (2, "a")]
