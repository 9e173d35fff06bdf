"""From a DataConfig to an InteractionData (the synthetic default, a known dataset, or a file of any format) and
to its Split."""
from __future__ import annotations

from pathlib import Path

from seqrec.config import DataConfig
from seqrec.data.dataset import InteractionData, Split, leave_one_out, temporal_split
from seqrec.data.known import get_known, resolve_dataset
from seqrec.data.readers import TABLE_FORMATS, read_attributes, read_s3rec, read_table
from seqrec.data.synthetic import make_synthetic
from seqrec.errors import ConfigError, DataError

FORMATS = ("s3rec",) + TABLE_FORMATS
EXTENSIONS = {".txt": "s3rec", ".inter": "inter", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


def load_dataset(cfg: DataConfig) -> InteractionData:
    """Load the interactions a DataConfig describes.

    cfg.dataset 'synthetic' (and no cfg.path): the embedded synthetic data (cfg.synthetic_users / _items, seed 0).
    A known dataset name (and no cfg.path): its S3-Rec files, found or downloaded by `resolve_dataset`
        (cfg.data_dir, cfg.download), with attributes unless cfg.attributes is 'none'; name = canonical name.
    Anything else: a file, cfg.path or else cfg.dataset, read by `read_data_file` with cfg.format, the column
        names, cfg.k_core and cfg.attributes; name = file stem.
    """
    if cfg.path is None and cfg.dataset == "synthetic":
        return make_synthetic(cfg.synthetic_users, cfg.synthetic_items, seed=0)
    known = get_known(cfg.dataset) if cfg.path is None else None
    if known is not None:
        if cfg.k_core:
            raise ConfigError(f"data.k_core: {known.name} is already preprocessed (an S3-Rec file); k_core applies "
                              f"to raw tables (inter, csv, tsv, parquet) only; set it to 0")
        want_attributes = cfg.attributes != "none"
        text, attrs = resolve_dataset(known.name, cfg.data_dir, cfg.download, attributes=want_attributes)
        if want_attributes and cfg.attributes is not None:
            attrs = Path(cfg.attributes)    # an explicit attribute file wins over the dataset's own
        data = read_s3rec(text, attrs)
        data.name = known.name
        return data
    return read_data_file(cfg.path or cfg.dataset, cfg.format, cfg.attributes, cfg.user_col, cfg.item_col,
                          cfg.time_col, cfg.k_core)


def make_split(data: InteractionData, cfg: DataConfig) -> Split:
    """The split cfg.split asks for (docs/protocol.md, "Split"): leave-one-out with cfg.short_users, or the
    temporal split at cfg.valid_time / cfg.test_time, each defaulting to its quantile of the interaction times."""
    if cfg.split == "temporal":
        return temporal_split(data, cfg.valid_time, cfg.test_time, cfg.valid_time_quantile, cfg.test_time_quantile)
    return leave_one_out(data, cfg.short_users)


def detect_format(path: str | Path) -> str:
    """File format from the extension: .txt s3rec, .inter inter, .csv csv, .tsv tsv, .parquet parquet."""
    suffix = Path(path).suffix.lower()
    if suffix not in EXTENSIONS:
        valid = ", ".join(f"{ext} ({fmt})" for ext, fmt in EXTENSIONS.items())
        raise DataError(f"{path}: cannot tell the format from the extension {suffix or '(none)'!r}; known "
                        f"extensions: {valid}; or set data.format to one of: {', '.join(FORMATS)}")
    return EXTENSIONS[suffix]


def read_data_file(path: str | Path, fmt: str = "auto", attributes: str | Path | None = None,
                   user_col: str = "user_id", item_col: str = "item_id", time_col: str | None = "timestamp",
                   k_core: int = 0) -> InteractionData:
    """Read one interaction file of any supported format.

    path: the file. fmt: 'auto' (from the extension, see `detect_format`) or one of FORMATS.
    attributes: item attribute JSON path; None: `<stem>_item2attributes.json` beside an S3-Rec file if present
        (raw tables get none); 'none': no attributes. For raw tables the JSON keys are original item ids.
    user_col, item_col, time_col, k_core: for raw tables, see `read_table`; k_core must be 0 for S3-Rec files.
    """
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {fmt!r}; valid formats: auto, {', '.join(FORMATS)}")
    if fmt == "auto":
        if not path.exists():
            from seqrec.data.known import KNOWN_DATASETS
            raise DataError(f"{path}: file not found, and not a known dataset name (valid: "
                            f"{', '.join(KNOWN_DATASETS)}) or 'synthetic'")
        fmt = detect_format(path)
    if fmt == "s3rec":
        if k_core:
            raise ConfigError(f"data.k_core: {path} is an S3-Rec file (already preprocessed); k_core applies to "
                              f"raw tables (inter, csv, tsv, parquet) only; set it to 0")
        return read_s3rec(path, _s3rec_attributes(path, attributes))
    data = read_table(path, fmt, user_col, item_col, time_col, k_core)
    if attributes is not None and str(attributes) != "none":
        data.attributes = read_attributes(attributes, data.n_items, data.item_vocab)
    return data


def _s3rec_attributes(path: Path, attributes: str | Path | None) -> Path | None:
    """The attribute file of an S3-Rec text file: explicit, 'none', or `<stem>_item2attributes.json` beside it."""
    if attributes is not None:
        return None if str(attributes) == "none" else Path(attributes)
    beside = path.with_name(f"{path.stem}_item2attributes.json")
    return beside if beside.is_file() else None
