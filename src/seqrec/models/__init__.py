"""Model registry: name -> model class (each with its own config dataclass)."""
from __future__ import annotations

from seqrec.errors import ConfigError
from seqrec.models.base import DatasetInfo, ModelConfig, SeqRecModel
from seqrec.models.bert4rec import BERT4Rec
from seqrec.models.gru4rec import GRU4Rec
from seqrec.models.sasrec import SASRec

MODELS: dict[str, type[SeqRecModel]] = {m.name: m for m in (SASRec, BERT4Rec, GRU4Rec)}


def register(cls: type[SeqRecModel]) -> type[SeqRecModel]:
    MODELS[cls.name] = cls
    return cls


def _load_optional() -> None:
    # models added by later modules register themselves on import
    import importlib
    for mod in ("cl4srec", "mclrec", "emkd", "mqsa_ted"):
        try:
            importlib.import_module(f"seqrec.models.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"seqrec.models.{mod}":
                raise


def model_config_from_dict(d: dict) -> ModelConfig:
    from seqrec.config import dataclass_from_dict
    _load_optional()
    if not isinstance(d, dict):
        raise ConfigError("model: expected a mapping with at least 'name'")
    name = d.get("name", "sasrec")
    if name not in MODELS:
        raise ConfigError(f"model.name: unknown model {name!r}; valid choices: {', '.join(sorted(MODELS))}")
    return dataclass_from_dict(MODELS[name].Config, {**d, "name": name}, "model")


def build_model(cfg: ModelConfig, info: DatasetInfo) -> SeqRecModel:
    _load_optional()
    return MODELS[cfg.name](cfg, info)


__all__ = ["MODELS", "register", "model_config_from_dict", "build_model", "DatasetInfo", "ModelConfig",
           "SeqRecModel"]
