"""The MCLRec benchmark's default result file name: runs that differ in threads, seed or any other override get
different files (side-by-side runs once overwrote each other's result)."""
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("mclrec_beauty")


def test_plain_run_name(bench):
    assert bench.default_result_name("mclrec", "beauty", "prefix", "budget100m", 1, []) == \
        "mclrec_beauty_prefix_budget100m.json"


def test_threads_seed_and_overrides_are_in_the_name(bench):
    name = bench.default_result_name("mclrec", "beauty", "prefix", "budget100m", 2,
                                     ["train.seed=2022", "model.ce_padding_class=true"])
    assert name == "mclrec_beauty_prefix_budget100m_2threads_seed2022_ce_padding_class-true.json"


def test_distinct_runs_get_distinct_names(bench):
    variants = [(1, []), (2, []), (1, ["train.seed=2021"]), (1, ["train.seed=2022"]),
                (1, ["model.beta=0.01"]), (1, ["model.beta=0.1"]), (1, ["train.seed=2021", "model.beta=0.01"])]
    names = [bench.default_result_name("sasrec", "sports", "prefix", "full", t, o) for t, o in variants]
    assert len(set(names)) == len(names)
    assert all("/" not in n and " " not in n for n in names)


def test_unsafe_characters_do_not_reach_the_file_name(bench):
    name = bench.default_result_name("mclrec", "beauty", "prefix", "full", 1, ["eval.ks=[5, 10]"])
    assert name == "mclrec_beauty_prefix_full_ks-5-10.json"
