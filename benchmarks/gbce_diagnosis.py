"""Why gbce (the paper's form) did not learn here and what fixed it (issue 16): SASRec (and one BERT4Rec row) on the embedded synthetic data with
the binary losses under the settings that separate the hypotheses, against the softmax losses, 12 epochs each,
validation NDCG@10 after every epoch.

    python benchmarks/gbce_diagnosis.py            # ~15 min on one core
    python benchmarks/gbce_diagnosis.py --epochs 2 --only bce1_lr1e-3   # a smoke test (written to scratch/)

Every setting is `seqrec train`'s default config (src/seqrec/configs/default.yaml: SASRec, synthetic data, sequence
examples, dropout 0.2, lr 5e-3) plus its overrides, trained with patience 0 (no early stopping) by the library's own trainer in this
process, one thread, seed 2020. `paper` rows use `model.gbce_shift=none` (the paper's unshifted logits),
`equilibrium` rows the library's default shift log(beta / N). Two diagnostic variants are patched in here, not in the
library: the item table re-initialised N(0, 1) (gSASRec's nn.Embedding default; seqrec's init_std applies to every
layer), and a learnable output offset (one scalar, or one bias per item) added to every logit, started at 0 or at
log(beta / N). Writes benchmarks/results/gbce_diagnosis_synthetic_cpu.json: per setting its overrides, the per-epoch
validation NDCG@10 and training loss, the best value and epoch. docs/losses.md cites it.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from provenance import provenance, write_result  # noqa: E402

from seqrec.losses import gbce_beta  # noqa: E402

GBCE64 = ["model.loss=gbce", "model.negatives=64"]
PAPER = GBCE64 + ["model.gbce_shift=none"]           # the paper's unshifted logits
BCE = ["model.loss=gbce", "model.gbce_t=0", "model.gbce_shift=none"]
LR3 = ["train.lr=0.001"]
EQUILIBRIUM_64 = math.log(gbce_beta(64, 500, 0.75) / 64)   # log(beta / N) of 64 negatives, 500 items, t 0.75
SETTINGS = {   # name: (overrides, item-table init std or None, learnable output offset: (kind, initial value) or None)
    "ce": ([], None, None),
    "sampled_softmax64": (["model.loss=sampled_softmax", "model.negatives=64"], None, None),
    "gbce64_paper": (PAPER, None, None),
    "gbce64_paper_per_row": (PAPER + ["model.negatives_per=row"], None, None),
    "gbce64_paper_per_row_pre_ln_lr1e-3": (PAPER + ["model.negatives_per=row", "model.norm_first=true"] + LR3,
                                           None, None),
    "gbce64_paper_lr1e-3": (PAPER + LR3, None, None),
    "gbce64_paper_lr1e-3_item_table_std1": (PAPER + LR3, 1.0, None),
    "gbce64_paper_t1": (PAPER + ["model.gbce_t=1.0"], None, None),
    "gbce8_paper_lr1e-3": (["model.loss=gbce", "model.negatives=8", "model.gbce_shift=none"] + LR3, None, None),
    "bce1": (BCE + ["model.negatives=1"], None, None),
    "bce1_grad_clip1": (BCE + ["model.negatives=1", "train.grad_clip=1.0"], None, None),
    "bce1_lr1e-3": (BCE + ["model.negatives=1"] + LR3, None, None),
    "bce8_lr1e-3_item_bias_0": (BCE + ["model.negatives=8"] + LR3, None, ("item", 0.0)),
    "gbce64_paper_lr1e-3_item_bias_0": (PAPER + LR3, None, ("item", 0.0)),
    "gbce64_paper_lr1e-3_offset_0": (PAPER + LR3, None, ("global", 0.0)),
    "gbce64_paper_lr1e-3_offset_equilibrium": (PAPER + LR3, None, ("global", EQUILIBRIUM_64)),
    "gbce64_paper_lr1e-3_item_bias_equilibrium": (PAPER + LR3, None, ("item", EQUILIBRIUM_64)),
    "gbce64_equilibrium_lr1e-3": (GBCE64 + LR3, None, None),
    "gbce64_equilibrium": (GBCE64, None, None),
    "gbce64_equilibrium_per_row": (GBCE64 + ["model.negatives_per=row"], None, None),
    "bert4rec_untied_gbce64_paper_lr1e-3": (["model.name=bert4rec", "model.tied=false"] + PAPER + LR3, None, None),
    "bert4rec_untied_gbce64_equilibrium_lr1e-3": (["model.name=bert4rec", "model.tied=false"] + GBCE64 + LR3, None,
                                                  None),
    "bert4rec_untied_ce": (["model.name=bert4rec", "model.tied=false"], None, None),
}


@contextlib.contextmanager
def patched_sasrec(item_std: float | None, offset: tuple | None):
    """SASRec with its item table re-initialised (std item_std) and / or a learnable output offset added to every
    logit (kind 'global': one scalar; 'item': one per item, a bias), started at the given value: the diagnostic
    variants, made here without touching the library."""
    from seqrec.models.sasrec import SASRec
    saved = {k: SASRec.__dict__[k] for k in ("__init__", "item_logits", "item_rows")}
    init = saved["__init__"]

    def new_init(self, cfg, info):
        init(self, cfg, info)
        if item_std is not None:
            with torch.no_grad():
                self.embed.item.weight.normal_(0.0, item_std)
                self.embed.item.weight[0].zero_()
        if offset is not None:
            size = info.n_items + 1 if offset[0] == "item" else 1
            self.out_offset = torch.nn.Parameter(torch.full((size,), float(offset[1])))

    def item_logits(self, h):
        z = saved["item_logits"](self, h)
        return z + (self.out_offset if offset[0] == "item" else self.out_offset[0])

    def item_rows(self, ids):
        w, _ = saved["item_rows"](self, ids)
        b = self.out_offset[ids] if offset[0] == "item" else self.out_offset[0].expand(ids.shape)
        return w, b

    SASRec.__init__ = new_init
    if offset is not None:
        SASRec.item_logits, SASRec.item_rows = item_logits, item_rows
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(SASRec, k, v)


def run_setting(overrides: list[str], item_std: float | None, offset: tuple | None, epochs: int) -> dict:
    from seqrec.config import load_config
    from seqrec.train import train
    from seqrec.cli import DEFAULT_CONFIG
    # `seqrec train`'s own default config (load_config(None) would be the bare dataclass defaults)
    cfg = load_config(DEFAULT_CONFIG, overrides + [f"train.max_epochs={epochs}", "train.patience=0",
                                                   "train.threads=1", "train.seed=2020"])
    with patched_sasrec(item_std, offset), tempfile.TemporaryDirectory() as out:
        result = train(cfg, out_dir=Path(out) / "run", quiet=True)
    valid = [round(h["valid"]["NDCG@10"], 4) for h in result["history"]]
    loss = [round(h["train"]["loss"], 4) for h in result["history"]]
    best = max(range(len(valid)), key=valid.__getitem__)
    return {"overrides": overrides, "item_table_init_std": item_std,
            "learnable_output_offset": None if offset is None else {"kind": offset[0], "initial": offset[1]},
            "valid_ndcg10": valid, "train_loss": loss, "best_valid_ndcg10": valid[best], "best_epoch": best + 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--only", help="comma-separated setting names (a smoke test; written to scratch/)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = args.only.split(",") if args.only else list(SETTINGS)
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"--only: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(SETTINGS)}")
    t0 = time.perf_counter()
    runs = {}
    for name in names:
        runs[name] = run_setting(*SETTINGS[name], args.epochs)
        print(f"{name:34s} best {runs[name]['best_valid_ndcg10']:.4f} (epoch {runs[name]['best_epoch']}): "
              f"{runs[name]['valid_ndcg10']}", flush=True)
    smoke = bool(args.only) or args.epochs != 12
    write_result({"kind": "diagnosis", "name": "gbce_diagnosis_synthetic_cpu",
                  "description": __doc__.split("\n\n")[0], "epochs": args.epochs, "runs": runs,
                  "protocol": {"data": "embedded synthetic (seqrec train's default)", "split": "leave-one-out",
                               "ranking": "full, exclude none", "metric": "valid NDCG@10 after every epoch",
                               "early_stopping": "none"},
                  "wall_seconds": round(time.perf_counter() - t0, 1), **provenance(1, "cpu")}, smoke=smoke)


if __name__ == "__main__":
    main()
