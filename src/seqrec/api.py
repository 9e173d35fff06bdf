"""A Python API on DataFrames, in the convention of scikit-learn and RecTools.

    from seqrec import SeqRec

    model = SeqRec("sasrec", config="configs/sasrec/beauty.yaml", overrides=["train.max_epochs=5"])
    model.fit(df, user_col="user_id", item_col="item_id", time_col="timestamp")   # pandas or polars
    model.recommend(users=["u1", "u2"], k=10)             # DataFrame: user, item, rank, score (original ids)
    model.recommend_for_histories([["i3", "i9"]], k=10)   # DataFrame: history, item, rank, score
    model.save("model.pt")
    model = SeqRec.load("model.pt")

Nothing here is a second implementation of what the command line does: the frame is turned into an
InteractionData by the readers' own row-building code (the same NaN / empty checks, stable per-user timestamp
order, k-core filter and id vocabularies as a CSV file), training is `seqrec.train.train` (same configs, models,
split, early stopping), recommendations come from `seqrec.serve.Recommender` and `seqrec.serve.batch`.

A saved model is a checkpoint like a run's `best.pt` (so `seqrec recommend model.pt --history ...` works on it) with
the training interactions added, which `recommend(users=...)` needs after `load`. A checkpoint written by
`seqrec train` loads too; its interactions are then read from the data its config names.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from seqrec.config import FRAME_DATASET, Config, apply_overrides, config_from_dict, read_yaml
from seqrec.errors import ConfigError, SeqrecError

FROM_CONFIG = "<from config>"
"""Default of fit's column arguments: use the config's data.user_col / item_col / time_col."""


class SeqRec:
    """A sequential recommender trained on a DataFrame of (user, item, timestamp) rows.

    model:     a model name (sasrec, bert4rec, gru4rec, cl4srec, mclrec, emkd, mqsa_ted); None: the config's.
    config:    a YAML path, a `seqrec.config.Config`, a dict of sections, or None (the defaults). Its `data` section
               supplies the column names (unless fit is given them), `k_core` and `short_users`; the data source
               keys (dataset, path, format) are replaced by the frame.
    overrides: `SECTION.KEY=VALUE` strings, as `--set` on the command line (e.g. "train.max_epochs=5").
    """

    def __init__(self, model: str | None = None, config: str | Path | Config | dict | None = None,
                 overrides: list[str] | tuple[str, ...] = ()):
        self._start(_resolve_config(model, config, list(overrides)))

    def _start(self, config: Config) -> None:
        """The state of a model with this config, not yet fitted."""
        self.config = config
        self.result_: dict | None = None       # the training result (metrics, protocol, timing), as result.json
        self._recommender = None
        self._data = None                      # training interactions (InteractionData) of the fitted model
        self._checkpoint: dict | None = None   # what `save` writes
        self._checkpoint_path: Path | None = None

    def __repr__(self) -> str:
        state = "fitted" if self._recommender is not None else "not fitted"
        return f"SeqRec(model={self.config.model.name!r}, {state})"

    # ------------------------------------------------------------------------------------------------------------
    def fit(self, df, user_col: str = FROM_CONFIG, item_col: str = FROM_CONFIG, time_col: str | None = FROM_CONFIG,
            out_dir: str | Path | None = None, verbose: bool = False) -> "SeqRec":
        """Train on a pandas or polars DataFrame with one interaction per row; returns self.

        user_col, item_col: the id columns (any str / int ids); default: the config's data.user_col / item_col.
        time_col: the timestamp column (numbers or datetimes; each user's rows are stably sorted by it); None keeps
            the frame's row order; default: the config's data.time_col.
        out_dir: keep the run's files (best.pt, last.pt, metrics.jsonl, result.json) there; None: a temporary
            folder, removed after training.
        verbose: print the per-epoch progress lines of `seqrec train`.
        The split, model, training and evaluation follow the config exactly as `seqrec train` does; the metrics
        are in `self.result_`.
        """
        from seqrec.data.frames import read_frame
        from seqrec.train import train
        from seqrec.train.checkpoint import load_checkpoint

        dc = self.config.data
        user_col = dc.user_col if user_col == FROM_CONFIG else user_col
        item_col = dc.item_col if item_col == FROM_CONFIG else item_col
        time_col = dc.time_col if time_col == FROM_CONFIG else time_col
        data = read_frame(_to_pandas(df), user_col, item_col, time_col, dc.k_core, name=FRAME_DATASET)
        # the config records the frame's columns
        d = self.config.to_dict()
        d["data"].update(user_col=user_col, item_col=item_col, time_col=time_col)
        cfg = config_from_dict(d, source="SeqRec config")
        with tempfile.TemporaryDirectory(prefix="seqrec-fit-") as tmp:
            run_dir = Path(out_dir) if out_dir is not None else Path(tmp)
            result = train(cfg, out_dir=run_dir, quiet=not verbose, data=data, command="seqrec.api.SeqRec.fit")
            self._set_fitted(run_dir / "best.pt", load_checkpoint(run_dir / "best.pt"), data)
        self.config, self.result_ = cfg, result
        return self

    def _set_fitted(self, checkpoint_path: Path, checkpoint: dict, data) -> None:
        from seqrec.serve import Recommender
        self._checkpoint, self._checkpoint_path = checkpoint, checkpoint_path
        self._recommender = Recommender.from_checkpoint(checkpoint_path)
        self._data = data

    # ------------------------------------------------------------------------------------------------------------
    def recommend(self, users=None, k: int = 10, exclude_seen: bool = True):
        """Top-k items for users of the training data, from each user's whole history (all their interactions).

        users: original user ids (a list, array or Series); None: every user. An unknown user is an error.
        exclude_seen: do not recommend items the user has interacted with.
        Returns a pandas DataFrame with columns user, item, rank (1 = best), score; original ids, k rows per user
        (fewer when fewer items are left), users in the order given.
        """
        from seqrec.serve.batch import recommend_users
        rec = self._fitted()
        if users is not None:
            users = _id_list(users, "users", "user ids")
        return recommend_users(rec, self._training_data(), users, k, exclude_seen)

    def recommend_for_histories(self, histories, k: int = 10, exclude_seen: bool = True, unknown: str = "error"):
        """Top-k items for each history (a list of original item ids, oldest first), as for a new user.

        exclude_seen: do not recommend items of the history. unknown: 'error' (an item id the model does not know
        is an error naming it) or 'skip' (such ids are left out of the history, with a warning).
        Returns a pandas DataFrame with columns history (0-based position in `histories`), item, rank, score.
        """
        import numpy as np
        import pandas as pd
        rec = self._fitted()
        top = rec.recommend_batch(_id_list(histories, "histories", "histories (lists of item ids)"), k,
                                  exclude_seen, unknown=unknown)
        # the column types of `recommend`: ids as the vocabulary's (int64 or str), rank int64, score float32
        return pd.DataFrame({
            "history": np.repeat(np.arange(len(top), dtype=np.int64), [len(ranked) for ranked in top]),
            "item": np.array([item for ranked in top for item, _ in ranked], dtype=rec.item_vocab.originals.dtype),
            "rank": np.array([r for ranked in top for r in range(1, len(ranked) + 1)], dtype=np.int64),
            "score": np.array([score for ranked in top for _, score in ranked], dtype=np.float32)})

    # ------------------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted model to one file (atomically): a checkpoint as `best.pt` plus the training
        interactions. `seqrec recommend PATH ...` accepts it. Returns the path."""
        from seqrec.train.checkpoint import interactions_to_plain, save_checkpoint
        self._fitted()
        path = Path(path)
        if path.is_dir():
            raise SeqrecError(f"{path}: is a folder; expected a file name for the model, e.g. {path / 'model.pt'}")
        save_checkpoint(path, {**self._checkpoint, "interactions": interactions_to_plain(self._training_data())})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SeqRec":
        """A model saved by `save`, or a checkpoint written by `seqrec train` (its interactions are then read from
        the data its config names, when `recommend(users=...)` first needs them)."""
        from seqrec.train.checkpoint import load_checkpoint, upgrade_config
        ckpt = load_checkpoint(path)
        if "config" not in ckpt:
            raise SeqrecError(f"{path}: not a seqrec checkpoint (missing 'config')")
        self = cls.__new__(cls)      # the checkpoint's config as it is: its data source says where the data are
        self._start(config_from_dict(upgrade_config(ckpt["config"]), source=f"{path} (config)"))
        self._set_fitted(Path(path), ckpt, None)     # the data: checkpoint_data, when first needed
        return self

    # ------------------------------------------------------------------------------------------------------------
    def _fitted(self):
        if self._recommender is None:
            raise SeqrecError("SeqRec: the model is not fitted; call fit(df, ...) or SeqRec.load(path) first")
        return self._recommender

    def _training_data(self):
        from seqrec.train.checkpoint import checkpoint_data
        if self._data is None:        # a checkpoint of `seqrec train`: read its data when first needed
            self._data = checkpoint_data(self._checkpoint, self._checkpoint_path)
        return self._data


# ----------------------------------------------------------------------------------------------------------------


def _resolve_config(model: str | None, config, overrides: list[str]) -> Config:
    """The Config of SeqRec(model, config, overrides): config (path / Config / dict / None) + overrides, with the
    model name checked against the config's."""
    if config is None:
        d = {}
    elif isinstance(config, Config):
        d = config.to_dict()
    elif isinstance(config, dict):
        d = {section: dict(values or {}) for section, values in config.items()}
    elif isinstance(config, (str, Path)):
        d = read_yaml(config)
    else:
        raise ConfigError(f"SeqRec: config is a {type(config).__name__}; expected a YAML path, a Config, a dict "
                          f"or None")
    if model is not None:
        named = (d.get("model") or {}).get("name")
        if config is not None and named is not None and named != model:
            raise ConfigError(f"SeqRec: model {model!r} differs from the config's model.name {named!r}; pass one "
                              f"of them, or a config for {model!r}")
        overrides = [f"model.name={model}", *overrides]
    d = apply_overrides(d, overrides)
    # the data are the frame given to fit, whatever file the config names (config checks that depend on the
    # source, e.g. that a temporal split has timestamps, then apply to the frame)
    d["data"] = {**(d.get("data") or {}), "dataset": FRAME_DATASET, "path": None, "format": "auto"}
    return config_from_dict(d, source=str(config) if isinstance(config, (str, Path)) else "SeqRec config")


def _id_list(values, name: str, expected: str) -> list:
    """`values` (a list, tuple, array, Series, ...) as a list; a single str or a non-iterable is an error, since
    list('u12') would silently become the ids 'u', '1', '2'."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise SeqrecError(f"{name}: expected a list of {expected}, got {type(values).__name__} {values!r:.40}")
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _to_pandas(df):
    """A pandas DataFrame from a pandas or polars DataFrame (polars via its to_pandas)."""
    try:
        import pandas as pd
    except ImportError:
        raise SeqrecError("SeqRec.fit needs pandas: pip install seqrec[parquet]") from None
    if isinstance(df, pd.DataFrame):
        return df
    if type(df).__module__.split(".")[0] == "polars" and hasattr(df, "to_pandas"):
        try:
            return df.to_pandas()
        except ImportError as e:     # polars converts through pyarrow
            raise SeqrecError(f"SeqRec.fit: converting a polars DataFrame to pandas needs {e.name or 'pyarrow'}: "
                              f"pip install seqrec[parquet]") from None
    raise SeqrecError(f"SeqRec.fit: expected a pandas or polars DataFrame, got {type(df).__module__}."
                      f"{type(df).__name__}")
