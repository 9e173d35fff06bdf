"""Data: readers, validation, the splits (leave-one-out, temporal), training examples and batches."""
from seqrec.data.batch import Batch
from seqrec.data.dataset import EvalTargets, InteractionData, ItemAttributes, Split, leave_one_out, temporal_split

__all__ = ["Batch", "EvalTargets", "InteractionData", "ItemAttributes", "Split", "leave_one_out", "temporal_split"]
