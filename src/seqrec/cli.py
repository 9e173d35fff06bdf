"""Command line: `seqrec train | evaluate | compare | recommend | data stats | data check | results | plot | export`.

Thin: parses arguments, builds the config, calls the library. User errors (SeqrecError) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

from seqrec.errors import SeqrecError, SeqrecWarning

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
    from seqrec.data.loading import load_dataset, make_split
    from seqrec.eval.evaluator import evaluate
    from seqrec.train.checkpoint import check_same_data, model_from_checkpoint
    model, cfg, ckpt = model_from_checkpoint(args.checkpoint)
    if args.overrides:
        cfg = config_from_dict(apply_overrides(cfg.to_dict(), args.overrides))
    data = load_dataset(cfg.data)
    check_same_data(ckpt, args.checkpoint, data, "evaluate")      # by fingerprint, before any scoring
    split = make_split(data, cfg.data)
    exclude = args.exclude or cfg.eval.exclude
    res = evaluate(model, split, args.split, exclude, cfg.eval.ks, cfg.eval.batch_size,
                   item_chunk=cfg.eval.item_chunk)
    if args.json:
        print(json.dumps({"split": args.split, "exclude": exclude, "users": res["users"], "metrics": res["metrics"],
                          "protocol": split.protocol}))
    else:
        print(f"{cfg.model.name} on {data.name}, {args.split} ({split.protocol['split']} split), "
              f"exclude={exclude}, {res['users']} users, "
              f"{res['seconds']:.1f}s")
        for k, v in res["metrics"].items():
            print(f"  {k:<8} {v:.4f}")
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="paired comparison of two checkpoints on the same users, with a "
                       "confidence interval and p-value",
                       description="Evaluate checkpoints A and B on the same users (full ranking) and compare their "
                                   "per-user metric values: the difference B - A, its paired bootstrap interval, the "
                                   "p-value of the paired t statistic, and how many users each ranks better "
                                   "(seqrec.eval.paired). Says nothing about the spread between training runs.")
    p.add_argument("checkpoint_a", metavar="A", help="checkpoint of the reference model (e.g. the baseline)")
    p.add_argument("checkpoint_b", metavar="B", help="checkpoint of the model compared with it")
    p.add_argument("--split", choices=("valid", "test"), default="test")
    p.add_argument("--metric", "-m", dest="metrics", action="append", default=None, metavar="NAME",
                   help="HR@K, NDCG@K or MRR@K (repeatable; default NDCG@10 and HR@10)")
    p.add_argument("--exclude", choices=("none", "window", "history"), default=None,
                   help="items removed from the ranking (default: the checkpoints' config, which must agree)")
    p.add_argument("--set", "-s", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override both stored configs' data/eval keys, e.g. --set data.path=/data/Beauty.txt")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples of the users (default "
                   "10000; 0: no interval)")
    p.add_argument("--level", type=float, default=0.95, help="coverage of the interval (default 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


def compare_checkpoints(path_a, path_b, split: str = "test", metrics=("NDCG@10", "HR@10"),
                        exclude: str | None = None, overrides=(), resamples: int = 10_000, level: float = 0.95,
                        seed: int = 0) -> dict:
    """The paired comparison of two checkpoints' per-user `metrics` on `split` (`seqrec compare`; its arguments).

    Both are evaluated on the data the first one's config names, which both must have been trained on; the
    evaluated users, their histories and targets must be the same under either config (a model's own history
    length may differ), and so must the exclusion (unless `exclude` is given)."""
    import dataclasses

    import numpy as np

    from seqrec.config import apply_overrides, config_from_dict
    from seqrec.data.loading import load_dataset, make_split
    from seqrec.eval.evaluator import evaluate
    from seqrec.eval.metrics import parse_metric_name
    from seqrec.eval.paired import paired_ranks
    from seqrec.train.checkpoint import check_same_data, model_from_checkpoint
    for m in metrics:                                                           # before anything is loaded
        parse_metric_name(m, "--metric")
    if split not in ("valid", "test"):
        raise SeqrecError(f"--split: expected valid or test, got {split!r}")
    if exclude not in (None, "none", "window", "history"):
        raise SeqrecError(f"--exclude: expected none, window or history, got {exclude!r}")
    if resamples < 0:
        raise SeqrecError(f"--resamples: expected a count >= 0, got {resamples}")
    if not 0 < level < 1:
        raise SeqrecError(f"--level: expected a coverage between 0 and 1 (e.g. 0.95), got {level}")
    runs = []
    for path in (path_a, path_b):
        model, cfg, ckpt = model_from_checkpoint(path)
        if overrides:
            cfg = config_from_dict(apply_overrides(cfg.to_dict(), list(overrides)))
        runs.append((path, model, cfg, ckpt))
    (_, _, cfg_a, _), (_, _, cfg_b, _) = runs
    if exclude is None:
        if cfg_a.eval.exclude != cfg_b.eval.exclude:
            raise SeqrecError(f"{path_a} is evaluated with eval.exclude={cfg_a.eval.exclude}, {path_b} with "
                              f"{cfg_b.eval.exclude}; give --exclude to compare both under one protocol")
        exclude = cfg_a.eval.exclude
    data = load_dataset(cfg_a.data)
    for path, _, _, ckpt in runs:
        check_same_data(ckpt, path, data, "compare")                            # by fingerprint, before scoring
    splits = [make_split(data, cfg.data) for cfg in (cfg_a, cfg_b)]
    same_task = all(np.array_equal(x, y) for x, y in zip(splits[0].eval_inputs(split), splits[1].eval_inputs(split)))
    if not (same_task and np.array_equal(splits[0].users(split), splits[1].users(split))):
        data_a, data_b = dataclasses.asdict(cfg_a.data), dataclasses.asdict(cfg_b.data)
        keys = sorted(k for k in data_a if data_a[k] != data_b.get(k))
        raise SeqrecError(f"{path_a} and {path_b} evaluate different users, histories or targets on the {split} "
                          f"split (their configs differ in data.{', data.'.join(keys) or '?'}); a paired "
                          f"comparison needs the same ones")
    ranks = []
    for (path, model, cfg, _), sp in zip(runs, splits):
        res = evaluate(model, sp, split, exclude, cfg.eval.ks, cfg.eval.batch_size, return_ranks=True,
                       item_chunk=cfg.eval.item_chunk)
        ranks.append(res["ranks"])
    comparisons = paired_ranks(*ranks, dict.fromkeys(metrics), resamples=resamples, seed=seed, level=level)
    return {"a": str(path_a), "b": str(path_b), "model_a": cfg_a.model.name, "model_b": cfg_b.model.name,
            "epochs": {"a": runs[0][3].get("epoch"), "b": runs[1][3].get("epoch")},
            "dataset": data.name, "split": split, "exclude": exclude, "users": len(ranks[0]),
            "protocol": {**splits[0].protocol, "ranking": "full", "exclude": exclude},
            "comparisons": comparisons}


def cmd_compare(args) -> int:
    out = compare_checkpoints(args.checkpoint_a, args.checkpoint_b, args.split, args.metrics or ["NDCG@10", "HR@10"],
                              args.exclude, args.overrides, args.resamples, args.level, args.seed)
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"A = {out['model_a']} ({out['a']}), B = {out['model_b']} ({out['b']})")
    print(f"{out['dataset']}, {out['split']}, exclude={out['exclude']}, {out['users']} users; "
          f"B - A with a {args.level:.0%} paired bootstrap interval ({args.resamples} resamples, seed {args.seed})")
    print(f"{'metric':<9} {'A':>8} {'B':>8} {'B - A':>9} {'interval':>21} {'relative':>9} {'p':>9}  users B better / "
          f"A better / same")
    for name, c in out["comparisons"].items():
        interval = "-" if c["ci_low"] is None else f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"
        relative = "-" if c["relative"] is None else f"{c['relative']:+.1%}"
        print(f"{name:<9} {c['a']:>8.4f} {c['b']:>8.4f} {c['difference']:>+9.4f} {interval:>21} {relative:>9} "
              f"{c['p_value']:>9.2g}  {c['b_better']} / {c['a_better']} / {c['same']}")
    return 0


def _add_recommend(sub) -> None:
    p = sub.add_parser("recommend", help="top-k items for a history, or for users of the data into a file",
                       description="Top-k items for one history (--history), or for every user of the checkpoint's "
                                   "data or those listed in a file (--users all|FILE --out FILE: batch inference, "
                                   "seqrec.serve.batch).")
    p.add_argument("checkpoint")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--history", help='item ids as in the training data (the checkpoint keeps them), oldest '
                      'first, separated by spaces or commas, e.g. "12 7 93" or "B00X,B01Y"')
    what.add_argument("--users", metavar="all|FILE",
                      help="'all' (every user of the data the checkpoint names) or a file of original user ids, one "
                           "per line; each user's input is their whole history; needs --out")
    p.add_argument("-k", type=int, default=10, help="number of items")
    p.add_argument("--exclude-history", action="store_true", help="do not recommend items of the history")
    p.add_argument("--skip-unknown", action="store_true",
                   help="drop ids the model does not know, with a warning (default: an error naming the id)")
    p.add_argument("--json", action="store_true")
    batch = p.add_argument_group("with --users")
    batch.add_argument("--out", "-o", help="output file: .parquet, .csv or .jsonl (the format is the suffix's); "
                       "rows user, item, rank, score with original ids; written atomically")
    batch.add_argument("--include-seen", action="store_true",
                       help="also recommend items the user has interacted with (default: excluded)")
    batch.add_argument("--batch-size", type=int, default=None, help="users scored at a time (default 512)")
    batch.add_argument("--item-chunk", type=int, default=None,
                       help="items scored at a time; memory ~ batch-size x item-chunk x 4 bytes (default 65536; "
                            "0 = all at once)")
    batch.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def cmd_recommend(args) -> int:
    from seqrec.serve import Recommender
    if args.users is not None:
        return cmd_recommend_users(args)
    batch_only = [flag for flag, given in (("--out", args.out is not None), ("--include-seen", args.include_seen),
                                          ("--batch-size", args.batch_size is not None),
                                          ("--item-chunk", args.item_chunk is not None),
                                          ("--overwrite", args.overwrite)) if given]
    if batch_only:
        raise SeqrecError(f"{batch_only[0]}: applies to --users (batch inference) only, not to --history")
    history = args.history.replace(",", " ").split()      # original ids: '1004' matches int 1004, 'B00X' a string
    if not history:
        raise SeqrecError("--history: expected at least one item id")
    rec = Recommender.from_checkpoint(args.checkpoint)
    top = rec.recommend(history, args.k, args.exclude_history, unknown="skip" if args.skip_unknown else "error",
                        source="--history")
    if args.json:
        print(json.dumps([{"item": i, "score": s} for i, s in top]))
    else:
        for rank, (i, s) in enumerate(top, 1):
            print(f"{rank:>3}  item {i:<8} score {s:.4f}")
    return 0


def cmd_recommend_users(args) -> int:
    """`seqrec recommend CKPT --users all|FILE --out FILE`: the options and --out are checked before any work."""
    from seqrec.serve.batch import BATCH_USERS, ITEM_CHUNK, check_output, load_batch_inputs, write_recommendations
    if args.out is None:
        raise SeqrecError("--users: needs --out, the file to write (.parquet, .csv or .jsonl)")
    if args.json:
        raise SeqrecError("--json: applies to --history only; with --users the format is --out's suffix")
    out = Path(args.out)
    check_output(out, args.overwrite)
    batch_size = BATCH_USERS if args.batch_size is None else args.batch_size
    item_chunk = ITEM_CHUNK if args.item_chunk is None else args.item_chunk
    for flag, value, least in (("-k", args.k, 1), ("--batch-size", batch_size, 1), ("--item-chunk", item_chunk, 0)):
        if value < least:
            raise SeqrecError(f"{flag}: expected an integer >= {least}, got {value}")
    rec, data, rows = load_batch_inputs(args.checkpoint, args.users)
    rec.item_chunk = item_chunk
    t0 = time.perf_counter()
    n = write_recommendations(rec, data, out, k=args.k, exclude_seen=not args.include_seen,
                              batch_size=batch_size, overwrite=args.overwrite, rows=rows)
    print(f"wrote {n:,} recommendations for {len(rows):,} users to {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="HTTP service (FastAPI on uvicorn): GET /recommend?history=1,2,3&k=10, "
                       "POST /recommend, /health, /ready, /metrics, /docs",
                       description="Serve a checkpoint over HTTP (seqrec.serve.app): concurrent requests are scored "
                                   "in micro-batches; every bad request gets a JSON error.")
    p.add_argument("checkpoint", help="a checkpoint (best.pt), or with --backend onnx a file from seqrec export")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free port)")
    p.add_argument("--workers", type=int, default=1, help="server processes, each with its own model copy and "
                   "one scoring thread (default 1)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="scoring with PyTorch (default) "
                   "or onnxruntime")
    p.add_argument("--max-batch", type=int, default=256, help="most histories scored in one call, and in one "
                   "request (default 256)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="longest a request waits for others to join "
                   "its batch (default 2)")
    p.add_argument("--max-k", type=int, default=1000, help="largest k accepted (default 1000; never more than "
                   "the model's items)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="largest request body (default "
                   "1000000); a larger one gets 413")
    p.add_argument("--read-timeout-s", type=float, default=10.0, help="a request body must arrive within this "
                   "(default 10); else 408")
    p.add_argument("--load-wait-s", type=float, default=30.0, help="a /recommend that reaches a worker still "
                   "loading its model waits up to this for it, then 503 (default 30; 0: 503 at once)")
    p.add_argument("--keep-alive-s", type=float, default=5.0, help="idle keep-alive connections are closed "
                   "after this (default 5)")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False,
                   help="log one line per request (default off)")


def cmd_serve(args) -> int:
    try:
        from seqrec.serve.server import serve
    except ImportError as e:        # fastapi, uvicorn, prometheus-client are the `serve` extra
        raise SeqrecError(f"seqrec serve needs {e.name or 'its dependencies'}: pip install 'seqrec[serve]'") from None
    serve(args.checkpoint, host=args.host, port=args.port, workers=args.workers, backend=args.backend,
          access_log=args.access_log, keep_alive_s=args.keep_alive_s,
          announce=lambda line: print(line, flush=True),
          max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_k=args.max_k,
          max_body_bytes=args.max_body_bytes, read_timeout_s=args.read_timeout_s,
          load_wait_s=args.load_wait_s)
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export the scoring graph (histories in, top-k items and scores out) to ONNX",
                       description="Export a checkpoint's scoring graph to ONNX for onnxruntime (seqrec.serve.export): "
                                   "inputs items int64 [batch, length <= history_len] (right-padded internal ids) and "
                                   "exclude int64 [batch, n]; outputs item_ids int64 and scores float32 [batch, k]; "
                                   "dynamic batch and length; metadata (model, n_items, history_len, k, item "
                                   "vocabulary) in the file. Checked against PyTorch with onnxruntime before writing.")
    p.add_argument("checkpoint")
    p.add_argument("--format", default="onnx", help="onnx (the only format)")
    p.add_argument("--out", "-o", help="output file (default: the checkpoint's path with suffix .onnx)")
    p.add_argument("-k", type=int, default=100, help="items per history the graph returns (capped at the model's "
                   "item count); a caller may take fewer (default 100)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def cmd_export(args) -> int:
    from seqrec.serve.export import export_checkpoint
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    t0 = time.perf_counter()
    meta = export_checkpoint(args.checkpoint, out, args.format, args.k, args.overwrite)
    print(f"wrote {out} ({meta['seqrec.model']}, {meta['seqrec.n_items']} items, history_len "
          f"{meta['seqrec.history_len']}, top-{meta['seqrec.k']}; checked against PyTorch with onnxruntime; "
          f"{time.perf_counter() - t0:.1f} s)")
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
    p.add_argument("--chart", metavar="IMAGE", help="also draw test NDCG@10 and HR@10 of every result as a bar "
                   "chart to IMAGE (.png, .pdf, .svg; needs pip install 'seqrec[plot]')")


def cmd_results(args) -> int:
    from seqrec.results import load_results, write_results_md
    if args.chart:          # drawn first: a missing matplotlib stops before anything is written
        from seqrec.plots import results_chart, save_figure
        save_figure(results_chart(load_results(args.results)), args.chart)
    n = write_results_md(args.results, args.out)
    print(f"wrote {args.out} from {n} result files" + (f", and {args.chart}" if args.chart else ""))
    return 0


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="draw training curves of run folders (needs pip install 'seqrec[plot]')",
                       description="One subplot per loss term and validation metric per epoch (from each "
                                   "RUN_DIR/metrics.jsonl), the runs overlaid.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders written by seqrec train --out")
    p.add_argument("--out", "-o", default="curves.png", help="image file: .png, .pdf, .svg (default curves.png)")


def cmd_plot(args) -> int:
    from seqrec.plots import save_figure, training_curves
    save_figure(training_curves(args.run_dirs), args.out)
    print(f"wrote {args.out}")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "compare": cmd_compare, "recommend": cmd_recommend,
            "data": cmd_data, "results": cmd_results, "serve": cmd_serve, "plot": cmd_plot, "export": cmd_export}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seqrec", description="Sequential recommendation: train, evaluate, serve.")
    sub = parser.add_subparsers(dest="command")
    for add in (_add_train, _add_evaluate, _add_compare, _add_recommend, _add_serve, _add_export, _add_data,
                _add_results, _add_plot):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:            # `seqrec` alone: the main job
        args = parser.parse_args(["train", *(argv or [])])
    args.argv = list(sys.argv[1:] if argv is None else argv)    # the command line recorded in result.json
    try:
        with warnings.catch_warnings():
            python_format = warnings.showwarning

            def show(message, category, *rest, **kw):    # SeqrecWarnings are for the user: one line, as errors
                if issubclass(category, SeqrecWarning):
                    print(f"seqrec: warning: {message}", file=sys.stderr)
                else:
                    python_format(message, category, *rest, **kw)
            warnings.showwarning = show
            warnings.simplefilter("always", SeqrecWarning)
            return COMMANDS[args.command](args)
    except SeqrecError as e:
        print(f"seqrec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
