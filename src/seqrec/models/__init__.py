"""Model registry: name -> model class (each with its own config dataclass, registered in
seqrec.config.MODEL_CONFIGS so that config loading finds it without importing this package)."""
from __future__ import annotations

from seqrec.config import MODEL_CONFIGS, model_config_from_dict
from seqrec.models.base import DatasetInfo, EncoderConfig, ModelConfig, SeqRecModel
from seqrec.models.bert4rec import BERT4Rec
from seqrec.models.gru4rec import GRU4Rec
from seqrec.models.sasrec import SASRec

MODELS: dict[str, type[SeqRecModel]] = {}


def register(cls: type[SeqRecModel]) -> type[SeqRecModel]:
    MODELS[cls.name] = cls
    MODEL_CONFIGS[cls.name] = cls.Config
    return cls


for _model in (SASRec, BERT4Rec, GRU4Rec):
    register(_model)


def load_all() -> None:
    """Import the models defined by later modules; each registers itself on import."""
    import importlib
    for mod in ("cl4srec", "mclrec", "emkd", "mqsa_ted"):
        try:
            importlib.import_module(f"seqrec.models.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"seqrec.models.{mod}":
                raise


def build_model(cfg: ModelConfig, info: DatasetInfo) -> SeqRecModel:
    load_all()
    return MODELS[cfg.name](cfg, info)


__all__ = ["MODELS", "register", "load_all", "model_config_from_dict", "build_model", "DatasetInfo",
           "EncoderConfig", "ModelConfig", "SeqRecModel"]
