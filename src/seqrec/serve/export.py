"""Export a trained model's scoring graph to ONNX, and recommend from the exported file with onnxruntime.

    seqrec export runs/x/best.pt --format onnx --out model.onnx -k 100
    rec = OnnxRecommender.from_file("model.onnx")     # the Recommender interface, no torch model needed
    rec.recommend([12, 7, 93], k=10)

The graph (`ScoringGraph`) is the whole of serving's numeric part: encode the histories, score every item, remove
the excluded items, keep the best k.

    inputs   items     int64 [batch, length]     the last <= history_len internal item ids of each history, oldest
                                                 first, right-padded with 0 (length may be anything 1..history_len)
             exclude   int64 [batch, n_exclude]  internal item ids scored -inf (the whole history for
                                                 exclude_history; 0 = nothing, e.g. a [batch, 1] array of zeros)
    outputs  item_ids  int64 [batch, k]          internal ids, best first; among equal scores the lower id first
             scores    float32 [batch, k]        their scores (-inf only when fewer than k items are left)

`batch`, `length` and `n_exclude` are dynamic axes; k is fixed at export (`-k`, at most n_items): a caller takes
the first k' <= k columns. What the graph needs to be used without seqrec is in the model's metadata_props
(`seqrec.*` keys, METADATA_KEYS below), including the item vocabulary (the original id of each internal id 1..n;
the identity for checkpoints from before vocabularies).

The graph is exported with torch.onnx.export's dynamo exporter (torch.export, then onnxscript) and checked with
onnxruntime against PyTorch on random histories of several batch sizes and lengths before the file is written. The
TorchScript-based exporter (dynamo=False) is not used: it traces shapes as constants, and for every model here its
graph gave wrong scores as soon as the batch or the history length differed from the traced example.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seqrec.data.batch import Batch, pad_slices
from seqrec.errors import SeqrecError
from seqrec.serve.recommender import Recommender
from seqrec.utils import atomic_write_bytes

FORMATS = ("onnx",)
INPUTS = ("items", "exclude")
OUTPUTS = ("item_ids", "scores")
FORMAT_VERSION = "1"
METADATA_KEYS = {
    "seqrec.format_version": "version of this graph's interface (inputs, outputs, metadata): " + FORMAT_VERSION,
    "seqrec.model": "model name (sasrec, bert4rec, ...)",
    "seqrec.n_items": "internal item ids are 1..n_items (0 = padding)",
    "seqrec.history_len": "the most recent items the model reads: the longest `items` row",
    "seqrec.k": "columns of item_ids / scores",
    "seqrec.item_vocabulary": "JSON: {'identity': n} when original id i is internal id i, else {'ids': [original "
                              "id of internal id 1, 2, ...]} (ints or strings)",
    "seqrec.dataset": "name of the training data",
    "seqrec.fingerprint": "JSON: the training data's fingerprint (counts + item vocabulary hash), when recorded",
    "seqrec.inputs": "JSON list of the input names",
    "seqrec.outputs": "JSON list of the output names",
    "seqrec.exporter": "how the graph was made (torch.onnx dynamo exporter and torch version)",
}
PROTOBUF_LIMIT = 2 ** 31 - 1          # one ONNX file (without external data) must serialise below 2 GiB


class ScoringGraph(nn.Module):
    """(items [B, T], exclude [B, E]) -> (item_ids [B, k], scores [B, k]): top-k of model.score over all items.

    The lengths are derived from the padding (item ids are >= 1 and rows right-padded), so the graph has one
    history input. model.score gives the padding column 0 -inf; the excluded ids are set to -inf by a scatter
    (id 0 in `exclude` is a no-op). torch.topk exports to ONNX TopK, whose sorted output takes the lower index
    first among equal values: the order of seqrec.eval.topk."""

    def __init__(self, model, k: int):
        super().__init__()
        self.model = model
        self.k = k

    def forward(self, items: torch.Tensor, exclude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = (items != 0).sum(1)
        scores = self.model.score(Batch(items, lengths)).float()
        scores = scores.scatter(1, exclude, float("-inf"))
        values, ids = torch.topk(scores, self.k, dim=1)
        return ids, values


def graph_inputs(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, history_len: int,
                 exclude_history: bool) -> dict[str, np.ndarray]:
    """The graph's inputs for histories given as (flat internal ids, starts, lengths), like history_batch."""
    items, _ = pad_slices(flat, starts, lengths, keep_last=history_len)
    if exclude_history:
        exclude, _ = pad_slices(flat, starts, lengths)           # the whole history, not only the window
    else:
        exclude = np.zeros((len(lengths), 1), dtype=np.int64)
    return {"items": items, "exclude": exclude}


