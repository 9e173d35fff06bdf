"""Readers for interaction files: S3-Rec text, RecBole atomic `.inter`, CSV / TSV / Parquet tables.

Every reader returns an `InteractionData` and validates its input completely: a malformed line is an error
(`DataError`, one line, naming the file, the 1-based line or the column, and what was expected), never skipped.
Whitespace-only lines carry no data and are ignored (so a trailing blank line is fine).

S3-Rec files (`user item item ...`) are already preprocessed: ids are kept exactly as they are (Taobao has gaps,
so `n_items` is the largest item id, not the number of distinct items) and no filter is applied. The exception is
a file whose item ids are sparse beyond use as embedding rows (largest id over S3REC_DENSE_LIMIT and over
S3REC_SPARSE_RATIO times the number of distinct items, e.g. raw ids of 1e9): its item ids are remapped to 1..n in
increasing order of the original id, the originals kept in `data.item_vocab`, as for raw tables.

Raw tables (.inter, csv, tsv, parquet) have one interaction per row. They are grouped per user (users in order of
first appearance in the file), each user's rows stably sorted by timestamp (file order kept for ties, and
entirely when `time_col` is None), optionally k-core filtered, and their ids remapped to contiguous 1..n in order
of first appearance. The original ids are kept in `data.item_vocab` and `data.user_vocab` (seqrec.data.vocab:
integers when every id is a canonical integer, else strings). `build_from_rows` does the same for rows given in
memory (e.g. DataFrame columns).
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Hashable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from seqrec.data.dataset import InteractionData, ItemAttributes
from seqrec.data.vocab import Vocabulary
from seqrec.errors import DataError

TABLE_FORMATS = ("inter", "csv", "tsv", "parquet")

INT64_MAX = 2**63 - 1
"""Largest id a file may hold (ids are int64)."""
S3REC_DENSE_LIMIT = 1_000_000
"""S3-Rec item ids up to this are always kept as they are (n_items = the largest id, gaps included)."""
S3REC_SPARSE_RATIO = 10
"""Beyond S3REC_DENSE_LIMIT, S3-Rec item ids are remapped to 1..n when the largest id is more than this many times
the number of distinct items (more than 90% of the embedding rows would be unused)."""
MISSING_MARKERS = frozenset({"nan", "-nan", "+nan", "none", "null", "na", "n/a", "#n/a", "<na>"})
"""Id values (compared in lower case) that are how tools write a missing value (pandas, R, Spark, str(None)):
a user or item id written so is an error, like an empty one."""


# ----------------------------------------------------------------------------------------------------------------
# shared helpers


def _read_text(path: str | Path) -> tuple[Path, str]:
    """Read a whole text file as UTF-8; missing, unreadable, non-UTF-8 and empty files are DataErrors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        text = path.read_bytes().decode("utf-8-sig")   # -sig: a byte-order mark is not part of the header
    except UnicodeDecodeError as e:
        # locate the bad byte as a line number, which is what a person can look up in an editor
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty; expected interactions")
    return path, text


def _is_positive_int(token: str) -> bool:
    """True for a decimal integer >= 1 written with ASCII digits only ('+3', '1_0', '٣' and '0' are rejected)."""
    return token.isascii() and token.isdigit() and token.strip("0") != ""


def _bad_id(path: Path, line: int, token: str, what: str) -> DataError:
    """The DataError for a token that is not a valid id: says whether it is not an integer or < 1."""
    try:
        value = int(token)
    except ValueError:
        return DataError(f"{path}: line {line}: {what} {token!r} is not an integer; expected a positive integer id")
    if value < 1:
        return DataError(f"{path}: line {line}: {what} {token!r} is < 1; ids start at 1 (0 is padding)")
    if value > INT64_MAX and _is_positive_int(token):
        return DataError(f"{path}: line {line}: {what} {token!r} is larger than {INT64_MAX} (2**63 - 1); "
                         f"expected a 64-bit id")
    return DataError(f"{path}: line {line}: {what} {token!r} is not a plain decimal integer; "
                     f"expected ASCII digits only")


