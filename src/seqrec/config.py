"""Typed configuration: dataclasses for data, model, training and evaluation, loaded from YAML plus overrides.

    cfg = load_config("configs/sasrec/beauty.yaml", overrides=["train.lr=0.002", "model.dropout=0.3"])

Every section is a dataclass; an unknown key is an error that lists the valid keys, and every value is checked
by the section's `validate()`. The `model` section names a model (`model.name`) whose own dataclass
holds its hyper-parameters; the models register those dataclasses in `MODEL_CONFIGS`.

Dependencies flow one way: the models import this module (for `check_range`, `check_choice` and
`dataclass_from_dict`), never the reverse. Looking up a model name that is not registered yet calls the loader
installed by the `seqrec` package (`set_model_loader`), which imports `seqrec.models` on first need.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from seqrec.errors import ConfigError

EXCLUDE_MODES = ("none", "window", "history")
EXAMPLE_MODES = ("sequence", "prefix", "windows")
SHORT_USER_POLICIES = ("error", "drop", "train_only")
SPLITS = ("loo", "temporal")
OPTIMIZERS = ("adam", "adamw")
DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("constant", "linear", "cosine")


def check_choice(where: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{where}: invalid value {value!r}; valid choices: {', '.join(map(str, choices))}")


def check_range(where: str, value: Any, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    ok = True
    if lo is not None:
        ok &= value > lo if lo_open else value >= lo
    if hi is not None:
        ok &= value < hi if hi_open else value <= hi
    if not ok:
        lo_s = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
        hi_s = "" if hi is None else (f"< {hi}" if hi_open else f"<= {hi}")
        raise ConfigError(f"{where}: invalid value {value!r}; expected a number {' and '.join(s for s in (lo_s, hi_s) if s)}")


FRAME_DATASET = "DataFrame"
"""data.dataset of a model fitted on a DataFrame (seqrec.api.SeqRec.fit): its interactions are in the saved model,
not in a file the config could name."""


@dataclass
class DataConfig:
    """Where the interactions come from and how they are cleaned."""
    dataset: str = "synthetic"
    """A known dataset name (Beauty, Sports, Toys, Yelp, LastFM, ML-1M, Taobao), 'synthetic' (the embedded
    default), or a path to a data file."""
    path: str | None = None
    """Explicit path to the interaction file; overrides the resolution of `dataset`."""
    attributes: str | None = None
    """Item attribute JSON ({item: [attr, ...]}). None: use `<Name>_item2attributes.json` beside an S3-Rec file
    if it exists. 'none': no attributes."""
    format: str = "auto"
    """auto | s3rec (`user item item ...`) | inter (RecBole atomic) | csv | tsv | parquet."""
    user_col: str = "user_id"
    """User column for csv/tsv/parquet/inter files."""
    item_col: str = "item_id"
    """Item column for csv/tsv/parquet/inter files."""
    time_col: str | None = "timestamp"
    """Timestamp column (rows are stably sorted by it per user); None keeps the file order."""
    k_core: int = 0
    """Iteratively drop users and items with fewer than k interactions (0 = off). Raw tables only."""
    short_users: str = "train_only"
    """Users with fewer than 3 interactions cannot give a train/valid/test split: 'error' stops,
    'drop' removes them (reported), 'train_only' keeps their items for training but does not evaluate them.
    Leave-one-out only (data.split=loo)."""
    split: str = "loo"
    """How interactions become training items and evaluation targets (docs/protocol.md, "Split"):
    'loo' leave-one-out per user (last item = test target, second-to-last = validation target);
    'temporal' a global time split: training items are the interactions before the validation cut, a user's
    validation / test target is its first interaction at or after the validation / test cut (validation targets
    before the test cut), its history everything before that; users with no interaction before their target are
    not evaluated (counted in the result's protocol). Needs timestamps: a table read with data.time_col (S3-Rec
    text files and the synthetic data have none)."""
    valid_time_quantile: float = 0.8
    """data.split=temporal: the validation cut is this quantile of all interaction times (0 < q < 1; numpy's
    linearly interpolated quantile, so a fraction q of the interactions is before it), unless data.valid_time
    is set."""
    test_time_quantile: float = 0.9
    """data.split=temporal: the test cut is this quantile of all interaction times (0 < q < 1), unless
    data.test_time is set. Must be above valid_time_quantile."""
    valid_time: float | None = None
    """data.split=temporal: the validation cut as a timestamp, in the unit of the data's time column (POSIX
    seconds for ISO 8601 date-times); overrides valid_time_quantile. None: use the quantile."""
    test_time: float | None = None
    """data.split=temporal: the test cut as a timestamp (as valid_time); overrides test_time_quantile."""
    data_dir: str | None = None
    """Folder searched for known datasets before ../shared/data and the download cache."""
    download: bool = True
    """Download a known dataset from its public origin (sha256-checked) when it is not found locally."""
    synthetic_users: int = 2000
    """Number of users of the embedded synthetic dataset."""
    synthetic_items: int = 500
    """Number of items of the embedded synthetic dataset."""

    def validate(self) -> None:
        check_choice("data.format", self.format, ("auto", "s3rec", "inter", "csv", "tsv", "parquet"))
        check_choice("data.short_users", self.short_users, SHORT_USER_POLICIES)
        self._validate_split()
        check_range("data.k_core", self.k_core, lo=0)
        check_range("data.synthetic_users", self.synthetic_users, lo=10)
        check_range("data.synthetic_items", self.synthetic_items, lo=10)

    def _validate_split(self) -> None:
        check_choice("data.split", self.split, SPLITS)
        check_range("data.valid_time_quantile", self.valid_time_quantile, lo=0, hi=1, lo_open=True, hi_open=True)
        check_range("data.test_time_quantile", self.test_time_quantile, lo=0, hi=1, lo_open=True, hi_open=True)
        for key in ("valid_time", "test_time"):
            value = getattr(self, key)
            if value is not None and not math.isfinite(value):
                raise ConfigError(f"data.{key}: invalid value {value!r}; expected a finite timestamp or null")
            if value is not None and self.split != "temporal":
                raise ConfigError(f"data.{key}: applies to data.split=temporal only (data.split is "
                                  f"{self.split!r}); remove it or set data.split=temporal")
        if self.split != "temporal":
            return
        if self.valid_time is None and self.test_time is None and \
                not self.valid_time_quantile < self.test_time_quantile:
            raise ConfigError(f"data.valid_time_quantile: {self.valid_time_quantile!r} is not below "
                              f"data.test_time_quantile {self.test_time_quantile!r}; the validation cut must come "
                              f"before the test cut")
        if self.valid_time is not None and self.test_time is not None and not self.valid_time < self.test_time:
            raise ConfigError(f"data.valid_time: {self.valid_time!r} is not before data.test_time "
                              f"{self.test_time!r}; the validation cut must come before the test cut")
        if self.time_col is None:
            raise ConfigError("data.split: 'temporal' needs timestamps but data.time_col is null; name the time "
                              "column or set data.split=loo")
        if self.path is None and self.dataset == "synthetic":
            raise ConfigError("data.split: 'temporal' needs timestamps and the synthetic data has none; use a "
                              "table with a time column or set data.split=loo")


@dataclass
class TrainConfig:
    """The training loop."""
    examples: str = "prefix"
    """How training examples are cut from each user's training items:
    'sequence' one example per user (its last max_len+1 items, every position supervised by the next item);
    'prefix' one example per prefix (last max_len items of it), the next item as its single target;
    'windows' sliding windows of the model's span length stepping back from the end by `window_step`."""
    window_step: int = 1
    """Step between sliding windows (examples='windows')."""
    batch_size: int = 256
    """Examples per optimiser step (per process under torchrun)."""
    optimizer: str = "adam"
    """adam | adamw."""
    lr: float = 1e-3
    """Peak learning rate (the rate itself under schedule 'constant' without warmup)."""
    schedule: str = "constant"
    """Learning-rate schedule over the optimiser steps of max_epochs epochs, after `warmup_steps` of linear warmup
    from 0: constant (lr) | linear (lr decaying linearly to 0 at the last step) | cosine (lr * (1 + cos(pi s)) / 2,
    s the fraction of post-warmup steps done). An early stop or a time budget ends the run wherever it is."""
    warmup_steps: int = 0
    """Optimiser steps of linear warmup from 0 to lr (0 = none)."""
    accumulate: int = 1
    """Gradient accumulation: one optimiser step per this many batches, their gradients summed with each loss
    divided by the number of batches in its group (so a step sees the mean over batch_size * accumulate
    examples). Under torchrun only the last batch of a group all-reduces. Automatic-optimisation models only."""
    weight_decay: float = 0.0
    """Adam(W) weight decay."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value (None = off)."""
    max_epochs: int = 200
    """Upper bound on epochs."""
    patience: int = 10
    """Stop after this many validations without improvement of `metric` (0 = never stop early). May change on
    --resume: a run that early stopping ended trains on when resumed with a larger value."""
    metric: str = "NDCG@10"
    """Validation metric used for early stopping and best-checkpoint selection (e.g. NDCG@10, HR@20, MRR@10)."""
    eval_every: int = 1
    """Validate every this many epochs."""
    eval_start: int = 1
    """First epoch (1-based) at which validation runs."""
    time_budget_s: float | None = None
    """Stop training when this many seconds of wall time have passed (the best checkpoint is then tested)."""
    track_test: bool = False
    """Also evaluate the test split at every validation and log it (reporting only, e.g. time-to-quality
    benchmarks; selection always uses validation)."""
    seed: int = 2020
    """Seed for weights, data order, masking, augmentation and dropout."""
    threads: int | None = None
    """torch intra-op threads. None: chosen by model size (seqrec.train.threads: one thread for small models,
    where a second thread on a shared 2-core machine costs more than it gains; torch's default otherwise)."""
    device: str = "auto"
    """auto (cuda if available) | cpu | cuda."""
    precision: str = "auto"
    """Floating-point format of forward + loss: fp32 | bf16 (CPUs with avx512_bf16 / AMX, or GPUs) | fp16 (GPUs,
    with loss scaling) | auto (the fastest that keeps fp32's accuracy on this device: bf16 on GPUs, fp32 on CPUs;
    seqrec.train.precision). Weights and optimiser state stay float32."""
    compile: bool = False
    """torch.compile the training forward + loss (backward follows the compiled graph). Batch widths are rounded
    to multiples of `pad_multiple` so that only a few shapes are compiled. Meant for GPUs: on a CPU a compiled step
    was 1.1-1.6x slower than eager whenever dropout is on, plus 15-100 s of compilation (docs/benchmarks.md,
    "Compile on CPU")."""
    pad_multiple: int | None = None
    """Round every training batch's width up to a multiple of this (capped at the model's length); padding changes
    no output. None: 8 with compile, 1 (no rounding) without."""
    log_every: int = 50
    """Read the loss terms back from the device (a host sync), check them for inf/NaN and update the progress line
    every this many batches, and at the end of an epoch. Under torchrun the time-budget check is agreed between
    ranks at the same points only."""
    prefetch: int = 2
    """Batches prepared ahead by a background thread (slicing, padding, cloze masking; pinned memory on CUDA);
    0 = build each batch in the loop."""
    fused_optimizer: bool = True
    """Use the fused Adam/AdamW kernel (one kernel for all parameters) where the device supports it."""
    bucket: bool = True
    """Group examples of similar length into batches so that batches are only as long as they need. The objective
    does not change: a bucketed batch divides its per-target mean losses by rows x the epoch's expected targets per
    example (`seqrec.data.batch.loss_norms`), so every target position weighs what it weighs on average in random
    batches; false: a plain shuffle, each batch divided by its own target count (the reference codes' loss)."""
    bucket_factor: int = 50
    """Size of the shuffled pools sorted by length when bucketing, in batches."""

    def validate(self) -> None:
        check_choice("train.examples", self.examples, EXAMPLE_MODES)
        check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        check_choice("train.device", self.device, DEVICES)
        check_range("train.window_step", self.window_step, lo=1)
        check_range("train.batch_size", self.batch_size, lo=1)
        check_range("train.lr", self.lr, lo=0, lo_open=True)
        check_range("train.weight_decay", self.weight_decay, lo=0)
        check_range("train.max_epochs", self.max_epochs, lo=1)
        check_range("train.patience", self.patience, lo=0)
        check_range("train.eval_every", self.eval_every, lo=1)
        check_range("train.eval_start", self.eval_start, lo=1)
        check_range("train.bucket_factor", self.bucket_factor, lo=1)
        check_choice("train.schedule", self.schedule, SCHEDULES)
        check_choice("train.precision", self.precision, ("auto", "fp32", "bf16", "fp16"))
        check_range("train.warmup_steps", self.warmup_steps, lo=0)
        check_range("train.accumulate", self.accumulate, lo=1)
        check_range("train.log_every", self.log_every, lo=1)
        check_range("train.prefetch", self.prefetch, lo=0)
        if self.pad_multiple is not None:
            check_range("train.pad_multiple", self.pad_multiple, lo=1)
        if self.grad_clip is not None:
            check_range("train.grad_clip", self.grad_clip, lo=0, lo_open=True)
        if self.time_budget_s is not None:
            check_range("train.time_budget_s", self.time_budget_s, lo=0, lo_open=True)
        if self.threads is not None:
            check_range("train.threads", self.threads, lo=1)
        from seqrec.eval.metrics import parse_metric_name
        parse_metric_name(self.metric, where="train.metric")