# --- export ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's warnings and log lines (deprecations, 'torchvision is not installed', axis renaming) say
    nothing about the user's model; errors still raise."""
    logs = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [log.level for log in logs]
    for log in logs:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(logs, levels):
            log.setLevel(level)


def _example_inputs(n_items: int, history_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Example inputs for torch.export: batch 2 and length 2 (0 and 1 would be specialised), one row padded."""
    t = min(2, history_len)
    items = torch.zeros(2, t, dtype=torch.long)
    items[0, :t] = torch.arange(1, t + 1).clamp(max=n_items)
    items[1, 0] = n_items
    return items, items.clone()


def export_onnx_model(model, k: int = 100, metadata: dict[str, str] | None = None):
    """The onnx.ModelProto of model's ScoringGraph with k = min(k, model.n_items) columns, dynamic batch, length
    and exclusion axes, metadata_props from METADATA_KEYS (+ `metadata`), checked against PyTorch with
    onnxruntime (verify_onnx). Raises SeqrecError when the model cannot be exported or the graph disagrees."""
    _check_k(k)
    require_onnx()
    model = model.eval()
    n_items, history_len = int(model.n_items), int(model.history_len)
    graph = ScoringGraph(model, int(min(k, n_items))).eval()
    batch = torch.export.Dim("batch", min=1)
    # a one-item window has nothing dynamic in its length
    length = torch.export.Dim("length", min=1, max=history_len) if history_len > 1 else None
    shapes = {"items": {0: batch, 1: length} if length is not None else {0: batch},
              "exclude": {0: batch, 1: torch.export.Dim("n_exclude", min=1)}}
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(graph, _example_inputs(n_items, history_len), dynamo=True,
                                        input_names=list(INPUTS), output_names=list(OUTPUTS),
                                        dynamic_shapes=shapes, verbose=False)
    except Exception as e:    # noqa: BLE001 - any exporter failure is reported as what it is, in one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SeqrecError(f"cannot export {model.name} to ONNX with torch.onnx.export (dynamo): "
                          f"{type(e).__name__}: {first}") from None
    proto = program.model_proto
    meta = {"seqrec.format_version": FORMAT_VERSION, "seqrec.model": model.name, "seqrec.n_items": str(n_items),
            "seqrec.history_len": str(history_len), "seqrec.k": str(graph.k),
            "seqrec.inputs": json.dumps(list(INPUTS)), "seqrec.outputs": json.dumps(list(OUTPUTS)),
            "seqrec.exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}", **(metadata or {})}
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (f"seqrec {model.name} scoring graph: items int64 [batch, length <= {history_len}] "
                        f"(right-padded, 0 = padding) and exclude int64 [batch, n] -> top-{graph.k} item_ids int64 "
                        f"and scores float32 [batch, {graph.k}]")
    verify_onnx(graph, proto)
    return proto


def verify_onnx(graph: ScoringGraph, proto, seed: int = 0) -> None:
    """Run the exported graph with onnxruntime and PyTorch on random histories (batch 1 and 5, lengths 1 to
    history_len, with and without exclusion, an exclusion list longer than the window) and raise SeqrecError
    unless every row's top-k is a correct top-k of PyTorch's scores (equal up to ties, topk_agreement)."""
    session = _session(proto.SerializeToString(), threads=1)
    model = graph.model
    n, h = int(model.n_items), int(model.history_len)
    rng = np.random.default_rng(seed)
    for rows, exclude_history in ((1, False), (5, True), (5, False)):
        lengths = rng.integers(1, h + 3, size=rows)
        lengths[0] = 1 if rows == 1 else h + 2            # a one-item history, and one longer than the window
        flat = rng.integers(1, n + 1, size=int(lengths.sum()))
        starts = np.cumsum(lengths) - lengths
        feed = graph_inputs(flat, starts, lengths, h, exclude_history)
        ids, scores = session.run(list(OUTPUTS), feed)
        with torch.no_grad():
            items = torch.from_numpy(feed["items"])
            full = model.score(Batch(items, (items != 0).sum(1))).float()
            full = full.scatter(1, torch.from_numpy(feed["exclude"]), float("-inf")).numpy()
        report = topk_agreement(full, ids, scores)
        if report["wrong_rows"]:
            raise SeqrecError(f"the ONNX graph of {model.name} disagrees with PyTorch on {report['wrong_rows']} of "
                              f"{rows} test histories (max score difference {report['max_abs_score_diff']:.3g}); "
                              f"export refused")


def topk_agreement(reference_scores: np.ndarray, ids: np.ndarray, scores: np.ndarray,
                   reference_ids: np.ndarray | None = None, rtol: float = 1e-4) -> dict:
    """How well a top-k (ids, scores [B, k]) matches the reference full score rows [B, n_items + 1] (excluded
    items -inf):

    * max_abs_score_diff: max over the returned items of |score - reference score of the same item| (finite ones);
    * max_rank_gap: max over positions j of |reference score of the j-th returned item - the reference's j-th best
      score| (0 when the order is the reference's; else how far from a tie the reordered items were);
    * wrong_rows: rows that are not a correct top-k of the reference within tolerance: their items' reference
      scores must equal the reference's k best scores, position by position, within tol = rtol x max(1, |best|)
      (so two items whose scores tie within tol may come in either order or either may be cut), the returned
      scores must be within tol of the reference scores, and a row must not repeat an item;
    * identical_rows (when reference_ids is given): rows whose id list equals reference_ids' exactly."""
    ids = np.asarray(ids)
    scores = np.asarray(scores, dtype=np.float64)
    ref = np.asarray(reference_scores, dtype=np.float64)
    k = ids.shape[1]
    at_ids = np.take_along_axis(ref, ids, axis=1)
    best = -np.sort(-ref, axis=1)[:, :k]
    if best.shape[1] < k:                           # k beyond the catalogue: the rest is -inf padding
        best = np.pad(best, ((0, 0), (0, k - best.shape[1])), constant_values=-np.inf)
    tol = rtol * np.maximum(1.0, np.abs(best[:, :1]))
    both_finite = np.isfinite(at_ids) & np.isfinite(scores)
    with np.errstate(invalid="ignore"):            # -inf - -inf: an excluded item on both sides, no difference
        score_diff = np.where(both_finite, np.abs(scores - at_ids), 0.0)
        rank_diff = np.where(np.isfinite(at_ids) & np.isfinite(best), np.abs(at_ids - best), 0.0)
    score_diff = np.where(np.isfinite(at_ids) == np.isfinite(scores), score_diff, np.inf)
    rank_diff = np.where(np.isfinite(at_ids) == np.isfinite(best), rank_diff, np.inf)
    repeats = np.array([len(set(row)) < k for row in ids.tolist()])
    wrong = (score_diff > tol).any(1) | (rank_diff > tol).any(1) | repeats
    out = {"rows": int(len(ids)), "wrong_rows": int(wrong.sum()),
           "max_abs_score_diff": float(np.where(both_finite, score_diff, 0.0).max()) if ids.size else 0.0,
           "max_rank_gap": float(np.where(np.isfinite(rank_diff), rank_diff, 0.0).max()) if ids.size else 0.0}
    if reference_ids is not None:
        out["identical_rows"] = int((np.asarray(reference_ids) == ids).all(1).sum())
    return out


def export_checkpoint(checkpoint, out, fmt: str = "onnx", k: int = 100, overwrite: bool = False) -> dict[str, str]:
    """Export a trained checkpoint's scoring graph to `out` (written atomically, with the mode a new file gets
    under the umask; an existing file only with overwrite). Returns the metadata written. The format, k, `out` and
    the ONNX packages are checked before the checkpoint is read and the (seconds-long) export runs."""
    if fmt not in FORMATS:
        raise SeqrecError(f"--format: {fmt!r} is not supported; expected one of: {', '.join(FORMATS)}")
    _check_k(k)
    out = Path(out)
    _check_writable(out)
    if out.exists() and not overwrite:
        raise SeqrecError(f"--out {out}: the file exists; pass --overwrite to replace it")
    proto = checkpoint_graph(checkpoint, k)
    data = proto.SerializeToString()
    if len(data) > PROTOBUF_LIMIT:
        raise SeqrecError(f"{checkpoint}: the ONNX graph is {len(data) / 2 ** 30:.1f} GiB, over the 2 GiB limit of "
                          f"one ONNX file; not written")
    atomic_write_bytes(out, data)
    return {p.key: p.value for p in proto.metadata_props}


def checkpoint_graph(checkpoint, k: int = 100):
    """The checked onnx.ModelProto of a checkpoint's model (export_onnx_model), with the data's name, item
    vocabulary and fingerprint in its metadata."""
    _check_k(k)
    require_onnx()
    from seqrec.train.checkpoint import model_from_checkpoint, trained_on
    model, _, ckpt = model_from_checkpoint(checkpoint)
    data = trained_on(ckpt, checkpoint)      # a checkpoint from before vocabularies: the identity vocabulary
    meta = {"seqrec.dataset": data.name, "seqrec.item_vocabulary": vocabulary_to_json(data.item_vocab)}
    if data.fingerprint is not None:
        meta["seqrec.fingerprint"] = json.dumps(data.fingerprint)
    return export_onnx_model(model, k, meta)


def _check_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SeqrecError(f"-k: expected a positive integer, got {k!r}")


def _check_writable(out: Path) -> None:
    if out.is_dir():
        raise SeqrecError(f"--out {out}: is a folder; expected a file name such as {out / 'model.onnx'}")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SeqrecError(f"--out {out}: cannot create the folder {parent} ({e.strerror or type(e).__name__})") \
            from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SeqrecError(f"--out {out}: the folder {parent} is not writable")


def require_onnx() -> None:
    """A one-line error when the optional ONNX packages are missing."""
    import importlib.util
    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise SeqrecError(f"ONNX export and the onnxruntime backend need {', '.join(missing)}: "
                          f"pip install 'seqrec[onnx]'")


def vocabulary_to_json(vocab) -> str:
    """A Vocabulary as JSON that needs no seqrec to read: {"identity": n} when original id i is internal id i,
    else {"ids": [original id of internal id 1, 2, ...]} (all ints or all strings). vocabulary_from_json reads it."""
    if vocab.is_identity:
        return json.dumps({"identity": len(vocab)})
    return json.dumps({"ids": vocab.originals.tolist()})


def vocabulary_from_json(text: str):
    from seqrec.data.vocab import Vocabulary
    plain = json.loads(text)
    if "identity" in plain:
        return Vocabulary.identity(int(plain["identity"]))
    ids = plain["ids"]
    is_str = bool(ids) and isinstance(ids[0], str)
    return Vocabulary(np.asarray(ids, dtype=object if is_str else np.int64))


# --- onnxruntime backend ---------------------------------------------------------------------------------------
def _session(model: bytes | str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session; threads: intra-op threads (None: onnxruntime's default, one per core)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


class OnnxRecommender(Recommender):
    """The Recommender interface (original ids in and out: recommend, recommend_batch, encode_histories) with the
    scoring done by an exported graph in onnxruntime; no torch model is built or run.

        rec = OnnxRecommender.from_file("model.onnx", threads=1)
        rec = OnnxRecommender.from_checkpoint("runs/x/best.pt", k=100)   # exported in memory (seconds)

    Only `_topk_internal` differs from Recommender. k is at most the graph's (`self.k`, fixed at export)."""

    def __init__(self, session, metadata: dict[str, str]):
        missing = [key for key in ("seqrec.model", "seqrec.n_items", "seqrec.history_len", "seqrec.k")
                   if key not in metadata]
        if missing:
            raise SeqrecError(f"not a seqrec ONNX export: metadata {', '.join(missing)} missing (export it with "
                              f"seqrec export CKPT --format onnx)")
        if metadata.get("seqrec.format_version", FORMAT_VERSION) != FORMAT_VERSION:
            raise SeqrecError(f"seqrec ONNX interface version {metadata['seqrec.format_version']}; this seqrec reads "
                              f"version {FORMAT_VERSION}: export the checkpoint again")
        self.session = session
        self.metadata = dict(metadata)
        self.model = None                       # Recommender's attributes, without a torch model
        self.name = metadata["seqrec.model"]
        self.n_items = int(metadata["seqrec.n_items"])
        self.history_len = int(metadata["seqrec.history_len"])
        self.k = int(metadata["seqrec.k"])
        vocab = metadata.get("seqrec.item_vocabulary")
        from seqrec.data.vocab import Vocabulary
        self.item_vocab = vocabulary_from_json(vocab) if vocab else Vocabulary.identity(self.n_items)
        if len(self.item_vocab) != self.n_items:
            raise SeqrecError(f"seqrec ONNX export: item vocabulary of {len(self.item_vocab)} ids for a model of "
                              f"{self.n_items} items; the file is inconsistent")
        self.user_vocab = None
        fingerprint = metadata.get("seqrec.fingerprint")
        self.fingerprint = json.loads(fingerprint) if fingerprint else None
        self.config = None
        self.item_chunk = 0                     # the graph scores all items at once

    @classmethod
    def from_file(cls, path, threads: int | None = None) -> "OnnxRecommender":
        """From a file written by `seqrec export`; threads: onnxruntime intra-op threads (None: its default)."""
        require_onnx()
        path = Path(path)
        if not path.is_file():
            raise SeqrecError(f"{path}: ONNX file not found")
        try:
            session = _session(path, threads)
        except Exception as e:     # noqa: BLE001 - onnxruntime raises its own exception types for unreadable files
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SeqrecError(f"{path}: not a readable ONNX model ({first})") from None
        try:
            return cls(session, session.get_modelmeta().custom_metadata_map)
        except SeqrecError as e:
            raise SeqrecError(f"{path}: {e}") from None

    @classmethod
    def from_checkpoint(cls, path, k: int = 100, threads: int | None = None) -> "OnnxRecommender":
        """Export a checkpoint's graph in memory (checked against PyTorch, a few seconds) and serve it."""
        proto = checkpoint_graph(path, k)
        return cls(_session(proto.SerializeToString(), threads), {p.key: p.value for p in proto.metadata_props})

    def _topk_internal(self, flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, k: int,
                       exclude_history: bool) -> tuple[np.ndarray, np.ndarray]:
        if k > self.k and self.k < self.n_items:
            raise SeqrecError(f"k: this ONNX graph returns at most {self.k} items per history (exported with -k "
                              f"{self.k}); expected k <= {self.k}, or export again with a larger -k")
        ids, scores = self.session.run(list(OUTPUTS), graph_inputs(flat, starts, lengths, self.history_len,
                                                                    exclude_history))
        if k > ids.shape[1]:        # k beyond the catalogue: padded to the promised width, as Recommender does
            pad = ((0, 0), (0, k - ids.shape[1]))
            return np.pad(ids, pad), np.pad(scores, pad, constant_values=-np.inf)
        return ids[:, :k], scores[:, :k]
