"""Checkpoints: plain data only (state dicts, tensors, numbers, the config as a dict), loadable with
torch.load(weights_only=True), written atomically.

Every checkpoint's "dataset" entry describes the data the model was trained on: n_items, attributes, the item and
user vocabularies (original ids, seqrec.data.vocab) and the data's fingerprint (counts + item vocabulary hash), so
that recommend / serve speak the file's ids and evaluate / resume refuse other data. `trained_on` reads them back;
checkpoints written before vocabularies were stored read as an identity item vocabulary (ids are internal)."""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seqrec.config import FRAME_DATASET, config_from_dict
from seqrec.data.dataset import InteractionData, ItemAttributes
from seqrec.data.vocab import Vocabulary, describe_fingerprint, same_data
from seqrec.errors import SeqrecError
from seqrec.models import DatasetInfo, build_model
from seqrec.utils import atomic_torch_save

# what torch.load(weights_only=True) raises for a file that is not a readable checkpoint: a foreign or disallowed
# pickle (UnpicklingError), an empty file (EOFError), a truncated or foreign zip archive and a corrupt legacy file
# (RuntimeError), undecodable content (ValueError). Anything else (MemoryError, OSError, ...) is a real error.
UNREADABLE_CHECKPOINT_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, ValueError)


def info_to_plain(info: DatasetInfo, data: InteractionData) -> dict:
    """The checkpoint's "dataset" entry: what a model needs to be rebuilt, the vocabularies and the fingerprint."""
    a = info.attributes
    return {"n_items": info.n_items, "name": data.name,
            "attributes": None if a is None else {"offsets": torch.from_numpy(a.offsets), "ids": torch.from_numpy(a.ids),
                                                  "n_attributes": a.n_attributes},
            "item_vocab": data.item_vocab.to_plain(), "user_vocab": data.user_vocab.to_plain(),
            "fingerprint": data.fingerprint()}


def info_from_plain(d: dict) -> DatasetInfo:
    a = d.get("attributes")
    attrs = None if a is None else ItemAttributes(np.asarray(a["offsets"]), np.asarray(a["ids"]), int(a["n_attributes"]))
    return DatasetInfo(int(d["n_items"]), attrs)


@dataclass
class TrainedOn:
    """What a checkpoint records of the data its model was trained on."""
    name: str
    item_vocab: Vocabulary            # original id of each internal item id 1..n_items
    user_vocab: Vocabulary | None     # None: written before vocabularies were stored
    fingerprint: dict | None          # InteractionData.fingerprint(); None: written before fingerprints

    @property
    def ids_are_internal(self) -> bool:
        """True for a checkpoint from before vocabularies: its item ids are the reader's internal 1..n_items."""
        return self.user_vocab is None


def trained_on(ckpt: dict, path: str | Path) -> TrainedOn:
    """The data description of a loaded checkpoint (see `TrainedOn`)."""
    d = ckpt["dataset"]
    n_items = int(d["n_items"])
    if "item_vocab" not in d:       # written before vocabularies: ids are internal
        return TrainedOn(str(d.get("name", "")), Vocabulary.identity(n_items), None, None)
    item_vocab = Vocabulary.from_plain(d["item_vocab"])
    if len(item_vocab) != n_items:
        raise SeqrecError(f"{path}: item vocabulary of {len(item_vocab)} ids for a model of {n_items} items; "
                          f"the checkpoint is inconsistent")
    return TrainedOn(str(d.get("name", "")), item_vocab, Vocabulary.from_plain(d["user_vocab"]),
                     d.get("fingerprint"))


def check_same_data(ckpt: dict, path: str | Path, data: InteractionData, purpose: str) -> None:
    """Refuse data other than the checkpoint's (by fingerprint; by item count for checkpoints without one).

    purpose: what was to be done, for the message ('evaluate', 'resume')."""
    stored = trained_on(ckpt, path)
    given = data.fingerprint()
    if stored.fingerprint is None:
        if data.n_items != len(stored.item_vocab):
            raise SeqrecError(f"{path}: the model knows items 1..{len(stored.item_vocab)} but the data has "
                              f"{data.n_items}; {purpose} on the dataset it was trained on")
        return
    if not same_data(stored.fingerprint, given):
        raise SeqrecError(f"{path} was trained on {describe_fingerprint(stored.fingerprint)}, the data given is "
                          f"{describe_fingerprint(given)}; expected the same dataset to {purpose}")


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


# --- the training interactions (what recommending to the data's users needs) -------------------------------
def interactions_to_plain(data) -> dict:
    """The users' sequences of an InteractionData as plain data for a checkpoint (torch.load(weights_only=True)).
    The vocabularies are not repeated: the checkpoint's "dataset" entry holds them (seqrec.train.checkpoint)."""
    return {"name": data.name, "source": data.source, "items": torch.from_numpy(data.items),
            "offsets": torch.from_numpy(data.offsets),
            "times": None if data.times is None else torch.from_numpy(data.times)}


def interactions_from_plain(d: dict, ckpt: dict, path: str | Path = "checkpoint"):
    """The InteractionData `interactions_to_plain` stored in checkpoint `ckpt` (read from `path`), with the
    checkpoint's vocabularies."""
    vocabs = trained_on(ckpt, path)
    times = None if d["times"] is None else np.asarray(d["times"], dtype=np.float64)
    data = InteractionData(d["name"], np.asarray(d["items"], dtype=np.int64),
                           np.asarray(d["offsets"], dtype=np.int64), vocabs.item_vocab, vocabs.user_vocab,
                           source=d["source"], times=times)
    if vocabs.fingerprint is not None and not same_data(vocabs.fingerprint, data.fingerprint()):
        raise SeqrecError(f"{path}: the stored interactions do not match the checkpoint's data description; "
                          f"the file is inconsistent")
    return data


def checkpoint_data(ckpt: dict, path: str | Path):
    """The interactions a checkpoint's model was trained on (every user's history, for recommending to the data's
    users): those stored in it (a file of SeqRec.save), else the data its config names (a run of `seqrec train`:
    same file, format, columns and k-core)."""
    from seqrec.data.loading import load_dataset
    if "interactions" in ckpt:
        return interactions_from_plain(ckpt["interactions"], ckpt, path)
    data = config_from_dict(upgrade_config(ckpt["config"]), source=f"{path} (config)").data
    if data.dataset == FRAME_DATASET and data.path is None:
        raise SeqrecError(f"{path}: trained on a DataFrame and holds no interactions, which recommending to the "
                          f"data's users needs; use the file SeqRec.save wrote, or recommend_for_histories")
    return load_dataset(data)
