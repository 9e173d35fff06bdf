"""Batch inference: the top-k items of many users of a dataset, as a table of original ids (user, item, rank,
score), computed in blocks of users and streamed to a file.

    rec = Recommender.from_checkpoint("runs/x/best.pt")
    data = load_dataset(config.data)                       # the data the model was trained on
    recommend_users(rec, data, users=["u7", "u1"], k=10)   # pandas DataFrame, users in the order given
    write_recommendations(rec, data, "recs.parquet", k=100) # every user, written chunk by chunk, atomically

A user's input is their whole history in the data, i.e. all their interactions (training, validation and test
items alike): the model reads its last history_len items, and exclude_seen removes every item of the whole
history, not only of the window. Rows: k per user, rank 1 = best; fewer when exclude_seen leaves fewer than k
items. Ties: the lower internal item id first (seqrec.eval.topk).

Speed and memory: users are taken `block_users` at a time in the order asked; inside a block they are scored in
batches of `batch_size` in order of history length (a batch is padded only to its own longest window: Beauty's
mean history is 9 items of a 50-item window), and the results are put back in the order asked. The item scores
of a batch are computed rec.item_chunk items at a time (0 = all at once; seqrec.eval.topk.topk_chunked), so
memory is O(batch_size x item_chunk + block_users x k), whatever the number of users and items.
"""
from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from seqrec.data.dataset import InteractionData
from seqrec.data.vocab import Vocabulary
from seqrec.errors import SeqrecError
from seqrec.utils import atomic_replace

COLUMNS = ("user", "item", "rank", "score")
FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
BATCH_USERS = 512
"""Users scored at a time by default (Beauty, one thread: 128 to 1024 are within 15% of each other, 512 the
fastest; memory at a 1M-item catalogue: batch x item_chunk x 4 bytes = 128 MB with item_chunk 65536)."""
BLOCK_USERS = 16384
"""Users per block: the unit of length sorting, of the results held in memory (block x k) and of file writes."""
ITEM_CHUNK = 65536
"""Items scored at a time by the command (`--item-chunk`): one chunk for catalogues up to 65,535 items."""


# -- inputs -----------------------------------------------------------------------------------------------------

