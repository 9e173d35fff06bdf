"""Configuration: unknown keys list the valid ones, invalid values name key and expectation, --set parsing, model
switching, YAML errors with file and line, and the to_dict -> config_from_dict round trip."""
from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from seqrec.config import (Config, DataConfig, EvalConfig, TrainConfig, _coerce, apply_overrides, config_from_dict,
                           dataclass_from_dict, load_config, model_config_class)
from seqrec.errors import ConfigError
from seqrec.models import MODELS, EncoderConfig


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


# --- layering: config and data know nothing of the models; models never reach into training --------------------
SRC = Path(__file__).resolve().parents[1] / "src" / "seqrec"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)   # from seqrec import models
    return found


def imports_any(path: Path, packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported_modules(path) if any(m == p or m.startswith(p + ".") for p in packages))


@pytest.mark.parametrize("path", [SRC / "config.py", *sorted((SRC / "data").glob("*.py"))],
                         ids=lambda p: str(p.relative_to(SRC)))
def test_config_and_data_do_not_import_models_train_or_nn(path):
    assert imports_any(path, ("seqrec.models", "seqrec.train", "seqrec.nn")) == []


@pytest.mark.parametrize("path", sorted((SRC / "models").glob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_models_do_not_import_train(path):
    assert imports_any(path, ("seqrec.train",)) == []


def test_config_alone_finds_the_models_and_models_import_first():
    # fresh interpreters: importing seqrec.config pulls in no model (nor torch) until a model is looked up, and a
    # model module imported first (before seqrec.config) meets no import cycle
    code = ("import sys, seqrec.config as c; assert 'seqrec.models' not in sys.modules and 'torch' not in sys.modules;"
            "cfg = c.load_config(None, ['model.name=mqsa_ted', 'model.d=32']); print(type(cfg.model).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "MQSATEDConfig", out.stderr
    for module in ("seqrec.models.sasrec", "seqrec.models.mclrec"):
        out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr


# --- annotations are resolved once, per dataclass --------------------------------------------------------------
def test_coerce_takes_resolved_types_only():
    assert _coerce("x", "3", float) == 3.0
    with pytest.raises(TypeError, match="unresolved annotation"):
        _coerce("x", 3, "int")
    # a dataclass whose annotations are postponed strings still coerces through dataclass_from_dict
    assert dataclass_from_dict(TrainConfig, {"lr": "1e-3", "grad_clip": None}, "train").lr == 0.001


# --- the shared encoder fields: flat keys, per-model defaults -------------------------------------------------
ENCODER_DEFAULTS = {
    "sasrec": dict(d=64, layers=2, heads=2, inner=256, dropout=0.5, attn_dropout=0.5, init_std=0.02),
    "cl4srec": dict(d=64, layers=2, heads=2, inner=256, dropout=0.5, attn_dropout=0.5, init_std=0.02),
    "mclrec": dict(d=64, layers=2, heads=2, inner=256, dropout=0.5, attn_dropout=0.5, init_std=0.02),
    "bert4rec": dict(d=64, layers=2, heads=2, inner=256, dropout=0.2, attn_dropout=0.2, init_std=0.02),
    "emkd": dict(d=256, layers=2, heads=2, inner=1024, dropout=0.3, attn_dropout=0.3, init_std=0.02),
    "mqsa_ted": dict(d=64, layers=1, heads=1, dropout=0.5, attn_dropout=0.5, init_std=0.01),
    "gru4rec": dict(d=64, layers=1, dropout=0.3),
}


@pytest.mark.parametrize("name", sorted(ENCODER_DEFAULTS))
def test_encoder_fields_per_model(name):
    cls = model_config_class(name)
    shared = {f.name for f in dataclasses.fields(EncoderConfig)}
    cfg = cls()
    assert {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if f.name in shared} == ENCODER_DEFAULTS[name]
    # flat keys in and out
    cfg = load_config(None, [f"model.name={name}", "model.d=32", "model.dropout=0.1"])
    d = cfg.to_dict()["model"]
    assert (cfg.model.d, d["d"], d["dropout"]) == (32, 32, 0.1)
    assert all(not isinstance(v, dict) for k, v in d.items() if k != "member")


def test_encoder_fields_are_validated():
    assert "model.init_std" in error(["model.init_std=0"])
    assert "model.layers" in error(["model.name=gru4rec", "model.layers=0"])
    assert "'heads'" in error(["model.name=gru4rec", "model.heads=2"])     # gru4rec has no attention heads


@pytest.mark.parametrize("overrides, parts", [
    (["model.heads=3"], ["model.heads: 3 does not divide model.d 64", "e.g. 1, 2, 4, 8"]),
    (["model.name=bert4rec", "model.d=30", "model.heads=4"], ["model.heads: 4 does not divide model.d 30"]),
    (["model.name=mqsa_ted", "model.heads=3"], ["model.heads: 3 does not divide model.d 64"]),
    (["model.name=emkd", "model.heads=3"], ["model.heads: 3 does not divide model.d 256"]),
    # EMKD passes d / heads to its members; a member's own key is named model.member.KEY
    (["model.name=emkd", "model.member={heads: 3}"], ["model.member.heads: 3 does not divide model.d 256"]),
    (["model.name=emkd", "model.backbone=sasrec", "model.member={d: 25}"],
     ["model.heads: 2 does not divide model.member.d 25"]),
])
def test_heads_must_divide_d(overrides, parts):
    message = error(overrides)
    assert "\n" not in message
    for p in parts:
        assert p in message, f"{p!r} not in {message!r}"


def test_sasrec_gated_residuals_without_pre_ln_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model.gated: .*norm_first"):
        load_config(None, ["model.name=sasrec", "model.gated=true"])
    cfg = load_config(None, ["model.name=sasrec", "model.gated=true", "model.norm_first=true",
                             "model.activation=swiglu", "model.final_norm=true"])
    assert cfg.model.gated and cfg.model.final_norm and cfg.model.activation == "swiglu"
