"""Configuration: unknown keys list the valid ones, invalid values name key and expectation, --set parsing, model
switching, YAML errors with file and line, and the to_dict -> config_from_dict round trip."""
from __future__ import annotations

import dataclasses

import pytest

from seqrec.config import (Config, DataConfig, EvalConfig, TrainConfig, apply_overrides, config_from_dict,
                           load_config)
from seqrec.errors import ConfigError
from seqrec.models import MODELS


def error(overrides=None, path=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides or [])
    msg = str(info.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("section,cls", [("data", DataConfig), ("train", TrainConfig), ("eval", EvalConfig),
                                         ("model", MODELS["sasrec"].Config)])
def test_unknown_key_lists_valid_keys(section, cls):
    msg = error([f"{section}.no_such_key=1"])
    assert msg.startswith(f"{section}:") and "'no_such_key'" in msg
    for f in dataclasses.fields(cls):
        assert f.name in msg, f"{f.name} missing from: {msg}"


@pytest.mark.parametrize("name", ["bert4rec", "gru4rec"])
def test_unknown_model_key_lists_that_models_keys(name):
    msg = error([f"model.name={name}", "model.no_such_key=1"])
    for f in dataclasses.fields(MODELS[name].Config):
        assert f.name in msg


def test_unknown_section(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("trian:\n  lr: 0.1\n")
    msg = error(path=p)
    assert "'trian'" in msg and "data, model, train, eval" in msg and str(p) in msg


@pytest.mark.parametrize("override,parts", [
    ("model.dropout=-0.1", ["model.dropout", "-0.1", ">= 0"]),
    ("model.attn_dropout=1.0", ["model.attn_dropout", "< 1"]),
    ("train.lr=0", ["train.lr", "> 0"]),
    ("train.batch_size=0", ["train.batch_size", ">= 1"]),
    ("train.max_epochs=abc", ["train.max_epochs", "integer"]),
    ("train.lr=fast", ["train.lr", "number"]),
    ("train.bucket=maybe", ["train.bucket", "true or false"]),
    ("eval.exclude=all", ["eval.exclude", "'all'", "none, window, history"]),
    ("train.examples=all", ["train.examples", "sequence, prefix, windows"]),
    ("train.optimizer=sgd", ["train.optimizer", "adam, adamw"]),
    ("train.metric=NDCG10", ["train.metric", "NDCG10", "HR@K"]),
    ("train.metric=MAP@10", ["train.metric", "MAP@10"]),
    ("train.metric=HR@0", ["train.metric", "HR@0"]),
    ("eval.ks=[]", ["eval.ks"]),
    ("eval.ks=[5, -1]", ["eval.ks"]),
    ("model.d=16.5", ["model.d", "integer"]),
    ("model.name=nope", ["model.name", "'nope'", "sasrec", "bert4rec", "gru4rec"]),
    ("data.short_users=keep", ["data.short_users", "error, drop, train_only"]),
])
def test_invalid_values_name_the_key_and_what_is_expected(override, parts):
    msg = error([override])
    for p in parts:
        assert p in msg, f"{p!r} not in {msg!r}"


@pytest.mark.parametrize("override", ["trainlr=1", "lr=1", "train.lr", "a.b.c=1", "train.=1"])
def test_malformed_set(override):
    msg = error([override])
    assert override in msg and "=" in msg


def test_set_overrides_parse_types():
    cfg = load_config(None, ["train.lr=0.002", "train.max_epochs=7", "train.bucket=false", "eval.ks=[1, 3]", "train.metric=HR@3",
                             "train.grad_clip=5", "train.time_budget_s=1e2", "data.dataset=Beauty",
                             "train.threads=null", "model.dropout=0.25", "eval.exclude=history", "train.lr=1e-3"])
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)             # the last --set wins
    assert cfg.train.max_epochs == 7 and isinstance(cfg.train.max_epochs, int)
    assert cfg.train.bucket is False
    assert cfg.eval.ks == [1, 3]
    assert cfg.train.grad_clip == 5.0 and isinstance(cfg.train.grad_clip, float)
    assert cfg.train.time_budget_s == 100.0
    assert cfg.data.dataset == "Beauty"
    assert cfg.train.threads is None
    assert cfg.model.dropout == 0.25 and cfg.eval.exclude == "history"


def test_override_beats_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  name: sasrec\n  d: 32\ntrain:\n  lr: 0.01\n  max_epochs: 3\n")
    cfg = load_config(p, ["train.lr=0.5"])
    assert (cfg.model.d, cfg.train.lr, cfg.train.max_epochs) == (32, 0.5, 3)


def test_model_switch_via_name(tmp_path):
    assert load_config().model.name == "sasrec"
    cfg = load_config(None, ["model.name=bert4rec", "model.mask_prob=0.3"])
    assert type(cfg.model) is MODELS["bert4rec"].Config and cfg.model.mask_prob == 0.3
    # a file for SASRec with SASRec-only keys, switched to GRU4Rec on the command line: the old keys are dropped
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  name: sasrec\n  attn_dropout: 0.1\n  norm_first: true\n")
    cfg = load_config(p, ["model.name=gru4rec", "model.hidden=8"])
    assert type(cfg.model) is MODELS["gru4rec"].Config and cfg.model.hidden == 8
    # keys for the new model still apply when they come after the switch
    assert apply_overrides({"model": {"name": "sasrec", "d": 8}}, ["model.name=sasrec"])["model"]["d"] == 8


@pytest.mark.parametrize("text,line", [("train:\n  lr: 0.1\n  max_epochs: [1, 2\nmodel:\n  d: 3\n", 4),
                                       ("train:\n  lr: 0.1\n   max_epochs: 3\n", 3),
                                       ("data:\n\tdataset: x\n", 2)])
def test_yaml_syntax_error_names_file_and_line(tmp_path, text, line):
    p = tmp_path / "broken.yaml"
    p.write_text(text)
    msg = error(path=p)
    assert msg.startswith(f"{p}:{line}:"), msg
    assert "YAML" in msg


def test_missing_config_file(tmp_path):
    msg = error(path=tmp_path / "nope.yaml")
    assert "nope.yaml" in msg and "not found" in msg


def test_section_must_be_a_mapping(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: 3\n")
    assert "train" in error(path=p)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_resolved_config_round_trips(name):
    over = ["train.lr=0.003", "eval.ks=[5, 50]", "train.grad_clip=1.5", "data.synthetic_users=300",
            "eval.exclude=window", "train.metric=HR@50"]
    cfg = load_config(None, [f"model.name={name}"] + over)
    d = cfg.to_dict()
    again = config_from_dict(d)
    assert again == cfg
    assert again.to_dict() == d
    assert isinstance(d["model"], dict) and d["model"]["name"] == name


def test_defaults_are_valid():
    cfg = Config()
    cfg.validate()
    assert cfg.model.name == "sasrec"


def test_selection_metric_must_be_computed():
    # the check is part of the config, so a run fails before training rather than after its first epoch
    with pytest.raises(ConfigError, match=r"train.metric: NDCG@50 is not computed; add 50 to eval.ks"):
        load_config(None, ["train.metric=NDCG@50"])
    assert load_config(None, ["train.metric=NDCG@50", "eval.ks=[10, 50]"]).train.metric == "NDCG@50"
