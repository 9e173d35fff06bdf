"""Checkpoints: plain data only (state dicts, tensors, numbers, the config as a dict), loadable with
torch.load(weights_only=True), written atomically."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from seqrec.config import config_from_dict
from seqrec.data.dataset import ItemAttributes
from seqrec.errors import SeqrecError
from seqrec.models import DatasetInfo, build_model
from seqrec.utils import atomic_torch_save

# what torch.load(weights_only=True) raises for a file that is not a readable checkpoint: a foreign or disallowed
# pickle (UnpicklingError), an empty file (EOFError), a truncated or foreign zip archive and a corrupt legacy file
# (RuntimeError), undecodable content (ValueError). Anything else (MemoryError, OSError, ...) is a real error.
UNREADABLE_CHECKPOINT_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, ValueError)


def info_to_plain(info: DatasetInfo, dataset_name: str) -> dict:
    a = info.attributes
    return {"n_items": info.n_items, "name": dataset_name,
            "attributes": None if a is None else {"offsets": torch.from_numpy(a.offsets), "ids": torch.from_numpy(a.ids),
                                                  "n_attributes": a.n_attributes}}


def info_from_plain(d: dict) -> DatasetInfo:
    a = d.get("attributes")
    attrs = None if a is None else ItemAttributes(np.asarray(a["offsets"]), np.asarray(a["ids"]), int(a["n_attributes"]))
    return DatasetInfo(int(d["n_items"]), attrs)


def save_checkpoint(path: str | Path, state: dict) -> None:
    atomic_torch_save(state, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SeqrecError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except UNREADABLE_CHECKPOINT_ERRORS as e:  # a truncated or foreign file
        raise SeqrecError(f"{path}: not a readable seqrec checkpoint "
                          f"({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]})") from None


def upgrade_config(d: dict) -> dict:
    """A config dict written by an earlier version, in today's keys (a copy): `train.amp` (bfloat16 autocast on
    a GPU) became `train.precision` (amp true -> bf16, false -> fp32, which is what those runs did)."""
    train = dict(d.get("train") or {})
    if "amp" in train:
        amp = train.pop("amp")
        train.setdefault("precision", "bf16" if amp else "fp32")
    return {**d, "train": train}


def model_from_checkpoint(path: str | Path):
    """(model in eval mode, config, checkpoint dict) from a checkpoint written by the trainer."""
    ckpt = load_checkpoint(path)
    for key in ("model", "config", "dataset"):
        if key not in ckpt:
            raise SeqrecError(f"{path}: not a seqrec checkpoint (missing {key!r})")
    cfg = config_from_dict(upgrade_config(ckpt["config"]), source=f"{path} (config)")
    model = build_model(cfg.model, info_from_plain(ckpt["dataset"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, cfg, ckpt
