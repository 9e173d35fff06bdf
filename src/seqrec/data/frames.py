"""Interaction tables held as pandas DataFrames (the Python API's input; polars frames arrive converted).

`frame_columns` checks the user / item / timestamp columns of a frame the way the text readers check a CSV file's
(a missing column names the available ones; an empty, NaN or 'null' id is an error naming the row; timestamps are
numbers, datetimes or ISO 8601 text), and `read_frame` turns them into an InteractionData with the readers' own
`build_from_rows` (stable per-user timestamp order, k-core filter, id vocabularies), so that a frame and a CSV file
of the same rows give the same data.
"""
from __future__ import annotations

import numpy as np

from seqrec.data.dataset import InteractionData
from seqrec.data.readers import MISSING_MARKERS, _missing_id, _parse_times, build_from_rows
from seqrec.errors import DataError


def frame_columns(frame, user_col: str, item_col: str, time_col: str | None, where: str):
    """(users, items, times or None) of a pandas DataFrame, every row validated.

    user_col, item_col: the id columns (str or int ids). time_col: the timestamp column (numbers, datetimes, or
    ISO 8601 strings), None for none. where: what the frame is, for messages (a path, or 'DataFrame').
    Rows are named by their 1-based position. Raises DataError for an empty frame, a missing or repeated column,
    a missing id (NaN / None, empty text, or a marker such as 'NaN' or 'null') or timestamp, a bad timestamp.
    """
    import pandas as pd
    if len(frame) == 0:
        raise DataError(f"{where}: has no rows; expected interactions")
    names = [str(c) for c in frame.columns]
    for col in [user_col, item_col] + ([time_col] if time_col is not None else []):
        if col not in frame.columns:
            hint = " (or set data.time_col to null to keep the file order)" if col == time_col else ""
            raise DataError(f"{where}: missing column {col!r}; available columns: {', '.join(names)}{hint}")
        if names.count(str(col)) > 1:
            raise DataError(f"{where}: column {col!r} occurs {names.count(str(col))} times; expected one")
        missing = frame[col].isna().to_numpy()
        if missing.any():
            raise DataError(f"{where}: row {int(np.flatnonzero(missing)[0]) + 1}: column {col!r} is empty; "
                            f"expected a value")
        if col != time_col and not pd.api.types.is_numeric_dtype(frame[col]):
            text = frame[col].astype(str).str.strip()
            empty = (text == "").to_numpy()
            if empty.any():
                raise DataError(f"{where}: row {int(np.flatnonzero(empty)[0]) + 1}: column {col!r} is empty; "
                                f"expected a value")
            marked = text.str.lower().isin(MISSING_MARKERS).to_numpy()
            if marked.any():
                row = int(np.flatnonzero(marked)[0])
                raise _missing_id(where, f"row {row + 1}", col, frame[col].iloc[row])
    times = None
    if time_col is not None:
        column = frame[time_col]
        if pd.api.types.is_datetime64_any_dtype(column):
            # via UTC and a Timedelta: independent of the column's unit (ns, us, ms) and time zone
            utc = pd.to_datetime(column, utc=True)
            times = ((utc - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)
        else:
            tokens = column.tolist() if pd.api.types.is_numeric_dtype(column) else [str(v) for v in column]
            times = _parse_times(where, tokens, list(range(1, len(frame) + 1)), time_col, "row")
    return frame[user_col].tolist(), frame[item_col].tolist(), times


def read_frame(frame, user_col: str = "user_id", item_col: str = "item_id", time_col: str | None = "timestamp",
               k_core: int = 0, name: str = "DataFrame") -> InteractionData:
    """InteractionData from a pandas DataFrame with one interaction per row, exactly as from a table file with
    the same rows (see `frame_columns` and `seqrec.data.readers.build_from_rows`); named `name`."""
    users, items, times = frame_columns(frame, user_col, item_col, time_col, where=name)
    return build_from_rows(users, items, times, k_core, name=name, source=name)
