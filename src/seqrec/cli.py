"""Command line: `seqrec train | evaluate | recommend | data stats | data check | results`.

Thin: parses arguments, builds the config, calls the library. User errors (SeqrecError) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from seqrec.errors import SeqrecError

# `seqrec train` without --config: SASRec on the embedded synthetic dataset (under a minute on 2 CPU cores: one thread, see train.threads)
DEFAULT_CONFIG = str(Path(__file__).resolve().parent / "configs" / "default.yaml")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (default: SASRec on the embedded synthetic dataset)",
                       description="Train, keep the best-validation checkpoint, test it and write result.json.")
    p.add_argument("config_file", nargs="?", metavar="CONFIG", help="YAML config (same as --config)")
    p.add_argument("--config", "-c", help="YAML config (sections data, model, train, eval); default: "
                   "SASRec on the embedded synthetic dataset (seqrec/configs/default.yaml)")
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=0.002 (repeatable)")
    p.add_argument("--out", "-o", help="output folder (default runs/<model>_<dataset>_<time>)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/last.pt")
    p.add_argument("--overwrite", action="store_true", help="train into a non-empty OUT, replacing its files")
    p.add_argument("--no-baseline", action="store_true", help="do not print the popularity baseline")


def _check_out(out: Path, resume: bool, overwrite: bool) -> None:
    """An unusable --out fails now, not after the first epoch; a folder holding an earlier run is not overwritten
    silently."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".seqrec-write-check"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise SeqrecError(f"--out {out}: cannot write there ({e.strerror or type(e).__name__})") from None
    if any(out.iterdir()) and not (resume or overwrite):
        raise SeqrecError(f"--out {out}: the folder is not empty (an earlier run?); pass --resume to continue it or "
                          f"--overwrite to replace it")
    if overwrite:       # the earlier run's outputs go now, so a new run that fails leaves none of them behind
        for name in ("result.json", "metrics.jsonl", "best.pt", "last.pt"):
            (out / name).unlink(missing_ok=True)


def cmd_train(args) -> int:
    from seqrec.config import load_config
    from seqrec.train import Trainer
    if args.config and args.config_file:
        raise SeqrecError("give the config once: either CONFIG or --config")
    cfg = load_config(args.config or args.config_file or DEFAULT_CONFIG, args.overrides)
    out = args.out
    if out is None:
        out = f"runs/{cfg.model.name}_{Path(cfg.data.dataset).stem}_{time.strftime('%Y%m%d-%H%M%S')}"
    if args.resume and args.overwrite:
        raise SeqrecError("give --resume or --overwrite, not both")
    if os.environ.get("RANK", "0") == "0":     # under torchrun rank 0's folder is used (and checked)
        _check_out(Path(out), args.resume, args.overwrite)
    command = "seqrec " + " ".join(shlex.quote(str(a)) for a in args.argv)
    trainer = Trainer(cfg, out, quiet=args.quiet, resume=args.resume, command=command)
    result = trainer.fit()
    if trainer.dist.is_main:
        if not args.quiet and not args.no_baseline:
            from seqrec.eval.baselines import Popularity
            from seqrec.eval.evaluator import evaluate
            pop = evaluate(Popularity(trainer.split, trainer.model.history_len), trainer.split, "test",
                           cfg.eval.exclude, cfg.eval.ks, cfg.eval.batch_size, item_chunk=cfg.eval.item_chunk)
            print("popularity baseline, test: " + " ".join(f"{k} {v:.4f}" for k, v in pop["metrics"].items()),
                  file=sys.stderr)
        _print_metrics(result)
        print(f"wrote {out}/result.json, {out}/metrics.jsonl, {out}/best.pt")
    return 0


def _print_metrics(result: dict) -> None:
    m = result["metrics"]
    keys = list(m["test"])
    print(f"{result['method']} on {result['dataset']} (exclude={result['protocol']['exclude']}, "
          f"best epoch {result['best_epoch']}/{result['epochs_run']}, {result['wall_time_s']:.0f}s)")
    print("split  " + " ".join(f"{k:>8}" for k in keys))
    for split in ("valid", "test"):
        if split in m:
            print(f"{split:<6} " + " ".join(f"{m[split][k]:>8.4f}" for k in keys))


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint with full ranking")
    p.add_argument("checkpoint")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--exclude", choices=("none", "window", "history"), default=None,
                   help="items removed from the ranking (default: the checkpoint's config)")
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the stored config's data/eval keys, e.g. --set data.path=/data/Beauty.txt")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")