@dataclass
class EvalConfig:
    """Full-ranking evaluation (see docs/protocol.md)."""
    exclude: str = "none"
    """Items removed from the ranking: none | window (items in the model's input window) |
    history (every item of the user's history before the target)."""
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    """Cut-offs for HR@K, NDCG@K and MRR@K."""
    batch_size: int = 1024
    """Users scored per batch."""
    item_chunk: int = 0
    """Score this many items at a time (0 = all items at once). Caps evaluation memory at about
    batch_size x item_chunk x 5 bytes (float scores + a boolean comparison) instead of ~9 bytes per (user, item)
    over the whole catalogue: for large catalogues (e.g. 65536 at 1M items). Same ranks and metrics as 0."""

    def validate(self) -> None:
        check_choice("eval.exclude", self.exclude, EXCLUDE_MODES)
        if not self.ks or any((not isinstance(k, int)) or k < 1 for k in self.ks):
            raise ConfigError(f"eval.ks: invalid value {self.ks!r}; expected a non-empty list of positive integers")
        check_range("eval.batch_size", self.batch_size, lo=1)
        if isinstance(self.item_chunk, bool) or not isinstance(self.item_chunk, int):
            raise ConfigError(f"eval.item_chunk: expected a non-negative integer (0 = all items), "
                              f"got {self.item_chunk!r}")
        check_range("eval.item_chunk", self.item_chunk, lo=0)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = None  # the model's own config dataclass (see MODEL_CONFIGS); SASRec's by default
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = model_config_from_dict({"name": "sasrec"})

    def validate(self) -> None:
        self.data.validate()
        self.model.validate()
        self.train.validate()
        self.eval.validate()
        from seqrec.eval.metrics import parse_metric_name
        _, k = parse_metric_name(self.train.metric, where="train.metric")
        if k not in self.eval.ks:
            raise ConfigError(f"train.metric: {self.train.metric} is not computed; add {k} to eval.ks "
                              f"(now {self.eval.ks})")

    def to_dict(self) -> dict:
        return to_plain(self)


