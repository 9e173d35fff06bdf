"""Long runs side by side, read from committed files: the tables docs/ cite for runs that span sessions.

    python benchmarks/compare_runs.py NAME [NAME ...] [--at 10 20 50] [--results benchmarks/results]

For each NAME it reads benchmarks/results/NAME.json (the run finished: the benchmark's own result file) or else
benchmarks/results/progress/NAME.json (still running: a snapshot written by run_snapshot.py), and prints two
Markdown tables to stdout:
* where each run stands: epochs run, best epoch, the selection metric on validation at the best epoch, the test
  NDCG@10 / HR@10 tracked at that epoch (for reporting only, never used to select), and why it stopped (or
  "running"), with the file it was read from;
* the selection metric on validation at the epochs given with --at (a run not yet there shows "-"), so rows are
  compared at equal epochs.
Nothing is written; a NAME with neither file is a one-line error naming both paths, before anything is printed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_run(name: str, results: Path) -> tuple[Path, dict]:
    """(path, content) of NAME's result file, else of its progress snapshot; ValueError where neither exists."""
    for path in (results / f"{name}.json", results / "progress" / f"{name}.json"):
        if path.is_file():
            return path, json.loads(path.read_text())
    raise ValueError(f"{name}: no {results / (name + '.json')} and no {results / 'progress' / (name + '.json')}")


def summary(path: Path, run: dict) -> dict:
    """Where the run stands, the same fields for a result file and a progress snapshot (ValueError naming the file
    where a field is missing)."""
    try:
        return _summary(path, run)
    except KeyError as e:
        raise ValueError(f"{path}: no key {e} (not a result file or run_snapshot.py snapshot?)") from None


def _summary(path: Path, run: dict) -> dict:
    metric = run["config"]["train"]["metric"]
    history = run["history"]
    if run.get("kind") == "progress":
        valid, test = run["best_valid"] or {}, run["test_at_best_epoch"] or {}
        state = run["stopped_by"] or run["state"]
    else:                                       # a result file: its metrics are the best epoch's
        valid, test = run["metrics"]["valid"], run["metrics"]["test"]
        state = run["stopped_by"]
    return {"file": path, "metric": metric, "epochs": run["epochs_run"], "best_epoch": run["best_epoch"],
            "valid": valid.get(metric), "test_ndcg10": test.get("NDCG@10"), "test_hr10": test.get("HR@10"),
            "state": state, "valid_by_epoch": {r["epoch"]: r["valid"][metric] for r in history if "valid" in r}}


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def render(names: list[str], runs: list[dict], at: list[int], results: Path) -> str:
    metric = runs[0]["metric"] if runs else "NDCG@10"
    lines = [f"| run | file | epochs | best epoch | valid {metric} | test NDCG@10 | test HR@10 | state |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in zip(names, runs):
        lines.append(f"| {name} | {s['file'].relative_to(results).as_posix()} | {s['epochs']} | {s['best_epoch']} | "
                     f"{_f(s['valid'])} | {_f(s['test_ndcg10'])} | {_f(s['test_hr10'])} | {s['state']} |")
    if at:
        lines += ["", f"| run (valid {metric} at epoch) | " + " | ".join(str(e) for e in at) + " |",
                  "| --- |" + " --- |" * len(at)]
        for name, s in zip(names, runs):
            lines.append(f"| {name} | " + " | ".join(_f(s["valid_by_epoch"].get(e)) for e in at) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", help="run names: NAME.json under --results or under its progress/")
    ap.add_argument("--at", type=int, nargs="*", default=[], help="epochs to compare the validation metric at")
    ap.add_argument("--results", type=Path, default=HERE / "results", help="the results folder "
                    "(default benchmarks/results)")
    args = ap.parse_args(argv)
    try:                                        # every name read before anything is printed
        runs = [summary(*load_run(name, args.results)) for name in args.names]
        metrics = {s["metric"] for s in runs}
        if len(metrics) > 1:                    # one column per table: runs selected on different metrics differ
            raise ValueError(f"the runs select on different metrics ({', '.join(sorted(metrics))}): compare "
                             "runs of one selection metric")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render(args.names, runs, args.at, args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