def _csr_offsets(lengths: np.ndarray) -> np.ndarray:
    """Offsets [len + 1] of a CSR array whose rows have these lengths."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


# ----------------------------------------------------------------------------------------------------------------
# S3-Rec text files


def read_s3rec(path: str | Path, attributes_path: str | Path | None = None) -> InteractionData:
    """Read an S3-Rec text file: one user per line, `user_id item_1 ... item_n`, items in chronological order.

    path: the `<Name>.txt` file. Ids are 1-based integers separated by whitespace; they are kept as they are
        (`n_items` is the largest item id; `user_ids` are the ids of the lines, in file order), except sparse
        item ids (see the module docstring), which are remapped to 1..n with the originals in `data.item_vocab`.
    attributes_path: optional `<Name>_item2attributes.json` ({"item id": [attribute ids]}), read with
        `read_attributes`; None for no attributes.
    Returns an InteractionData named after the file stem with `source` = the path.
    Raises DataError for a missing or empty file, a non-integer, < 1 or > 2**63 - 1 id, a user id given on two
    lines, or a line with a user but no items.
    """
    path, text = _read_text(path)
    lines = text.split("\n")
    tokens: list[str] = []
    users: list[str] = []
    lengths: list[int] = []
    line_numbers: list[int] = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 1:
            raise DataError(f"{path}: line {number}: user {parts[0]} has no items; expected 'user item item ...'")
        users.append(parts[0])
        tokens.extend(parts[1:])
        lengths.append(len(parts) - 1)
        line_numbers.append(number)

    lengths_np = np.asarray(lengths, dtype=np.int64)
    items = _parse_item_tokens(path, tokens, lengths_np, line_numbers, lines)
    user_ids = _parse_user_tokens(path, users, line_numbers)
    _check_unique_users(path, user_ids, line_numbers)

    n_items = int(items.max())
    item_vocab = Vocabulary.identity(n_items)
    remapped = False
    if n_items > S3REC_DENSE_LIMIT:
        distinct = np.unique(items)
        if n_items > S3REC_SPARSE_RATIO * len(distinct):
            # sparse raw ids (e.g. 1e9): an embedding row per id up to the largest cannot be allocated; remap
            # them to 1..n in increasing order of the original id, keeping the originals (as raw tables do)
            items = np.searchsorted(distinct, items) + 1
            item_vocab, remapped = Vocabulary(distinct), True
    attributes = (read_attributes(attributes_path, len(item_vocab), item_vocab if remapped else None)
                  if attributes_path is not None else None)
    return InteractionData(path.stem, items, _csr_offsets(lengths_np), item_vocab, Vocabulary(user_ids, "user"),
                           attributes, str(path))


def _parse_item_tokens(path: Path, tokens: list[str], lengths: np.ndarray, line_numbers: list[int],
                       lines: list[str]) -> np.ndarray:
    """Convert all item tokens at once (fast path); on any invalid token find and report the first one."""
    joined = "".join(tokens)
    if joined.isascii() and joined.isdigit():
        try:
            items = np.fromiter(map(int, tokens), dtype=np.int64, count=len(tokens))
        except OverflowError:       # an id beyond int64, found below
            items = None
        if items is not None and items.min() >= 1:
            return items
    # slow path, only taken for a broken file: walk the lines again to name the line and the token
    for number in line_numbers:
        for token in lines[number - 1].split()[1:]:
            if not _is_positive_int(token) or int(token) > INT64_MAX:
                raise _bad_id(path, number, token, "item id")
    raise AssertionError("unreachable: an invalid item token was detected but not found")


def _parse_user_tokens(path: Path, users: list[str], line_numbers: list[int]) -> np.ndarray:
    """User id of every line as int64, or a DataError naming the first invalid one."""
    for token, number in zip(users, line_numbers):
        if not _is_positive_int(token) or int(token) > INT64_MAX:
            raise _bad_id(path, number, token, "user id")
    return np.fromiter(map(int, users), dtype=np.int64, count=len(users))


def _check_unique_users(path: Path, user_ids: np.ndarray, line_numbers: list[int]) -> None:
    """A user on two lines is an error (the file would have two sequences for one user): name both lines."""
    order = np.argsort(user_ids, kind="stable")
    same = np.flatnonzero(user_ids[order][1:] == user_ids[order][:-1])
    if len(same):
        # of all duplicated pairs, report the one whose second line comes first in the file
        second = order[same + 1]
        k = int(np.argmin(second))
        first_row, second_row = int(order[same[k]]), int(second[k])
        raise DataError(f"{path}: line {line_numbers[second_row]}: user {user_ids[second_row]} already has a line "
                        f"(line {line_numbers[first_row]}); expected one line per user")


# ----------------------------------------------------------------------------------------------------------------
# item attributes


def read_attributes(path: str | Path, n_items: int, item_vocab: Vocabulary | None = None) -> ItemAttributes:
    """Read an item attribute JSON file: one object mapping item id (string) -> list of int attribute ids (>= 1).

    path: the JSON file (e.g. `Beauty_item2attributes.json`).
    n_items: largest item id of the interaction data; the result has rows 0..n_items + 1 (rows 0, padding, and
        n_items + 1, a [MASK] token, are empty; so is every item the file does not mention).
    item_vocab: for remapped data (raw tables), the item vocabulary; keys are original ids translated through
        it, and keys it does not contain (items filtered out or never interacted with) are ignored. None: keys
        are the item ids themselves and a key > n_items is an error (the file belongs to other data).
    The key "0" is ignored (0 is padding; ML-1M's file has it). Repeated attributes of one item are kept once
    (attributes are multi-hot), in first-seen order. `n_attributes` is the largest attribute id.
    """
    path, text = _read_text(path)
    try:
        table = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: not valid JSON ({e.msg}); expected an object "
                        f"{{\"item id\": [attribute ids]}}") from None
    if not isinstance(table, dict):
        raise DataError(f"{path}: top level is a JSON {type(table).__name__}; expected an object "
                        f"{{\"item id\": [attribute ids]}}")
    rows: dict[int, list[int]] = {}
    translated = None if item_vocab is None else item_vocab.lookup(list(table))[0]     # 0: not in the data
    for number, (key, values) in enumerate(table.items()):
        item = _attribute_row(path, key, n_items) if translated is None else int(translated[number]) or None
        if item is None:
            continue
        if not isinstance(values, list) or not all(type(v) is int and v >= 1 for v in values):
            raise DataError(f"{path}: key {key!r}: value {_short(values)} is not a list of integer attribute ids "
                            f">= 1")
        rows[item] = list(dict.fromkeys(values))
    counts = np.zeros(n_items + 2, dtype=np.int64)
    for item, values in rows.items():
        counts[item] = len(values)
    ids = [v for item in sorted(rows) for v in rows[item]]
    ids_np = np.asarray(ids, dtype=np.int64)
    return ItemAttributes(_csr_offsets(counts), ids_np, int(ids_np.max()) if len(ids_np) else 0)


def _attribute_row(path: Path, key: str, n_items: int) -> int | None:
    """Row of an attribute-file key of data whose ids are the file's, or None for the key "0" (padding)."""
    if key == "0":
        return None
    if not _is_positive_int(key):
        raise DataError(f"{path}: key {key!r} is not an item id; expected a positive integer as a string")
    item = int(key)
    if item > n_items:
        raise DataError(f"{path}: key {key!r} is larger than the largest item id {n_items} of the interactions; "
                        f"is this the attribute file of another dataset?")
    return item


def _short(value, limit: int = 40) -> str:
    """repr() cut to `limit` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------------------------
# raw tables: .inter, csv, tsv, parquet


def read_inter(path: str | Path, user_col: str = "user_id", item_col: str = "item_id",
               time_col: str | None = "timestamp", k_core: int = 0) -> InteractionData:
    """Read a RecBole atomic `.inter` file: tab-separated, header fields `name:type` (e.g. `user_id:token`).

    path: the `.inter` file.
    user_col, item_col, time_col: column names, matched against the part of each header field before ':'
        (or the whole field); time_col None keeps the file order within each user.
    k_core: iteratively drop users and items with fewer than k_core interactions (0 = off).
    Returns grouped, sorted, remapped data (see the module docstring for `item_vocab` / `user_vocab`).
    """
    return read_table(path, "inter", user_col, item_col, time_col, k_core)


def read_table(path: str | Path, fmt: str, user_col: str = "user_id", item_col: str = "item_id",
               time_col: str | None = "timestamp", k_core: int = 0) -> InteractionData:
    """Read a table with one interaction per row and turn it into per-user chronological sequences.

    path: the file. fmt: 'inter' (RecBole atomic), 'csv' (comma-separated, first row is the header),
        'tsv' (tab-separated, first row is the header) or 'parquet' (needs pandas + pyarrow).
    user_col, item_col: names of the user and item columns (ids may be any strings / integers).
    time_col: name of the timestamp column (numbers, or ISO 8601 date-times in text files); rows of a user are
        stably sorted by it. None: keep the file order.
    k_core: iteratively drop users and items with fewer than k_core interactions until none is left (0 = off).
    Returns grouped, sorted, k-core filtered data with ids remapped to 1..n in order of first appearance in the
    file (see the module docstring for `item_vocab` / `user_vocab`); name = file stem, source = path; `times` = each
    interaction's timestamp as float64 (POSIX seconds for date-times), None when time_col is None.
    """
    if fmt not in TABLE_FORMATS:
        raise DataError(f"{path}: unknown table format {fmt!r}; valid formats: {', '.join(TABLE_FORMATS)}")
    if fmt == "parquet":
        users, items, times = _read_parquet_columns(Path(path), user_col, item_col, time_col)
    else:
        users, items, times = _read_text_columns(path, fmt, user_col, item_col, time_col)
    return build_from_rows(users, items, times, k_core, name=Path(path).stem, source=str(path))


def _read_text_columns(path: str | Path, fmt: str, user_col: str, item_col: str, time_col: str | None):
    """(users, items, times or None) from a csv / tsv / inter file, every row validated."""
    path, text = _read_text(path)
    # newline="" as the csv module asks: line_num then counts physical lines, quoted newlines included
    stream = io.StringIO(text, newline="")
    if fmt == "csv":
        reader = csv.reader(stream)
    else:
        # tab-separated files have no quoting convention: a '"' is part of the value
        reader = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        header = next((row for row in reader if any(f.strip() for f in row)), None)
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: malformed {fmt} header ({e})") from None
    if header is None:
        raise DataError(f"{path}: file is empty; expected a header row")
    names = [f.strip() for f in header]
    columns = [_column_index(path, names, user_col, fmt), _column_index(path, names, item_col, fmt)]
    if time_col is not None:
        columns.append(_column_index(path, names, time_col, fmt, is_time=True))
    users, items, time_tokens, lines = [], [], [], []
    try:
        for row in reader:
            if not any(f.strip() for f in row):
                continue   # a blank line holds no interaction
            if len(row) != len(names):
                raise DataError(f"{path}: line {reader.line_num}: {len(row)} fields; expected {len(names)} as in "
                                f"the header ({', '.join(names)})")
            values = [row[c].strip() for c in columns]
            for value, c in zip(values, columns):
                if not value:
                    raise DataError(f"{path}: line {reader.line_num}: column {names[c]!r} is empty; "
                                    f"expected a value")
            for value, c in zip(values[:2], columns):
                if value.lower() in MISSING_MARKERS:
                    raise _missing_id(path, f"line {reader.line_num}", names[c], value)
            users.append(values[0])
            items.append(values[1])
            if time_col is not None:
                time_tokens.append(values[2])
            lines.append(reader.line_num)
    except csv.Error as e:   # e.g. a NUL byte or an over-long field
        raise DataError(f"{path}: line {reader.line_num}: malformed {fmt} row ({e})") from None
    if not users:
        raise DataError(f"{path}: no rows after the header; expected interactions")
    times = None
    if time_col is not None:
        times = _parse_times(path, time_tokens, lines, names[columns[2]], "line")
    return users, items, times


def _missing_id(path: Path, where: str, column: str, value) -> DataError:
    """The DataError for a user / item id written as a missing value ('NaN', 'null', ...)."""
    return DataError(f"{path}: {where}: column {column!r} value {str(value)!r} marks a missing value; expected "
                     f"an id (remove the row or fill in the id)")


def _column_index(path: Path, names: list[str], col: str, fmt: str, is_time: bool = False) -> int:
    """Index of column `col` in the header; for .inter files `name:type` fields also match by name."""
    for i, name in enumerate(names):
        if name == col or (fmt == "inter" and name.split(":", 1)[0] == col):
            return i
    hint = " (or set data.time_col to null to keep the file order)" if is_time else ""
    raise DataError(f"{path}: missing column {col!r}; available columns: {', '.join(names)}{hint}")


def _parse_times(path: Path, tokens: list[str], lines: list[int], column: str, where: str) -> np.ndarray:
    """Timestamps as float64: numbers, or ISO 8601 date-times (as POSIX seconds); must be finite.

    lines: the line (or row) number of each token, for messages; where: 'line' or 'row'.
    """
    try:
        out = np.asarray(tokens, dtype=np.float64)
    except ValueError:
        out = np.empty(len(tokens), dtype=np.float64)
        for i, token in enumerate(tokens):
            out[i] = _parse_time(token)
    bad = np.flatnonzero(~np.isfinite(out))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{path}: {where} {lines[i]}: column {column!r} value {tokens[i]!r} is not a timestamp; "
                        f"expected a finite number or an ISO 8601 date-time")
    return out


def _parse_time(token: str) -> float:
    """One timestamp: a number or an ISO 8601 date-time; NaN when it is neither (reported by the caller).
    A date-time without a time zone is read as UTC (as pandas reads naive Parquet datetimes), not in the machine's
    local zone, so that the same data gives the same times, and temporal-split cuts, on every machine."""
    try:
        return float(token)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(token)
    except ValueError:
        return float("nan")
    return (t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)).timestamp()


def _read_parquet_columns(path: Path, user_col: str, item_col: str, time_col: str | None):
    """(users, items, times or None) from a Parquet file via pandas + pyarrow."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        import pandas as pd  # optional dependency: only Parquet needs it
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pandas and pyarrow: pip install seqrec[parquet]") from None
    try:
        frame = pd.read_parquet(path)
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow: pip install seqrec[parquet]") from None
    except Exception as e:  # pyarrow raises several types for a corrupt file; all mean the same to the user
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    from seqrec.data.frames import frame_columns   # here: frames imports this module
    return frame_columns(frame, user_col, item_col, time_col, where=str(path))


def k_core_filter(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the interactions kept by an iterative k-core filter.

    users, items: integer codes (>= 0) of each interaction's user and item.
    k: minimum number of interactions (repeats count) a user and an item must keep; rows of users or items below
        it are dropped, which can push others below it, so this repeats until nothing changes. k <= 1 keeps all.
    """
    keep = np.ones(len(users), dtype=bool)
    if k <= 1 or len(users) == 0:
        return keep
    while True:
        user_count = np.bincount(users[keep], minlength=int(users.max()) + 1)
        item_count = np.bincount(items[keep], minlength=int(items.max()) + 1)
        new_keep = keep & (user_count[users] >= k) & (item_count[items] >= k)
        if np.array_equal(new_keep, keep):
            return keep
        keep = new_keep


def _factorize(values: Sequence[Hashable]) -> tuple[np.ndarray, list]:
    """(codes 0..k-1 in order of first appearance, the distinct values in that order)."""
    index: dict = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)


def build_from_rows(users: Sequence[Hashable], items: Sequence[Hashable], times: np.ndarray | None = None,
                    k_core: int = 0, name: str = "events", source: str = "") -> InteractionData:
    """Interaction data from one row per interaction (the columns of an event log, already validated).

    users, items: original ids (str or int) of each row's user and item.
    times: float64 timestamp of each row; each user's rows are stably sorted by it (ties keep the row order).
        None: keep the row order.
    k_core: iteratively drop users and items with fewer than k_core interactions (0 = off).
    name, source: the data's name and where it came from (for messages).
    Returns data with ids remapped to 1..n in order of first appearance and the originals in `item_vocab` /
    `user_vocab` (integers when every id is a canonical integer, else strings).
    """
    if len(users) != len(items) or (times is not None and len(times) != len(users)):
        raise ValueError("build_from_rows: users, items and times must have the same length")
    times = None if times is None else np.asarray(times, dtype=np.float64)
    user_codes, user_values = _factorize(users)
    item_codes, item_values = _factorize(items)
    keep = k_core_filter(user_codes, item_codes, k_core)
    if not keep.any():
        raise DataError(f"{source or name}: no interaction is left after the {k_core}-core filter "
                        f"({len(users)} rows read); lower data.k_core")
    if not keep.all():
        # remap among the survivors, still in order of first appearance in the file
        rows = np.flatnonzero(keep)
        user_codes, user_values = _factorize([users[r] for r in rows])
        item_codes, item_values = _factorize([items[r] for r in rows])
        times = times[rows] if times is not None else None
    if times is None:
        order = np.argsort(user_codes, kind="stable")
    else:
        order = np.lexsort((times, user_codes))   # lexsort is stable: equal timestamps keep the file order
    lengths = np.bincount(user_codes, minlength=len(user_values))
    item_vocab = Vocabulary.from_values(item_values, "item")
    user_vocab = Vocabulary.from_values(user_values, "user")
    return InteractionData(name, item_codes[order] + 1, _csr_offsets(lengths), item_vocab, user_vocab, None,
                           source, times=None if times is None else times[order])