# ---------------------------------------------------------------------------------------------------------------
# dict <-> dataclass


def to_plain(obj: Any) -> Any:
    """A dataclass (nested) as plain dicts/lists/scalars, suitable for YAML/JSON and torch.load(weights_only)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def _coerce(where: str, value: Any, annotation: Any) -> Any:
    """Check/convert a YAML value against a field annotation (int, float, bool, str, list[int], optional).

    `annotation` is a resolved type (`typing.get_type_hints` of the dataclass), never a postponed string."""
    if isinstance(annotation, str):
        raise TypeError(f"{where}: unresolved annotation {annotation!r}; pass typing.get_type_hints(cls) types")
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(where, value, non_none[0])
    if annotation is Any:
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: invalid value {value!r}; expected a list")
        return [_coerce(f"{where}[{i}]", v, args[0] if args else Any) for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: invalid value {value!r}; expected true or false")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: invalid value {value!r}; expected an integer")
        return value
    if annotation is float:
        if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", value.strip()):
            value = float(value)     # PyYAML (YAML 1.1) reads 1e-3, without a dot, as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: invalid value {value!r}; expected a number")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: invalid value {value!r}; expected a string")
        return str(value)
    return value


def dataclass_from_dict(cls: type, values: dict, where: str) -> Any:
    """Build dataclass `cls` from `values`; unknown keys and ill-typed values raise ConfigError naming the key."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(f"{where}.{k}", v, hints[k]) for k, v in values.items()}
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# model configs, registered by the models


