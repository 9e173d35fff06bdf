"""Dataset statistics and the checks behind `seqrec data check PATH`."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from seqrec.config import DataConfig
from seqrec.data.dataset import InteractionData
from seqrec.data.loading import load_dataset, make_split, read_data_file
from seqrec.errors import DataError

# upper bounds (inclusive) of the sequence-length histogram bins; the last bin is open
LENGTH_BINS = (2, 4, 9, 19, 49, 99, 199, 499)


def dataset_stats(data: InteractionData) -> dict:
    """Summary numbers of an InteractionData, as a flat-ish dict of plain Python values.

    Keys: name, users, items (distinct item ids that occur), max_item_id (n_items), interactions,
    length_min / length_mean / length_median / length_p90 / length_max, length_histogram ({'1-2': count, ...,
    '500+': count}), users_with_repeats (users with some item more than once), repeated_interactions
    (interactions whose item occurred earlier in the same sequence), short_users (users with fewer than 3
    interactions, which a leave-one-out split cannot evaluate), and when the data has attributes: n_attributes,
    items_with_attributes (among the items that occur), attribute_coverage (their fraction), attributes_per_item
    (mean over the items that have some), and when the data has timestamps: time_min, time_max.
    """
    lengths = data.lengths
    used = np.zeros(data.n_items + 1, dtype=bool)
    used[data.items] = True
    repeats_per_user = _repeats_per_user(data)
    stats = {
        "name": data.name,
        "users": int(data.n_users),
        "items": int(used[1:].sum()),
        "max_item_id": int(data.n_items),
        "interactions": int(len(data.items)),
        "length_min": int(lengths.min()) if len(lengths) else 0,
        "length_mean": float(lengths.mean()) if len(lengths) else 0.0,
        "length_median": float(np.median(lengths)) if len(lengths) else 0.0,
        "length_p90": float(np.percentile(lengths, 90)) if len(lengths) else 0.0,
        "length_max": int(lengths.max()) if len(lengths) else 0,
        "length_histogram": _length_histogram(lengths),
        "users_with_repeats": int((repeats_per_user > 0).sum()),
        "repeated_interactions": int(repeats_per_user.sum()),
        "short_users": int((lengths < 3).sum()),
    }
    if data.times is not None and len(data.times):
        stats.update({"time_min": float(data.times.min()), "time_max": float(data.times.max())})
    if data.attributes is not None:
        counts = np.diff(data.attributes.offsets)[: data.n_items + 1]
        has = (counts > 0) & used[: len(counts)]
        n_used = max(stats["items"], 1)
        stats.update({
            "n_attributes": int(data.attributes.n_attributes),
            "items_with_attributes": int(has.sum()),
            "attribute_coverage": float(has.sum() / n_used),
            "attributes_per_item": float(counts[has].mean()) if has.any() else 0.0,
        })
    return stats


def _repeats_per_user(data: InteractionData) -> np.ndarray:
    """Per user, how many of its interactions repeat an item it already had (vectorised over (user, item))."""
    rows = np.repeat(np.arange(data.n_users, dtype=np.int64), data.lengths)
    pairs = rows * (data.n_items + 1) + data.items
    distinct_rows = np.unique(pairs) // (data.n_items + 1)
    return data.lengths - np.bincount(distinct_rows, minlength=data.n_users)


def _length_histogram(lengths: np.ndarray) -> dict[str, int]:
    """Counts of sequence lengths in the LENGTH_BINS bins, labelled '1-2', '3-4', ..., '500+'."""
    edges = (0,) + LENGTH_BINS
    labels = [f"{lo + 1}-{hi}" for lo, hi in zip(edges[:-1], edges[1:])] + [f"{LENGTH_BINS[-1] + 1}+"]
    bins = np.searchsorted(np.asarray(LENGTH_BINS), lengths, side="left")
    counts = np.bincount(bins, minlength=len(labels))
    return {label: int(c) for label, c in zip(labels, counts)}


def format_stats(stats: dict) -> str:
    """A readable two-column table of `dataset_stats` output (numbers with thousands separators)."""
    rows = [
        ("dataset", stats["name"]),
        ("users", f"{stats['users']:,}"),
        ("items (occurring)", f"{stats['items']:,}"),
        ("largest item id", f"{stats['max_item_id']:,}"),
        ("interactions", f"{stats['interactions']:,}"),
        ("length min / median / mean / p90 / max",
         f"{stats['length_min']} / {stats['length_median']:g} / {stats['length_mean']:.2f} / "
         f"{stats['length_p90']:g} / {stats['length_max']}"),
        ("users with < 3 interactions", f"{stats['short_users']:,}"),
        ("users with repeated items", f"{stats['users_with_repeats']:,}"),
        ("repeated interactions", f"{stats['repeated_interactions']:,}"),
    ]
    if "time_min" in stats:
        rows.append(("timestamps min / max", f"{stats['time_min']!r} / {stats['time_max']!r}"))
    if "n_attributes" in stats:
        rows += [
            ("attributes", f"{stats['n_attributes']:,}"),
            ("items with attributes", f"{stats['items_with_attributes']:,} ({stats['attribute_coverage']:.1%})"),
            ("attributes per item", f"{stats['attributes_per_item']:.2f}"),
        ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("length histogram:")
    top = max(stats["length_histogram"].values()) or 1
    for label, count in stats["length_histogram"].items():
        lines.append(f"  {label:>8}  {count:>9,}  {'#' * round(40 * count / top)}")
    return "\n".join(lines)


def check_dataset(path: str | Path, fmt: str = "auto", attributes: str | Path | None = None,
                  user_col: str = "user_id", item_col: str = "item_id", time_col: str | None = "timestamp",
                  k_core: int = 0) -> list[str]:
    """Read a data file with full validation and list what a user should know about it.

    path: an interaction file (any format of `read_data_file`), a known dataset name found locally (it is not
        downloaded) or 'synthetic'. fmt, attributes, user_col, item_col, time_col, k_core: as for `read_data_file`.
    Returns strings prefixed 'note:' (facts: sizes, repeats), 'warning:' (things that change results: short
    users, unused item ids) or 'problem:' (no user can be evaluated). The first one always gives the counts.
    A file that cannot be read raises DataError (its message names the file and the line).
    """
    return check_data(DataConfig(dataset=str(path), format=fmt, attributes=attributes, user_col=user_col,
                                 item_col=item_col, time_col=time_col, k_core=k_core))


def check_data(cfg: DataConfig) -> list[str]:
    """`check_dataset` for the data a DataConfig describes (`seqrec data check PATH --set data.KEY=VALUE`).

    An existing file (cfg.path, or cfg.dataset when it names a file) is read by `read_data_file`; otherwise
    cfg.dataset is 'synthetic' or a known dataset name, loaded by `load_dataset` from local files only."""
    data = _read_for_check(cfg)
    stats = dataset_stats(data)
    notes = [f"note: {data.source or data.name}: {stats['users']:,} users, {stats['items']:,} items, "
             f"{stats['interactions']:,} interactions; sequence length {stats['length_min']}-{stats['length_max']}, "
             f"mean {stats['length_mean']:.2f}"]
    notes += _short_user_notes(data, stats) if cfg.split == "loo" else _temporal_split_notes(data, cfg)
    notes += _id_gap_notes(data, stats)
    if stats["users_with_repeats"]:
        notes.append(f"note: {stats['users_with_repeats']:,} users have repeated items "
                     f"({stats['repeated_interactions']:,} repeated interactions); they are kept as they are")
    notes += _attribute_notes(data, stats)
    return notes


def _read_for_check(cfg: DataConfig) -> InteractionData:
    """read_data_file for an existing file (a file wins over a known name), else load_dataset without download."""
    if cfg.path is None and not Path(cfg.dataset).exists():
        return load_dataset(dataclasses.replace(cfg, download=False))
    return read_data_file(cfg.path or cfg.dataset, cfg.format, cfg.attributes, cfg.user_col, cfg.item_col,
                          cfg.time_col, cfg.k_core)


def _short_user_notes(data: InteractionData, stats: dict) -> list[str]:
    """Users with fewer than 3 interactions cannot be split into train / valid / test."""
    if stats["short_users"] == 0:
        return []
    if stats["short_users"] == stats["users"]:
        return ["problem: every user has fewer than 3 interactions; no user can be evaluated"]
    first = int(np.flatnonzero(data.lengths < 3)[0])
    return [f"warning: {stats['short_users']:,} users have fewer than 3 interactions (first: user "
            f"{data.user_ids[first]} with {data.lengths[first]}); they cannot be evaluated; data.short_users "
            f"decides whether they are kept for training ('train_only'), dropped or an error"]


def _temporal_split_notes(data: InteractionData, cfg: DataConfig) -> list[str]:
    """What data.split=temporal makes of the data: the cuts and who is trained and evaluated, or why it fails."""
    try:
        p = make_split(data, cfg).protocol
    except DataError as e:
        return [f"problem: {e}"]
    notes = [f"note: temporal split at {p['valid_cut']!r} (validation) and {p['test_cut']!r} (test): "
             f"{p['train_interactions']:,} training interactions, {p['valid_users']:,} validation and "
             f"{p['test_users']:,} test users"]
    if p["valid_users_without_history"] or p["test_users_without_history"]:
        notes.append(f"warning: {p['valid_users_without_history']:,} validation and "
                     f"{p['test_users_without_history']:,} test users have no interaction before their target; "
                     f"they are not evaluated")
    return notes


def _id_gap_notes(data: InteractionData, stats: dict) -> list[str]:
    """Item ids in 1..n_items that never occur (they still get an embedding row and are ranked), user id gaps."""
    notes = []
    vocab = data.item_vocab
    if not vocab.is_identity:       # raw tables, and S3-Rec files with sparse item ids
        originals = (f" (original ids {vocab.originals.min()}..{vocab.originals.max()})" if not vocab.is_str
                     else " (original ids are strings)")
        notes.append(f"note: item ids are remapped to 1..{data.n_items} internally{originals}; checkpoints keep "
                     f"the original ids, which recommend and serve accept and return")
    used = np.zeros(data.n_items + 1, dtype=bool)
    used[data.items] = True
    unused = np.flatnonzero(~used[1:]) + 1
    if len(unused):
        examples = ", ".join(str(i) for i in unused[:5]) + (", ..." if len(unused) > 5 else "")
        notes.append(f"warning: {len(unused):,} item ids in 1..{data.n_items} never occur ({examples}); they "
                     f"still have embedding rows and are ranked in full-ranking evaluation")
    users = data.user_vocab
    if not users.is_str and not users.is_identity and len(users):
        ids = users.originals
        notes.append(f"note: user ids are not 1..{len(ids)} (range {ids.min()}..{ids.max()}); rows are used as "
                     f"they are")
    return notes


def _attribute_notes(data: InteractionData, stats: dict) -> list[str]:
    """Attribute coverage: items without any attribute, attribute ids that no item has."""
    if data.attributes is None:
        return ["note: no item attributes"]
    notes = [f"note: {stats['n_attributes']:,} attributes; {stats['items_with_attributes']:,} of "
             f"{stats['items']:,} items ({stats['attribute_coverage']:.1%}) have at least one"]
    missing = stats["items"] - stats["items_with_attributes"]
    if missing:
        notes.append(f"warning: {missing:,} occurring items have no attribute")
    unused = data.attributes.n_attributes - len(np.unique(data.attributes.ids))
    if unused:
        notes.append(f"note: {unused:,} attribute ids in 1..{data.attributes.n_attributes} are never used")
    return notes
