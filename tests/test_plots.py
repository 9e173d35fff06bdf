"""`seqrec plot` and `seqrec results --chart`: files written (non-empty PNG), the right number of subplots and
series (read from the returned matplotlib Figure), one-line errors for bad run folders and a missing matplotlib."""
from __future__ import annotations

import builtins
import json

import pytest

pytest.importorskip("matplotlib")

from seqrec.cli import main  # noqa: E402
from seqrec.errors import SeqrecError  # noqa: E402
from seqrec.plots import results_chart, training_curves  # noqa: E402
from seqrec.results import load_results  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(folder, epochs: int, terms=("loss", "ce"), metrics=("HR@10", "NDCG@10"), eval_every: int = 1):
    """A run folder with a metrics.jsonl like the trainer's: loss terms every epoch, validation every eval_every."""
    folder.mkdir(parents=True)
    lines = []
    for e in range(1, epochs + 1):
        record = {"epoch": e, "train": {t: 5.0 - 0.1 * e for t in terms}, "train_seconds": 1.0}
        if e % eval_every == 0:
            record["valid"] = {m: 0.01 * e for m in metrics}
        lines.append(json.dumps(record))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_training_curves_one_subplot_per_quantity_one_line_per_run(tmp_path):
    a = write_run(tmp_path / "a", epochs=4)
    b = write_run(tmp_path / "b", epochs=6, terms=("loss", "ce", "cl"), eval_every=2)
    fig = training_curves([a, b])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["train loss", "train ce", "train cl", "valid HR@10", "valid NDCG@10"]
    lines = {ax.get_title(): ax.get_lines() for ax in fig.axes}
    assert [len(lines[t]) for t in titles] == [2, 2, 1, 2, 2]     # 'cl' only in run b
    assert [line.get_label() for line in lines["train loss"]] == ["a", "b"]
    assert list(lines["valid HR@10"][1].get_xdata()) == [2, 4, 6]  # validated every 2 epochs
    assert list(lines["valid HR@10"][1].get_ydata()) == pytest.approx([0.02, 0.04, 0.06])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a", "b"]


def test_plot_command_writes_png(tmp_path, capsys):
    runs = [write_run(tmp_path / f"run{i}", epochs=3) for i in range(3)]
    out = tmp_path / "curves.png"
    assert main(["plot", *map(str, runs), "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
    assert f"wrote {out}" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("curves")] == ["curves.png"]   # no temp left


def test_runs_with_the_same_folder_name_are_told_apart(tmp_path):
    a = write_run(tmp_path / "x" / "run", epochs=2)
    b = write_run(tmp_path / "y" / "run", epochs=2)
    labels = [line.get_label() for line in training_curves([a, b]).axes[0].get_lines()]
    assert labels == [str(a), str(b)]


@pytest.mark.parametrize("setup, match", [
    (lambda d: None, r"not a folder"),
    (lambda d: d.mkdir(), r"metrics\.jsonl: not found"),
    (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text('{"epoch": 1, "train": {}}\n{"epoch": 2,\n')),
     r"metrics\.jsonl:2: invalid JSON"),
    (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text('{"train": {}}\n')),
     r"metrics\.jsonl:1: expected a JSON object with an integer 'epoch'"),
    (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text("\n")), r"no epochs recorded yet"),
])
def test_bad_run_dir_is_one_line_error(tmp_path, capsys, setup, match):
    bad = tmp_path / "bad"
    setup(bad)
    good = write_run(tmp_path / "good", epochs=2)
    out = tmp_path / "c.png"
    rc = main(["plot", str(good), str(bad), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("seqrec: error: ")
    with pytest.raises(SeqrecError, match=match):
        training_curves([good, bad])
    assert not out.exists()


def test_unknown_image_format_is_refused(tmp_path, capsys):
    run = write_run(tmp_path / "r", epochs=2)
    assert main(["plot", str(run), "--out", str(tmp_path / "c.txt")]) == 2
    assert "unknown image format '.txt'" in capsys.readouterr().err


def accuracy_result(method: str, dataset: str, ndcg: float, hr: float) -> dict:
    return {"method": method, "dataset": dataset, "protocol": {"split": "leave-one-out", "exclude": "none"},
            "metrics": {"valid": {}, "test": {"NDCG@10": ndcg, "HR@10": hr}}}


def test_results_chart_one_series_per_dataset_one_bar_per_result(tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    files = {"sasrec_beauty": accuracy_result("sasrec", "Beauty", 0.04, 0.08),
             "bert4rec_beauty": accuracy_result("bert4rec", "Beauty", 0.03, 0.06),
             "mclrec_yelp": accuracy_result("mclrec", "Yelp", 0.02, 0.04),
             "speed": {"kind": "speed", "summary": {"x": 1.0}}}       # no test metrics: not drawn
    for name, r in files.items():
        (folder / f"{name}.json").write_text(json.dumps(r))
    fig = results_chart(load_results(folder))
    assert [ax.get_title() for ax in fig.axes] == ["test NDCG@10", "test HR@10"]
    for ax, metric in zip(fig.axes, ("NDCG@10", "HR@10")):
        assert [c.get_label() for c in ax.containers] == ["Beauty", "Yelp"]          # one series per dataset
        assert [len(c) for c in ax.containers] == [2, 1]
        widths = sorted(bar.get_width() for c in ax.containers for bar in c)
        assert widths == pytest.approx(sorted(r["metrics"]["test"][metric] for r in list(files.values())[:3]))
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert sorted(labels) == ["bert4rec: bert4rec_beauty [none]", "mclrec: mclrec_yelp [none]",
                              "sasrec: sasrec_beauty [none]"]
    chart = tmp_path / "chart.png"
    assert main(["results", "--results", str(folder), "--out", str(tmp_path / "R.md"), "--chart", str(chart)]) == 0
    assert chart.read_bytes().startswith(PNG_MAGIC) and (tmp_path / "R.md").is_file()


def test_missing_matplotlib_names_the_extra(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    run = write_run(tmp_path / "r", epochs=2)
    rc = main(["plot", str(run), "--out", str(tmp_path / "c.png")])
    err = capsys.readouterr().err
    assert rc == 2 and err == "seqrec: error: plotting needs matplotlib: pip install 'seqrec[plot]'\n"
    assert not (tmp_path / "c.png").exists()
