"""benchmarks/emkd_members.py: every subset of a trained EMKD's members, combined as the model combines them; the
whole set is the model itself, a single member is that member's own ranking, and the members are restored."""
import pytest
import torch
from conftest import load_benchmark

from seqrec.config import load_config
from seqrec.eval.evaluator import evaluate
from seqrec.models import DatasetInfo, build_model


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("emkd_members")


def test_subsets_against_direct_evaluation(bench, synthetic_split):
    cfg = load_config(None, ["model.name=emkd", "model.d=8", "model.heads=2", "model.inner=16", "model.max_len=10",
                             "model.n_networks=3", "model.n_views=2", "model.use_attr=false"]).model
    torch.manual_seed(0)
    model = build_model(cfg, DatasetInfo(n_items=synthetic_split.n_items)).eval()
    members = list(model.members)
    rows, ranks = bench.evaluate_subsets(model, synthetic_split, "window", (10,), 1024)
    assert list(rows) == ["members 0", "members 1", "members 2", "members 0+1", "members 0+2", "members 1+2",
                          "members 0+1+2"]
    assert list(model.members) == members                              # restored
    assert rows["members 0+1+2"]["test"] == evaluate(model, synthetic_split, "test", "window", (10,))["metrics"]
    for i, member in enumerate(members):
        alone = evaluate(member, synthetic_split, "test", "window", (10,), return_ranks=True)
        assert rows[f"members {i}"]["test"] == alone["metrics"]
        assert torch.equal(ranks[f"members {i}"], alone["ranks"])
