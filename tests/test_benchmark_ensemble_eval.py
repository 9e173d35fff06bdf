"""benchmarks/ensemble_eval.py: a deep ensemble ranks by the sum of its members' scores; a model combined with
itself ranks exactly as it does alone; members that read different windows are refused."""
import pytest
import torch
from conftest import load_benchmark, tiny_config

from seqrec.eval.evaluator import evaluate
from seqrec.models import DatasetInfo, build_model


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("ensemble_eval")


def models(split, *seeds, overrides=()):
    cfg = tiny_config(*overrides)
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        out.append(build_model(cfg.model, DatasetInfo(n_items=split.n_items)).eval())
    return out


def test_scores_are_the_members_sum(bench, synthetic_split):
    a, b = models(synthetic_split, 0, 1)
    ens = bench.SumOfLogits([a, b])
    from seqrec.data.batch import history_batch
    starts, lengths, _ = synthetic_split.eval_inputs("test")
    batch = history_batch(synthetic_split.data.items, starts[:8], lengths[:8], a.history_len)
    with torch.no_grad():
        torch.testing.assert_close(ens.score(batch), a.score(batch).float() + b.score(batch).float())


def test_a_model_with_itself_ranks_as_alone(bench, synthetic_split):
    (a,) = models(synthetic_split, 0)
    alone = evaluate(a, synthetic_split, "test", ks=(10,))["metrics"]
    twice = evaluate(bench.SumOfLogits([a, a]), synthetic_split, "test", ks=(10,))["metrics"]
    assert twice == alone


def test_members_must_read_one_window(bench, synthetic_split):
    (a,) = models(synthetic_split, 0)
    (b,) = models(synthetic_split, 0, overrides=["model.max_len=10"])
    with pytest.raises(SystemExit, match="history lengths"):
        bench.SumOfLogits([a, b])
