"""Two CPU processes under torchrun (gloo): the trainer's DDP path keeps the ranks' weights and metrics identical,
learns (the loss goes down) and beats both the untrained model and the popularity ranking."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import TINY

SRC = Path(__file__).resolve().parents[1] / "src"

SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys
    import torch
    torch.set_num_threads(1)
    from seqrec.config import load_config
    from seqrec.data.dataset import leave_one_out
    from seqrec.eval.baselines import Popularity
    from seqrec.eval.evaluator import evaluate
    from seqrec.train import Trainer

    out = sys.argv[1]
    overrides = json.loads(sys.argv[2])
    rank = int(os.environ["RANK"])
    # by default each rank names a different folder (as a time-stamped default name may): rank 0's must be used
    run_dir = sys.argv[3] if len(sys.argv) > 3 else os.path.join(out, "run" if rank == 0 else f"run_rank{rank}")
    resume = len(sys.argv) > 4
    cfg = load_config(None, overrides)
    trainer = Trainer(cfg, run_dir, quiet=True, command="ddp test", resume=resume)
    # the dropout / augmentation stream this rank starts training with
    rng = hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()
    assert trainer.dist.enabled and trainer.dist.world_size == 2, trainer.dist
    init = hashlib.sha256(b"".join(v.numpy().tobytes() for _, v in sorted(trainer.model.state_dict().items())))
    untrained = evaluate(trainer.model, trainer.split, "valid")["metrics"]       # this rank alone, all users
    result = trainer.fit()
    h = hashlib.sha256()
    for k, v in sorted(trainer.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    pop = evaluate(Popularity(trainer.split), trainer.split, "valid")["metrics"]
    json.dump({"rank": rank, "init": init.hexdigest(), "rng": rng, "out": str(trainer.out), "checksum": h.hexdigest(),
               "valid": result["metrics"]["valid"], "test": result["metrics"]["test"],
               "losses": [r["train"]["loss"] for r in result["history"]], "untrained": untrained,
               "popularity": pop, "world_size": result["world_size"], "batches_examples": result["train_examples"],
               "users": result["protocol"]["users_evaluated"]},
              open(os.path.join(out, f"rank{rank}.json"), "w"))
""")


def run_two_ranks(tmp_path, overrides: list[str], run_dir: str | None = None, resume: bool = False
                  ) -> tuple[dict, dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(script),
           str(tmp_path), json.dumps(overrides)] + ([run_dir] if run_dir else []) + (["resume"] if resume else [])
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun did not finish in 120 s: {(e.stderr or b'')[-2000:]!r}")
    assert p.returncode == 0, f"torchrun failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return tuple(json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))


def test_ddp_two_processes_gloo(tmp_path):
    r0, r1 = run_two_ranks(tmp_path, TINY + ["train.max_epochs=2", "train.device=cpu", "train.batch_size=32"])
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["init"] == r1["init"]                           # same seed -> same initial weights
    assert r0["rng"] != r1["rng"]                             # ... but each rank its own dropout stream
    assert r0["checksum"] == r1["checksum"]                   # gradients averaged -> identical weights
    assert r0["valid"] == r1["valid"] and r0["test"] == r1["test"]      # sharded evaluation, all-reduced
    assert r0["users"] == 200
    for r in (r0, r1):
        assert r["losses"][1] < r["losses"][0]                # the loss went down on each rank's shard
        assert r["valid"]["NDCG@10"] > r["untrained"]["NDCG@10"] + 0.05
        assert r["valid"]["NDCG@10"] > r["popularity"]["NDCG@10"]
    # rank 0 alone wrote the outputs, into rank 0's folder (rank 1 named another one)
    assert r0["out"] == r1["out"] == str(tmp_path / "run") and not (tmp_path / "run_rank1").exists()
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    assert res["world_size"] == 2 and res["metrics"]["valid"] == r0["valid"]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2


def test_ddp_mclrec_three_step_update_keeps_ranks_identical(tmp_path):
    """MCLRec bypasses DDP's reducer (three backward passes over two parameter subsets per batch) and averages the
    gradients itself; the ranks see different batches, so without that their weights would drift apart."""
    r0, r1 = run_two_ranks(tmp_path, TINY + ["model.name=mclrec", "train.max_epochs=2", "train.device=cpu",
                                             "train.batch_size=32", "train.examples=sequence",
                                             # a plain shuffle: each of a rank's 3 batches is then a per-target mean,
                                             # so its epoch loss is comparable between epochs (bucketed batches
                                             # weigh targets by a fixed expected count, Batch.target_norm: one
                                             # rank's 3 batches then sum to more when it drew long sequences)
                                             "train.bucket=false"])
    assert r0["init"] == r1["init"]
    assert r0["checksum"] == r1["checksum"]
    assert r0["valid"] == r1["valid"]
    for r in (r0, r1):
        assert r["losses"][1] < r["losses"][0]


def test_ddp_exact_resume_restores_every_ranks_stream(tmp_path):
    """Two epochs in one go equal one epoch, then a resumed second one: each rank gets back its own RNG state."""
    base = TINY + ["train.device=cpu", "train.batch_size=32", "model.name=bert4rec", "model.attn_dropout=0.1"]
    full = run_two_ranks(tmp_path / "full", base + ["train.max_epochs=2"])
    run = str(tmp_path / "cut" / "run")
    run_two_ranks(tmp_path / "cut", base + ["train.max_epochs=1"], run)
    resumed = run_two_ranks(tmp_path / "cut", base + ["train.max_epochs=2"], run, resume=True)
    assert resumed[0]["checksum"] == resumed[1]["checksum"] == full[0]["checksum"]
    assert resumed[0]["losses"] == full[0]["losses"]