def output_format(path: str | Path) -> str:
    """The output format from the file's suffix (.parquet, .csv, .jsonl); a SeqrecError for any other, and for
    .parquet without pyarrow, so that a bad --out fails before any work."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise SeqrecError(f"--out {path}: unknown output format {suffix or '(no suffix)'!r}; expected a file name "
                          f"ending in {', '.join(FORMATS)}")
    if FORMATS[suffix] == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise SeqrecError(f"--out {path}: writing Parquet needs pyarrow (pip install 'seqrec[parquet]'); "
                              f"or write .csv or .jsonl") from None
    return FORMATS[suffix]


def check_output(out: str | Path, overwrite: bool = False) -> str:
    """The format of the output file `out` (output_format); a SeqrecError when it exists (and not overwrite) or
    is a folder. Checked before any work."""
    out = Path(out)
    fmt = output_format(out)
    if out.is_dir():
        raise SeqrecError(f"--out {out}: is a folder; expected a file name ending in {', '.join(FORMATS)}")
    if out.exists() and not overwrite:
        raise SeqrecError(f"--out {out}: the file exists; pass --overwrite to replace it")
    return fmt


def load_batch_inputs(checkpoint: str | Path, users: str) -> tuple:
    """(Recommender, the data it was trained on, user rows) for `seqrec recommend CKPT --users all|FILE`.
    The data: the interactions stored in the checkpoint (SeqRec.save), else those its config names (data section
    as trained: same file, format, columns and k-core). users: 'all' or a file for read_user_file."""
    from seqrec.serve.recommender import Recommender
    from seqrec.train.checkpoint import checkpoint_data, load_checkpoint
    rec = Recommender.from_checkpoint(checkpoint)
    ckpt = load_checkpoint(checkpoint)      # again, for the interactions SeqRec.save stores beside the model
    data = checkpoint_data(ckpt, checkpoint)
    rows = user_rows(data, None) if users == "all" else read_user_file(users, data.user_vocab)
    return rec, data, rows


def read_user_file(path: str | Path, user_vocab: Vocabulary) -> np.ndarray:
    """User rows (0-based) of the original user ids in a text file, one id per line (surrounding whitespace
    ignored, blank lines skipped), in file order, repeats kept. An unknown id is a SeqrecError naming it and its
    line; an empty file is one too."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SeqrecError(f"--users {path}: file not found; expected 'all' or a file of user ids, one per line") \
            from None
    except (OSError, UnicodeDecodeError) as e:
        raise SeqrecError(f"--users {path}: cannot read it ({e})") from None
    numbered = [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise SeqrecError(f"--users {path}: no user ids in the file; expected one original user id per line")
    internal, known = user_vocab.lookup([t for _, t in numbered])
    if not known.all():
        first = int(np.argmin(known))
        number, token = numbered[first]
        more = f" (and {int((~known).sum()) - 1} more unknown)" if (~known).sum() > 1 else ""
        raise SeqrecError(f"{path}: line {number}: unknown user id {token!r}{more}; not one of the "
                          f"{len(user_vocab):,} users of the data")
    return internal - 1


def user_rows(data: InteractionData, users: Sequence | None) -> np.ndarray:
    """Rows (0-based) of `users` (original ids, in order; None: every user of the data, in data order)."""
    if users is None:
        return np.arange(data.n_users, dtype=np.int64)
    return data.user_vocab.encode(users, source="users") - 1


def check_same_items(rec, data: InteractionData) -> None:
    """The data's items must be the model's (the same original ids in the same internal order), or a history
    would be read as other items. Only the items: the users and their histories may differ from training (e.g.
    today's histories for a model trained last week)."""
    if rec.item_vocab is not data.item_vocab and rec.item_vocab != data.item_vocab:
        raise SeqrecError(f"{data.name}: the data's {data.n_items:,} items are not the model's "
                          f"({len(rec.item_vocab):,} items; other ids or another order): was the data file changed "
                          f"since training?")


# -- computing --------------------------------------------------------------------------------------------------

def check_options(k: int, batch_size: int, block_users: int = BLOCK_USERS) -> None:
    for name, value in (("k", k), ("batch_size", batch_size), ("block_users", block_users)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise SeqrecError(f"{name}: expected a positive integer, got {value!r}")


def iter_recommendations(rec, data: InteractionData, rows: np.ndarray, k: int, exclude_seen: bool = True,
                         batch_size: int = BATCH_USERS, block_users: int = BLOCK_USERS,
                         progress: Callable[[int], None] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The recommendations of the users at `rows` (0-based rows of data), one dict of columns (COLUMNS, original
    ids) per block of block_users users, users in the order of `rows`. progress(n) is called after every batch
    with the number of users done so far."""
    check_options(k, batch_size, block_users)
    check_same_items(rec, data)
    k = min(int(k), rec.n_items)
    history_len = rec.history_len
    starts_all, lengths_all = data.offsets[:-1], data.lengths
    done = 0
    for lo in range(0, len(rows), block_users):
        block = rows[lo: lo + block_users]
        starts, lengths = starts_all[block], lengths_all[block]
        order = np.argsort(np.minimum(lengths, history_len), kind="stable")
        ids = scores = None
        for b in range(0, len(block), batch_size):
            pick = order[b: b + batch_size]
            i, s = rec._topk_internal(data.items, starts[pick], lengths[pick], k, exclude_seen)
            if ids is None:
                ids = np.zeros((len(block), i.shape[1]), dtype=np.int64)
                scores = np.empty((len(block), i.shape[1]), dtype=np.float32)
            ids[pick], scores[pick] = i, s
            done += len(pick)
            if progress is not None:
                progress(done)
        kept = scores != -np.inf                # excluded items (and item 0), only where fewer than k are left
        per_user = kept.sum(1)
        yield {"user": data.user_vocab.originals[np.repeat(block, per_user)],
               "item": rec.item_vocab.decode(ids[kept]),
               "rank": np.broadcast_to(np.arange(1, ids.shape[1] + 1, dtype=np.int64), ids.shape)[kept],
               "score": scores[kept]}


def recommend_users(rec, data: InteractionData, users: Sequence | None = None, k: int = 10,
                    exclude_seen: bool = True, batch_size: int = BATCH_USERS):
    """Top-k items for users of `data` (original ids, in the order given; None: every user) from each user's whole
    history, as a pandas DataFrame with columns user, item, rank (1 = best), score; original ids. exclude_seen:
    no item of the user's history is recommended. An unknown user is a SeqrecError naming it."""
    import pandas as pd
    rows = user_rows(data, users)
    parts = list(iter_recommendations(rec, data, rows, k, exclude_seen, batch_size))
    if not parts:
        return pd.DataFrame({c: pd.Series([], dtype=d) for c, d in
                             zip(COLUMNS, (data.user_ids.dtype, rec.item_vocab.originals.dtype,
                                           np.int64, np.float32))})
    return pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in COLUMNS})


# -- writing ----------------------------------------------------------------------------------------------------

class ParquetChunks:
    """One row group per block (pyarrow.parquet.ParquetWriter): user and item int64 or string, rank int64,
    score float32."""

    def __init__(self, path: Path, user_vocab: Vocabulary, item_vocab: Vocabulary):
        import pyarrow as pa
        import pyarrow.parquet as pq
        self.pa = pa
        self.schema = pa.schema([("user", pa.string() if user_vocab.is_str else pa.int64()),
                                 ("item", pa.string() if item_vocab.is_str else pa.int64()),
                                 ("rank", pa.int64()), ("score", pa.float32())])
        self.writer = pq.ParquetWriter(path, self.schema)

    def write(self, cols: dict[str, np.ndarray]) -> None:
        arrays = [self.pa.array(cols[name], type=self.schema.field(name).type) for name in COLUMNS]
        self.writer.write_table(self.pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


def score_text(scores: np.ndarray) -> list[str]:
    """The shortest decimal text of each float32 score that reads back as the same float32."""
    return scores.astype(str).tolist()


TEXT_ROWS = 65536
"""Rows turned into text at a time by the CSV and JSONL writers (a block's rows as Python strings at once would
take ~250 bytes each: 400 MB for 16,384 users x 100)."""


def row_slices(cols: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    n = len(cols["rank"])
    for lo in range(0, n, TEXT_ROWS):
        yield {c: v[lo: lo + TEXT_ROWS] for c, v in cols.items()}


class CsvChunks:
    """A header line `user,item,rank,score`, then one line per row (csv module quoting: ids with commas or quotes
    are quoted)."""

    def __init__(self, path: Path, user_vocab: Vocabulary, item_vocab: Vocabulary):
        self.file = open(path, "w", encoding="utf-8", newline="")
        self.writer = csv.writer(self.file, lineterminator="\n")
        self.writer.writerow(COLUMNS)

    def write(self, cols: dict[str, np.ndarray]) -> None:
        for part in row_slices(cols):
            self.writer.writerows(zip(part["user"].tolist(), part["item"].tolist(), part["rank"].tolist(),
                                      score_text(part["score"])))

    def close(self) -> None:
        self.file.close()


class JsonlChunks:
    """One JSON object per line: {"user": ..., "item": ..., "rank": r, "score": s}; ids as JSON numbers when
    the vocabulary's ids are integers, else strings."""

    def __init__(self, path: Path, user_vocab: Vocabulary, item_vocab: Vocabulary):
        self.file = open(path, "w", encoding="utf-8")

    @staticmethod
    def _json(values: np.ndarray) -> list[str]:
        return list(map(json.dumps, values.tolist())) if values.dtype == object else values.astype(str).tolist()

    def write(self, cols: dict[str, np.ndarray]) -> None:
        for part in row_slices(cols):
            self.file.write("".join(f'{{"user": {u}, "item": {i}, "rank": {r}, "score": {s}}}\n' for u, i, r, s in
                                    zip(self._json(part["user"]), self._json(part["item"]), part["rank"].tolist(),
                                        score_text(part["score"]))))

    def close(self) -> None:
        self.file.close()


WRITERS = {"parquet": ParquetChunks, "csv": CsvChunks, "jsonl": JsonlChunks}


class ProgressBar:
    """`users [#####-----] done/total  s` on one stderr line, redrawn at most 5 times a second; on a stream that
    is not a terminal (a log) only the final line is written."""

    def __init__(self, total: int, label: str = "users", stream=None):
        self.total, self.label = total, label
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = self._last = time.perf_counter()

    def _line(self, done: int) -> str:
        fill = int(20 * done / max(self.total, 1))
        return (f"{self.label} [{'#' * fill}{'-' * (20 - fill)}] {done:,}/{self.total:,} "
                f"{time.perf_counter() - self.t0:.1f} s")

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if self.tty and (now - self._last >= 0.2 or done == self.total):
            self._last = now
            self.stream.write("\r" + self._line(done))
            self.stream.flush()

    def close(self, done: int) -> None:
        self.stream.write(("\r" if self.tty else "") + self._line(done) + "\n")
        self.stream.flush()


def write_recommendations(rec, data: InteractionData, out: str | Path, users: Sequence | np.ndarray | None = None,
                          k: int = 10, exclude_seen: bool = True, batch_size: int = BATCH_USERS, overwrite: bool = False,
                          progress: bool = True, rows: np.ndarray | None = None,
                          block_users: int = BLOCK_USERS) -> int:
    """Write the top-k items of users of `data` (original ids; None: every user; or their 0-based `rows`) to
    `out` (.parquet, .csv or .jsonl: the format is the suffix's), one block of users at a time, through a
    temporary file renamed to `out` at the end: `out` is never a half file, and is left as it was on an error.
    An existing `out` is an error unless overwrite. progress: a progress bar on stderr. block_users: users per
    block (iter_recommendations; one Parquet row group each). Returns the rows written."""
    out = Path(out)
    fmt = check_output(out, overwrite)
    check_options(k, batch_size, block_users)
    if rows is None:
        rows = user_rows(data, users)
    bar = ProgressBar(len(rows)) if progress else None
    written = 0
    with atomic_replace(out) as tmp:
        writer = WRITERS[fmt](tmp, data.user_vocab, rec.item_vocab)
        try:
            for cols in iter_recommendations(rec, data, rows, k, exclude_seen, batch_size, block_users, bar):
                writer.write(cols)
                written += len(cols["rank"])
        finally:
            writer.close()
    if bar is not None:
        bar.close(len(rows))
    return written