def cmd_evaluate(args) -> int:
    from seqrec.config import apply_overrides, config_from_dict
    from seqrec.data.dataset import leave_one_out
    from seqrec.data.loading import load_dataset
    from seqrec.eval.evaluator import evaluate
    from seqrec.train.checkpoint import model_from_checkpoint
    model, cfg, ckpt = model_from_checkpoint(args.checkpoint)
    if args.overrides:
        cfg = config_from_dict(apply_overrides(cfg.to_dict(), args.overrides))
    data = load_dataset(cfg.data)
    if data.n_items > model.n_items:
        raise SeqrecError(f"{args.checkpoint}: the model knows items 1..{model.n_items} but the data has "
                          f"{data.n_items}; evaluate on the dataset it was trained on")
    split = leave_one_out(data, cfg.data.short_users)
    exclude = args.exclude or cfg.eval.exclude
    res = evaluate(model, split, args.split, exclude, cfg.eval.ks, cfg.eval.batch_size,
                   item_chunk=cfg.eval.item_chunk)
    if args.json:
        print(json.dumps({"split": args.split, "exclude": exclude, "users": res["users"], "metrics": res["metrics"]}))
    else:
        print(f"{cfg.model.name} on {data.name}, {args.split}, exclude={exclude}, {res['users']} users, "
              f"{res['seconds']:.1f}s")
        for k, v in res["metrics"].items():
            print(f"  {k:<8} {v:.4f}")
    return 0


def _add_recommend(sub) -> None:
    p = sub.add_parser("recommend", help="top-k items for a history")
    p.add_argument("checkpoint")
    p.add_argument("--history", required=True, help='item ids, oldest first, e.g. "12 7 93"')
    p.add_argument("-k", type=int, default=10, help="number of items")
    p.add_argument("--exclude-history", action="store_true", help="do not recommend items of the history")
    p.add_argument("--json", action="store_true")


def cmd_recommend(args) -> int:
    from seqrec.serve import Recommender
    tokens = args.history.replace(",", " ").split()
    try:
        history = [int(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not t.lstrip("-").isdigit())
        raise SeqrecError(f"--history: {bad!r} is not an integer item id") from None
    rec = Recommender.from_checkpoint(args.checkpoint)
    top = rec.recommend(history, args.k, args.exclude_history)
    if args.json:
        print(json.dumps([{"item": i, "score": s} for i, s in top]))
    else:
        for rank, (i, s) in enumerate(top, 1):
            print(f"{rank:>3}  item {i:<8} score {s:.4f}")
    return 0


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="JSON HTTP service: GET /recommend?history=1,2,3&k=10, POST /recommend")
    p.add_argument("checkpoint")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)


def cmd_serve(args) -> int:
    from seqrec.serve import Recommender
    from seqrec.serve.http import make_server
    server = make_server(Recommender.from_checkpoint(args.checkpoint), args.host, args.port)
    print(f"serving {args.checkpoint} on http://{args.host}:{server.server_port} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="inspect a dataset")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    for name, help_ in (("stats", "users, items, interactions, lengths, repeats"),
                        ("check", "validate a file and report problems")):
        q = dsub.add_parser(name, help=help_)
        q.add_argument("path", help="a data file, or a known dataset name (Beauty, ...) or 'synthetic'")
        q.add_argument("--format", default=None, help="auto | s3rec | inter | csv | tsv | parquet (default auto; "
                       "same as --set data.format=...)")
        q.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="a data.* config key as for train, e.g. --set data.item_col=item --set data.k_core=5 "
                            "(repeatable)")
        q.add_argument("--json", action="store_true")


def _data_config(args):
    """The DataConfig of `seqrec data stats|check`: PATH, --format, then the --set data.* overrides."""
    from seqrec.config import DataConfig, apply_overrides, dataclass_from_dict
    for item in args.overrides:
        section = item.split("=", 1)[0].strip().split(".", 1)[0]
        if "=" in item and section != "data":
            raise SeqrecError(f"--set {item!r}: seqrec data {args.data_cmd} reads data.* keys only; "
                              f"expected data.KEY=VALUE (e.g. data.item_col=item)")
    section = {"dataset": args.path}
    if args.format is not None:
        section["format"] = args.format
    d = apply_overrides({"data": section}, args.overrides)
    dc = dataclass_from_dict(DataConfig, d["data"], "data")
    dc.validate()
    return dc


def cmd_data(args) -> int:
    from seqrec.data.loading import load_dataset
    from seqrec.data.stats import check_data, dataset_stats, format_stats
    dc = _data_config(args)
    if args.data_cmd == "stats":
        stats = dataset_stats(load_dataset(dc))
        print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
        return 0
    problems = check_data(dc)
    if args.json:
        print(json.dumps(problems, indent=2))
    else:
        for p in problems:
            print(p)
    return 0


def _add_results(sub) -> None:
    p = sub.add_parser("results", help="regenerate RESULTS.md from benchmarks/results/*.json")
    p.add_argument("--results", default="benchmarks/results", help="folder of result files")
    p.add_argument("--out", default="RESULTS.md")


def cmd_results(args) -> int:
    from seqrec.results import write_results_md
    n = write_results_md(args.results, args.out)
    print(f"wrote {args.out} from {n} result files")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "recommend": cmd_recommend, "data": cmd_data,
            "results": cmd_results, "serve": cmd_serve}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqrec", description="Sequential recommendation: train, evaluate, serve.")
    sub = parser.add_subparsers(dest="command")
    for add in (_add_train, _add_evaluate, _add_recommend, _add_serve, _add_data, _add_results):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:            # `seqrec` alone: the main job
        args = parser.parse_args(["train", *(argv or [])])
    args.argv = list(sys.argv[1:] if argv is None else argv)    # the command line recorded in result.json
    try:
        return COMMANDS[args.command](args)
    except SeqrecError as e:
        print(f"seqrec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
