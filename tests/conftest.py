"""Shared fixtures: one thread, tiny synthetic data, tiny configs, the shared Beauty file when it is present."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BEAUTY = SHARED_DATA / "Beauty.txt"
needs_beauty = pytest.mark.skipif(not BEAUTY.is_file(), reason=f"{BEAUTY} not present")

# a tiny SASRec on the tiny synthetic data (200 users, 60 items): a run of a few epochs takes about a second
TINY = ["data.synthetic_users=200", "data.synthetic_items=60", "model.d=16", "model.layers=1", "model.heads=1",
        "model.inner=32", "model.max_len=20", "model.dropout=0.1", "model.attn_dropout=0.1", "train.batch_size=64",
        "train.lr=0.005", "train.max_epochs=3", "train.threads=1", "train.patience=0", "eval.batch_size=64"]


@pytest.fixture(autouse=True)
def _one_thread():
    # the Trainer sets torch threads from the config; keep every test at one thread
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic():
    from seqrec.data.synthetic import make_synthetic
    return make_synthetic(n_users=200, n_items=60)


@pytest.fixture(scope="session")
def synthetic_split(synthetic):
    from seqrec.data.dataset import leave_one_out
    return leave_one_out(synthetic)


def tiny_config(*overrides: str):
    from seqrec.config import load_config
    return load_config(None, TINY + list(overrides))


@pytest.fixture(scope="session")
def beauty_split():
    if not BEAUTY.is_file():
        pytest.skip(f"{BEAUTY} not present")
    from seqrec.data.dataset import leave_one_out
    from seqrec.data.readers import read_s3rec
    return leave_one_out(read_s3rec(BEAUTY, None))


def hand_split(sequences: list[list[int]], n_items: int | None = None):
    """A leave-one-out split of hand-written sequences."""
    from seqrec.data.dataset import InteractionData, leave_one_out
    return leave_one_out(InteractionData.from_sequences("hand", [np.asarray(s) for s in sequences],
                                                        n_items=n_items))


def event_log(n_users: int = 200, n_items: int = 60, seed: int = 0):
    """The tiny synthetic data as a raw event log, the way people's own data look: a pandas DataFrame with columns
    user_id ('u0', 'u1', ...), item_id ('sku-0007', ... : strings) and timestamp, rows in random order (each user's
    timestamps distinct and increasing along its synthetic sequence). Returns (frame, {user: items in time order})."""
    import pandas as pd
    from seqrec.data.synthetic import make_synthetic
    data = make_synthetic(n_users=n_users, n_items=n_items)
    rng = np.random.default_rng(seed)
    histories, rows = {}, []
    for u in range(data.n_users):
        items = [f"sku-{int(i):04d}" for i in data.sequence(u)]
        times = np.sort(rng.choice(10**6, size=len(items), replace=False))
        histories[f"u{u}"] = items
        rows += [(f"u{u}", item, int(t)) for item, t in zip(items, times)]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
    return frame, histories


def one_line_error(exc_type, parts, fn, *args, **kwargs) -> str:
    """Call fn, expect exc_type with a one-line message containing every string in parts; return the message."""
    with pytest.raises(exc_type) as e:
        fn(*args, **kwargs)
    message = str(e.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def load_benchmark(name: str):
    """benchmarks/<name>.py imported as a module (benchmarks/ is a folder of scripts, not a package)."""
    import importlib.util
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
