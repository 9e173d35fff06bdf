"""Training: the loop, checkpoints, distributed setup, progress display."""
from seqrec.train.trainer import Trainer, train

__all__ = ["Trainer", "train"]
