"""Where a long run stands, as a result file: for runs that span sessions (`baselines_beauty.py --full --resume`).

    python benchmarks/run_snapshot.py NAME [NAME ...]      # run folders benchmarks/scratch/NAME

Reads the run's last checkpoint (benchmarks/scratch/NAME/last.pt: the config, every finished epoch's metrics, the
best epoch so far) and writes benchmarks/results/progress/NAME.json: the state ("running" or "finished"), the epochs
run, the best epoch with its validation metrics and the test metrics tracked at that epoch (train.track_test, for
reporting only, never used to select), and the whole history. So a row that is still training is cited from a
committed file written by a repository command, and the curve survives when the machine holding the run does not.
The finished run's own result file (benchmarks/results/NAME.json, written by the benchmark) supersedes it.
`seqrec results` reads benchmarks/results/*.json only, not this folder: a snapshot is not a result.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import provenance, write_result  # noqa: E402

from seqrec.errors import SeqrecError  # noqa: E402
from seqrec.train.checkpoint import load_checkpoint  # noqa: E402

HERE = Path(__file__).resolve().parent


def snapshot(name: str, scratch: Path = HERE / "scratch") -> dict:
    """The snapshot dict of run folder scratch/NAME (SeqrecError where it has no last.pt)."""
    path = scratch / name / "last.pt"
    if not path.is_file():
        raise SeqrecError(f"{path}: no checkpoint (is {name!r} a run folder under {scratch}?)")
    state = load_checkpoint(path)
    history = state["history"]
    best = next((r for r in history if r["epoch"] == state["best_epoch"]), None)
    metric = state["config"]["train"]["metric"]
    return {
        "kind": "progress", "name": name, "run_dir": str(path.parent),
        "state": "finished" if state.get("finished") else "running",
        "epochs_run": state["epoch"], "best_epoch": state["best_epoch"], "selection_metric": metric,
        "bad_validations": state["bad_validations"], "patience": state["config"]["train"]["patience"],
        "best_valid": best["valid"] if best else None,
        "test_at_best_epoch": best.get("test") if best else None,
        "elapsed_s": round(state["elapsed_s"], 3),
        "stopped_by": state.get("stopped_by") if state.get("finished") else None,
        # the commits that trained its epochs, in order (history records name them since the trainer does so)
        "run_commits": list(dict.fromkeys(r["git_commit"] for r in history if "git_commit" in r)),
        "config": state["config"], "history": history,
        "note": "git_commit is the snapshot checkout's commit: the run's code where the snapshot runs in the run's "
                "own worktree (as the commands in docs/ do); run_commits, where the history names them, are the "
                "commits that trained its epochs; test metrics are tracked for reporting only",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", help="run folder names under benchmarks/scratch/")
    args = ap.parse_args()
    try:                                        # every name checked before anything is written
        snapshots = [snapshot(name) for name in args.names]
    except SeqrecError as e:
        sys.exit(f"error: {e}")
    for out in snapshots:
        out.update({k: v for k, v in provenance().items() if k not in ("threads", "versions")})
        write_result(out, path=HERE / "results" / "progress" / f"{out['name']}.json")


if __name__ == "__main__":
    main()