MODEL_CONFIGS: dict[str, type] = {}
"""Model name -> the model's config dataclass. Filled by `seqrec.models.register`; this module knows no model."""

_model_loader: Callable[[], None] | None = None


def set_model_loader(loader: Callable[[], None]) -> None:
    """Install the function that imports (and so registers) every model; called once by the `seqrec` package."""
    global _model_loader
    _model_loader = loader


def model_config_class(name: str) -> type:
    """The config dataclass registered for model `name`; an unknown name is a ConfigError listing the models."""
    if name not in MODEL_CONFIGS and _model_loader is not None:
        _model_loader()     # models register on import; load them all before declaring a name unknown
    if name not in MODEL_CONFIGS:
        raise ConfigError(f"model.name: unknown model {name!r}; valid choices: {', '.join(sorted(MODEL_CONFIGS))}")
    return MODEL_CONFIGS[name]


def model_config_from_dict(d: dict, where: str = "model") -> Any:
    """The config dataclass of the model `d['name']` (default sasrec) built from the flat keys of `d`."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping with at least 'name'")
    name = d.get("name", "sasrec")
    return dataclass_from_dict(model_config_class(name), {**d, "name": name}, where)


def config_from_dict(d: dict, source: str = "config") -> Config:
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping with sections data, model, train, eval")
    valid = ("data", "model", "train", "eval")
    unknown = [k for k in d if k not in valid]
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")
    cfg = Config(
        data=dataclass_from_dict(DataConfig, d.get("data") or {}, "data"),
        model=model_config_from_dict(d.get("model") or {"name": "sasrec"}),
        train=dataclass_from_dict(TrainConfig, d.get("train") or {}, "train"),
        eval=dataclass_from_dict(EvalConfig, d.get("eval") or {}, "eval"),
    )
    cfg.validate()
    return cfg


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` overrides (value parsed as YAML) to a nested dict, in place; returns it."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=0.001")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION one of data, model, train, eval")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        section = d.setdefault(parts[0], {})
        if section is None:
            section = d[parts[0]] = {}
        if parts[0] == "model" and parts[1] == "name" and section.get("name") not in (None, value):
            # switching model: the old model's keys no longer apply
            d[parts[0]] = section = {}
        section[parts[1]] = value
    return d


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    return d or {}


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    d = read_yaml(path) if path else {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping with sections data, model, train, eval")
    d = apply_overrides(d, overrides or [])
    return config_from_dict(d, source=str(path) if path else "config")
