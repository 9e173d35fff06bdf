"""ONNX export (seqrec.serve.export): the exported graph, run by onnxruntime, gives PyTorch's top-k on random
histories of several batch sizes and lengths (the dynamic axes really are dynamic), with and without exclusion;
its metadata; the CLI's errors. Tiny random models (no trained weights needed: export fidelity only)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from seqrec.data.batch import history_batch  # noqa: E402
from seqrec.errors import SeqrecError  # noqa: E402
from seqrec.eval.topk import topk_chunked  # noqa: E402
from seqrec.serve.export import (OUTPUTS, ScoringGraph, _session, export_onnx_model, graph_inputs,  # noqa: E402
                                 topk_agreement, verify_onnx)

N_ITEMS = 50
MODELS = {   # name[+variant] -> config overrides of a tiny model (max_len 8: BERT4Rec's history_len is 7)
    "sasrec": ["model.heads=2", "model.layers=2"],
    "sasrec+ligr": ["model.heads=2", "model.layers=2", "model.norm_first=true", "model.gated=true",
                    "model.activation=swiglu", "model.final_norm=true"],
    "bert4rec": ["model.heads=2", "model.layers=2"],
    "gru4rec": ["model.layers=2"],
    "mqsa_ted": ["model.heads=2", "model.window=3"],
    "emkd": ["model.heads=2", "model.layers=1", "model.inner=32", "model.n_networks=2", "model.use_attr=false"],
}


def tiny_model(name: str):
    from seqrec.config import load_config
    from seqrec.models import DatasetInfo, build_model
    cfg = load_config(None, [f"model.name={name.split('+')[0]}", "model.d=16", "model.max_len=8",
                             f"data.synthetic_items={N_ITEMS}", *MODELS[name]])
    torch.manual_seed(0)
    return build_model(cfg.model, DatasetInfo(N_ITEMS)).eval()


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request):
    model = tiny_model(request.param)
    proto = export_onnx_model(model, k=20)
    return model, proto, _session(proto.SerializeToString(), threads=1)


def random_histories(rng, rows: int, longest: int):
    lengths = rng.integers(1, longest + 1, size=rows)
    lengths[0] = longest                      # the batch is as wide as its longest row
    flat = rng.integers(1, N_ITEMS + 1, size=int(lengths.sum()))
    return flat, np.cumsum(lengths) - lengths, lengths


@pytest.mark.parametrize("rows,longest", [(1, 1), (3, 4), (9, 7), (4, 12), (64, 20)])
@pytest.mark.parametrize("exclude_history", [False, True])
def test_onnxruntime_topk_equals_pytorch(exported, rows, longest, exclude_history):
    """onnxruntime's top-20 = the PyTorch serving path's (seqrec.eval.topk over model.score_query/score_items),
    item for item, scores within 1e-5, for batch sizes 1..64 and histories shorter and longer than the window."""
    model, _, session = exported
    rng = np.random.default_rng(rows * 100 + longest)
    flat, starts, lengths = random_histories(rng, rows, longest)
    feed = graph_inputs(flat, starts, lengths, model.history_len, exclude_history)
    ids, scores = session.run(list(OUTPUTS), feed)
    assert ids.shape == scores.shape == (rows, 20) and ids.dtype == np.int64 and scores.dtype == np.float32
    ref_v, ref_i = topk_chunked(model, history_batch(flat, starts, lengths, model.history_len), 20, 0,
                                (flat, starts, lengths) if exclude_history else None)
    np.testing.assert_array_equal(ids, ref_i.numpy())
    finite = np.isfinite(ref_v.numpy())
    np.testing.assert_array_equal(np.isfinite(scores), finite)
    np.testing.assert_allclose(scores[finite], ref_v.numpy()[finite], rtol=1e-5, atol=1e-5)
    if exclude_history:                       # no item of the history among the (finite) recommendations
        for r in range(rows):
            seen = set(flat[starts[r]: starts[r] + lengths[r]].tolist())
            assert not seen & set(ids[r][np.isfinite(scores[r])].tolist())


def test_metadata(exported):
    model, proto, session = exported
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["seqrec.model"] == model.name
    assert int(meta["seqrec.n_items"]) == N_ITEMS
    assert int(meta["seqrec.history_len"]) == model.history_len
    assert int(meta["seqrec.k"]) == 20
    assert json.loads(meta["seqrec.inputs"]) == [i.name for i in session.get_inputs()] == ["items", "exclude"]
    assert json.loads(meta["seqrec.outputs"]) == [o.name for o in session.get_outputs()]
    # the batch and length axes are symbolic in the graph, not numbers
    batch, length = session.get_inputs()[0].shape
    assert isinstance(batch, str) and isinstance(length, str)


def test_k_is_capped_at_the_catalogue_and_checked():
    model = tiny_model("gru4rec")
    proto = export_onnx_model(model, k=1000)
    assert {p.key: p.value for p in proto.metadata_props}["seqrec.k"] == str(N_ITEMS)
    ids, scores = _session(proto.SerializeToString()).run(list(OUTPUTS), {
        "items": np.array([[3, 4]]), "exclude": np.array([[0]])})
    assert sorted(ids[0].tolist()) == list(range(1, N_ITEMS + 1))        # every item once, padding never
    assert np.all(np.diff(scores[0]) <= 0)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(SeqrecError, match="-k: expected a positive integer"):
            export_onnx_model(model, k=bad)


def test_verification_catches_a_wrong_graph(exported):
    """verify_onnx passes the exported graph and refuses it for a model with other weights (a graph that does not
    compute the model's scores)."""
    import copy
    model, proto, _ = exported
    verify_onnx(ScoringGraph(model, 20), proto)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    with pytest.raises(SeqrecError, match="disagrees with PyTorch"):
        verify_onnx(ScoringGraph(other, 20), proto)


def test_exporter_failure_is_one_line(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::frobnicate\nlong traceback text")
    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(SeqrecError) as e:
        export_onnx_model(tiny_model("sasrec"), k=5)
    assert "cannot export sasrec to ONNX" in str(e.value) and "\n" not in str(e.value)


def test_topk_agreement_hand_case():
    """A hand-made case: items 2 and 3 tie (within tolerance), so either order is a correct top-2; item 1 in
    place of 3 is not."""
    ref = np.array([[-np.inf, 1.0, 5.0, 5.0 + 1e-7, -np.inf]] * 3)
    ids = np.array([[3, 2], [2, 3], [2, 1]])
    scores = np.array([[5.0, 5.0], [5.0, 5.0], [5.0, 1.0]])
    rep = topk_agreement(ref, ids, scores, reference_ids=np.array([[3, 2]] * 3))
    assert rep == {"rows": 3, "wrong_rows": 1, "max_abs_score_diff": pytest.approx(1e-7), "max_rank_gap": 4.0,
                   "identical_rows": 1}


# --- the command line --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A checkpoint written as the trainer writes one (untrained weights), of data whose item ids are strings
    ('i0'.. 'i49', first seen first: internal id n is 'i{n - 1}'), so that original ids are really translated."""
    from seqrec.config import load_config
    from seqrec.data.dataset import InteractionData
    from seqrec.models import DatasetInfo, build_model
    from seqrec.train.checkpoint import info_to_plain, save_checkpoint
    rng = np.random.default_rng(0)
    items = [f"i{j}" for j in range(N_ITEMS)] + [f"i{j}" for j in rng.integers(0, N_ITEMS, size=400)]
    users = [f"u{j % 40}" for j in range(len(items))]
    data = InteractionData.from_events(users, items, name="events")
    cfg = load_config(None, ["model.d=16", "model.layers=1", "model.heads=1", "model.max_len=8"])
    info = DatasetInfo(data.n_items)
    torch.manual_seed(0)
    model = build_model(cfg.model, info)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "dataset": info_to_plain(info, data)})
    return path


def run_cli(*argv):
    from seqrec.cli import main
    return main([str(a) for a in argv])


def test_cli_export_writes_a_checked_file(checkpoint, tmp_path, capsys):
    out = tmp_path / "sub" / "model.onnx"
    old = os.umask(0o022)
    try:
        assert run_cli("export", checkpoint, "--format", "onnx", "--out", out, "-k", 7) == 0
    finally:
        os.umask(old)
    assert "wrote" in capsys.readouterr().out
    assert out.stat().st_mode & 0o777 == 0o644                    # the umask's mode, not mkstemp's 0600
    assert [p.name for p in out.parent.iterdir()] == ["model.onnx"]   # no temporary file left behind
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["seqrec.k"] == "7" and meta["seqrec.model"] == "sasrec"
    assert json.loads(meta["seqrec.item_vocabulary"]) == {"ids": [f"i{j}" for j in range(N_ITEMS)]}
    assert meta["seqrec.dataset"] == "events"
    # an existing file is kept unless --overwrite
    assert run_cli("export", checkpoint, "--out", out) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["--format", "tflite"], "--format: 'tflite' is not supported; expected one of: onnx"),
    (["-k", "0"], "-k: expected a positive integer"),
])
def test_cli_export_errors(checkpoint, tmp_path, capsys, argv, needle):
    out = tmp_path / "m.onnx"
    assert run_cli("export", checkpoint, "--out", out, *argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_cli_export_bad_paths(checkpoint, tmp_path, capsys):
    assert run_cli("export", tmp_path / "missing.pt", "--out", tmp_path / "m.onnx") == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert run_cli("export", checkpoint, "--out", tmp_path) == 2
    assert "is a folder" in capsys.readouterr().err


# --- the onnxruntime backend -------------------------------------------------------------------------------
def test_onnx_recommender_equals_recommender(checkpoint, tmp_path):
    """OnnxRecommender (from the exported file, and exported in memory from the checkpoint) gives the PyTorch
    Recommender's recommendations: same items in the same order, scores within 1e-5, with and without exclusion,
    in original ids."""
    from seqrec.serve import Recommender
    from seqrec.serve.export import OnnxRecommender, export_checkpoint
    out = tmp_path / "m.onnx"
    export_checkpoint(checkpoint, out, k=30)
    ref = Recommender.from_checkpoint(checkpoint)
    rng = np.random.default_rng(1)
    histories = [[f"i{j}" for j in rng.integers(0, N_ITEMS, size=n)] for n in (1, 3, 8, 20)]
    for rec in (OnnxRecommender.from_file(out, threads=1), OnnxRecommender.from_checkpoint(checkpoint, k=30)):
        assert rec.n_items == ref.n_items and rec.item_vocab == ref.item_vocab and rec.k == 30
        for k, exclude in ((10, False), (30, True), (1, True)):
            got = rec.recommend_batch(histories, k, exclude)
            want = ref.recommend_batch(histories, k, exclude)
            assert [[i for i, _ in row] for row in got] == [[i for i, _ in row] for row in want]
            np.testing.assert_allclose([s for row in got for _, s in row], [s for row in want for _, s in row],
                                       rtol=1e-5, atol=1e-5)
        assert rec.recommend(histories[1], 5) == rec.recommend_batch([histories[1]], 5)[0]
        assert all(isinstance(i, str) for i, _ in rec.recommend(histories[1], 5))
        with pytest.raises(SeqrecError, match="unknown item id 'nope'"):
            rec.recommend(["i1", "nope"], 5)
        with pytest.raises(SeqrecError, match="at most 30 items"):
            rec.recommend(histories[0], 31)


def test_onnx_recommender_bad_files(tmp_path):
    from seqrec.serve.export import OnnxRecommender
    with pytest.raises(SeqrecError, match="ONNX file not found"):
        OnnxRecommender.from_file(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(SeqrecError, match="not a readable ONNX model"):
        OnnxRecommender.from_file(junk)
    # a valid ONNX model without seqrec's metadata
    import onnx
    from onnx import helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    with pytest.raises(SeqrecError, match="not a seqrec ONNX export"):
        OnnxRecommender.from_file(foreign)


def test_readme_onnxruntime_snippet(checkpoint, tmp_path, capsys):
    """The README's onnxruntime-only example runs on an exported file and gives OnnxRecommender's answer."""
    import re
    from pathlib import Path

    from seqrec.serve.export import OnnxRecommender, export_checkpoint
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## ONNX export"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = tmp_path / "sasrec.onnx"
    export_checkpoint(checkpoint, out, k=20)
    scope: dict = {}
    exec(code.replace('"sasrec.onnx"', repr(str(out))), scope)
    printed = capsys.readouterr().out
    want = OnnxRecommender.from_file(out).recommend(scope["history"], 10, exclude_history=True)
    assert [i for i, _ in want] == [scope["originals"][i - 1] for i in scope["top_ids"][0, :10]]
    assert repr(want[0][0]) in printed


@pytest.mark.parametrize("originals", [None, [1004, 7, 1001], ["b7", "a3", "c1"]])
def test_vocabulary_json_round_trip(originals):
    from seqrec.data.vocab import Vocabulary
    from seqrec.serve.export import vocabulary_from_json, vocabulary_to_json
    vocab = Vocabulary.identity(4) if originals is None else Vocabulary.from_values(originals)
    text = vocabulary_to_json(vocab)
    assert json.loads(text) == ({"identity": 4} if originals is None else {"ids": originals})
    back = vocabulary_from_json(text)
    assert back == vocab and back.decode(np.array([1, 3])).tolist() == vocab.decode(np.array([1, 3])).tolist()
