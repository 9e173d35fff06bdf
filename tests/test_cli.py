"""The command line, in-process through seqrec.cli.main and once through the installed `seqrec` executable:
train -> evaluate -> recommend, data stats / check, and user errors (exit 2, one line, no traceback)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY
from seqrec.cli import main

SETS = [a for s in TINY for a in ("--set", s)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    rc = main(["train", *SETS, "--set", "train.max_epochs=2", "--out", str(out), "--quiet"])
    assert rc == 0
    return out


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_train_writes_outputs(trained):
    for name in ("result.json", "metrics.jsonl", "best.pt", "last.pt"):
        assert (trained / name).is_file(), name
    r = json.loads((trained / "result.json").read_text())
    assert r["epochs_run"] == 2 and r["config"]["data"]["synthetic_users"] == 200
    assert r["command"].startswith("seqrec train")


def test_train_prints_metrics_and_baseline(tmp_path, capsys):
    rc, out, err = run(capsys, "train", *SETS, "--set", "train.max_epochs=1", "--out", tmp_path / "r")
    assert rc == 0
    assert "popularity baseline" in err
    assert "test" in out and "NDCG@10" in out and "result.json" in out


def test_evaluate_json_matches_result(trained, capsys):
    rc, out, err = run(capsys, "evaluate", trained / "best.pt", "--split", "test", "--json")
    assert rc == 0, err
    got = json.loads(out)
    want = json.loads((trained / "result.json").read_text())["metrics"]["test"]
    assert got["split"] == "test" and got["exclude"] == "none" and got["users"] == 200
    assert got["metrics"] == pytest.approx(want, abs=1e-12)
    rc, out, _ = run(capsys, "evaluate", trained / "best.pt", "--split", "valid", "--exclude", "history", "--json")
    assert rc == 0 and json.loads(out)["exclude"] == "history"


def test_recommend_json(trained, capsys):
    rc, out, err = run(capsys, "recommend", trained / "best.pt", "--history", "1 2 3", "-k", "5", "--json")
    assert rc == 0, err
    recs = json.loads(out)
    items = [r["item"] for r in recs]
    scores = [r["score"] for r in recs]
    assert len(items) == 5 == len(set(items))
    assert all(1 <= i <= 60 for i in items)
    assert scores == sorted(scores, reverse=True)
    # the same top 5 as scoring the history with the checkpoint's model directly
    from seqrec.data.batch import history_batch
    from seqrec.train.checkpoint import model_from_checkpoint
    model, _, _ = model_from_checkpoint(trained / "best.pt")
    with torch.no_grad():
        s = model.score(history_batch(np.array([1, 2, 3]), np.array([0]), np.array([3]), model.history_len))[0]
    assert items == torch.topk(s, 5).indices.tolist()
    # --exclude-history leaves the history's items out
    rc, out, _ = run(capsys, "recommend", trained / "best.pt", "--history", "1,2,3", "-k", "59",
                     "--exclude-history", "--json")
    got = [r["item"] for r in json.loads(out)]
    assert rc == 0 and len(got) == 57 and not {1, 2, 3} & set(got)


@pytest.fixture
def small_file(tmp_path):
    p = tmp_path / "tiny.txt"
    p.write_text("1 1 2 3 4\n2 2 3 5\n3 4 4\n")
    return p


def test_data_stats(small_file, capsys):
    rc, out, err = run(capsys, "data", "stats", small_file, "--json")
    assert rc == 0, err
    s = json.loads(out)
    assert (s["users"], s["items"], s["interactions"], s["length_max"], s["short_users"]) == (3, 5, 9, 4, 1)
    assert s["users_with_repeats"] == 1
    rc, out, _ = run(capsys, "data", "stats", small_file)
    assert rc == 0 and "3" in out


def test_data_check(small_file, capsys):
    rc, out, err = run(capsys, "data", "check", small_file)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("note:") and "3 users" in lines[0]
    assert any(line.startswith("warning:") and "1" in line for line in lines)        # the short user


def assert_user_error(rc: int, out: str, err: str, *parts: str) -> None:
    assert rc == 2
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqrec: error:"), err
    for p in parts:
        assert p in lines[0], f"{p!r} not in {lines[0]!r}"


def test_error_missing_config_file(tmp_path, capsys):
    assert_user_error(*run(capsys, "train", "--config", tmp_path / "nope.yaml", "--out", tmp_path / "o"),
                      "nope.yaml", "not found")


def test_error_unknown_key(tmp_path, capsys):
    assert_user_error(*run(capsys, "train", "--set", "train.lrr=0.1", "--out", tmp_path / "o"),
                      "'lrr'", "valid keys", "lr")


def test_error_bad_set(tmp_path, capsys):
    assert_user_error(*run(capsys, "train", "--set", "train.lr", "--out", tmp_path / "o"), "KEY=VALUE")
    assert_user_error(*run(capsys, "train", "--set", "train.lr=-1", "--out", tmp_path / "o"), "train.lr", "-1")


def test_error_bad_history_token(trained, capsys):
    assert_user_error(*run(capsys, "recommend", trained / "best.pt", "--history", "1 x 3"), "'x'", "--history")
    assert_user_error(*run(capsys, "recommend", trained / "best.pt", "--history", "1 999"), "unknown item id '999'",
                      "60 items")


def test_error_missing_checkpoint(tmp_path, capsys):
    assert_user_error(*run(capsys, "evaluate", tmp_path / "nope.pt"), "nope.pt", "not found")
    assert_user_error(*run(capsys, "recommend", tmp_path / "nope.pt", "--history", "1"), "nope.pt")


def test_error_not_a_checkpoint(tmp_path, capsys):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a checkpoint")
    assert_user_error(*run(capsys, "evaluate", bad), "junk.pt")


@pytest.mark.parametrize("cut", [0, 10, -5, "half"])
def test_truncated_checkpoint_is_one_line_error(tmp_path, capsys, cut):
    from seqrec.errors import SeqrecError
    from seqrec.train.checkpoint import load_checkpoint
    whole = tmp_path / "whole.pt"
    torch.save({"model": {"w": torch.ones(50)}, "config": {}, "dataset": {"n_items": 3}}, whole)
    data = whole.read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(data[:len(data) // 2] if cut == "half" else data[:cut])
    with pytest.raises(SeqrecError) as info:
        load_checkpoint(bad)
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg and "not a readable seqrec checkpoint" in msg
    assert_user_error(*run(capsys, "evaluate", bad), "cut.pt", "not a readable")


def test_checkpoint_load_does_not_hide_unrelated_errors(tmp_path, monkeypatch):
    from seqrec.train.checkpoint import load_checkpoint
    ok = tmp_path / "ok.pt"
    torch.save({"x": 1}, ok)

    def out_of_memory(*args, **kwargs):
        raise MemoryError("no memory")
    monkeypatch.setattr(torch, "load", out_of_memory)
    with pytest.raises(MemoryError, match="no memory"):
        load_checkpoint(ok)


def test_executable_exits_2_on_user_error(trained):
    exe = shutil.which("seqrec") or str(Path(sys.executable).parent / "seqrec")
    if not Path(exe).exists():
        pytest.skip("the seqrec executable is not installed")
    p = subprocess.run([exe, "recommend", str(trained / "best.pt"), "--history", "1 2 x"], capture_output=True,
                       text=True, timeout=120)
    assert_user_error(p.returncode, p.stdout, p.stderr, "'x'")


def test_checkpoint_from_before_train_precision_still_loads(trained, tmp_path):
    # checkpoints written before train.precision carry train.amp (bfloat16 autocast, off by default)
    from seqrec.train.checkpoint import model_from_checkpoint
    ckpt = torch.load(trained / "best.pt", weights_only=True)
    for amp, expected in ((False, "fp32"), (True, "bf16")):
        cfg = dict(ckpt["config"])
        train = {k: v for k, v in cfg["train"].items() if k != "precision"}
        cfg["train"] = {**train, "amp": amp}
        old = tmp_path / f"old_{amp}.pt"
        torch.save({**ckpt, "config": cfg}, old)
        model, loaded_cfg, _ = model_from_checkpoint(old)
        assert loaded_cfg.train.precision == expected
        assert all(torch.equal(v, ckpt["model"][k]) for k, v in model.state_dict().items())


def test_train_refuses_a_non_empty_out_unless_resume_or_overwrite(trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = (out / "result.json").read_text()
    assert_user_error(*run(capsys, "train", *SETS, "--set", "train.max_epochs=1", "--out", out, "--quiet"),
                      str(out), "not empty", "--resume", "--overwrite")
    assert (out / "result.json").read_text() == before               # nothing was touched
    assert_user_error(*run(capsys, "train", *SETS, "--set", "train.lr=-1", "--out", out, "--overwrite"), "train.lr")
    assert (out / "result.json").read_text() == before               # a config error comes before any change
    assert run(capsys, "train", *SETS, "--set", "train.max_epochs=1", "--out", out, "--quiet", "--overwrite")[0] == 0
    assert json.loads((out / "result.json").read_text())["epochs_run"] == 1


def test_resume_refuses_a_changed_config_and_names_the_keys(trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    assert_user_error(*run(capsys, "train", *SETS, "--set", "train.max_epochs=3", "--set", "train.lr=0.5",
                           "--set", "train.batch_size=32", "--out", out, "--resume", "--quiet"),
                      "last.pt", "train.lr (0.005 -> 0.5)", "train.batch_size (64 -> 32)", "may change on resume")
    # the number of epochs (and other keys of how long / how a run is watched) may change
    assert run(capsys, "train", *SETS, "--set", "train.max_epochs=3", "--out", out, "--resume", "--quiet")[0] == 0
    assert json.loads((out / "result.json").read_text())["epochs_run"] == 3


def test_resume_refuses_a_new_length_of_a_decaying_schedule(tmp_path, capsys):
    out = tmp_path / "run"
    sched = ["--set", "train.schedule=cosine"]
    assert run(capsys, "train", *SETS, *sched, "--set", "train.max_epochs=1", "--out", out, "--quiet")[0] == 0
    assert_user_error(*run(capsys, "train", *SETS, *sched, "--set", "train.max_epochs=2", "--out", out, "--resume",
                           "--quiet"), "train.max_epochs (1 -> 2)")


def test_unusable_out_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_user_error(*run(capsys, "train", *SETS, "--out", blocker / "run", "--quiet"), str(blocker / "run"),
                      "cannot write")


def test_data_commands_take_data_keys(tmp_path, capsys):
    table = tmp_path / "my.csv"
    table.write_text("user,item,ts\nu1,a,1\nu1,b,2\nu1,c,3\nu2,a,1\nu2,c,2\nu2,b,5\n")
    cols = ["--set", "data.user_col=user", "--set", "data.item_col=item"]
    rc, out, err = run(capsys, "data", "check", table, *cols, "--set", "data.time_col=ts")
    assert rc == 0, err
    assert "2 users, 3 items, 6 interactions" in out and "remapped to 1..3" in out
    rc, out, err = run(capsys, "data", "stats", table, "--format", "csv", *cols, "--set", "data.time_col=null",
                       "--json")
    assert rc == 0, err
    assert (json.loads(out)["users"], json.loads(out)["interactions"]) == (2, 6)
    rc, out, err = run(capsys, "data", "stats", table, *cols, "--set", "data.time_col=ts", "--set", "data.k_core=2",
                       "--json")
    assert rc == 0 and json.loads(out)["interactions"] == 6, err
    assert_user_error(*run(capsys, "data", "check", table, *cols, "--set", "data.time_col=ts", "--set",
                           "data.k_core=3"), "my.csv", "3-core")
    assert_user_error(*run(capsys, "data", "check", table), "my.csv", "missing column 'user_id'", "user, item, ts")


def test_data_commands_on_synthetic(capsys):
    rc, out, err = run(capsys, "data", "check", "synthetic", "--set", "data.synthetic_users=40")
    assert rc == 0, err
    assert out.startswith("note:") and "40 users" in out
    rc, out, err = run(capsys, "data", "stats", "synthetic", "--set", "data.synthetic_items=30", "--json")
    assert rc == 0 and json.loads(out)["max_item_id"] == 30, err


@pytest.mark.parametrize("cmd", ["stats", "check"])
def test_data_commands_reject_other_sections(small_file, capsys, cmd):
    assert_user_error(*run(capsys, "data", cmd, small_file, "--set", "train.lr=0.1"),
                      "'train.lr=0.1'", "data.* keys only")
    assert_user_error(*run(capsys, "data", cmd, small_file, "--set", "data.itemcol=x"), "'itemcol'", "item_col")
    assert_user_error(*run(capsys, "data", cmd, small_file, "--set", "data.k_core=-1"), "data.k_core", "-1")


def test_data_errors_are_one_line(tmp_path, capsys):
    nan = tmp_path / "nan.csv"
    nan.write_text("user_id,item_id,timestamp\n1,2,3\n1,NaN,4\n")
    assert_user_error(*run(capsys, "data", "check", nan), "nan.csv", "line 3", "'item_id'", "'NaN'")
    huge = tmp_path / "huge.txt"
    huge.write_text("1 1 2\n2 3 99999999999999999999\n")
    assert_user_error(*run(capsys, "data", "stats", huge), "huge.txt", "line 2", "'99999999999999999999'")


def test_error_heads_not_dividing_d(tmp_path, capsys):
    assert_user_error(*run(capsys, "train", "--set", "model.heads=3", "--out", tmp_path / "o"),
                      "model.heads: 3 does not divide model.d 64")
    assert not (tmp_path / "o").exists()        # checked before any work starts
