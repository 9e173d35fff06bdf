"""Data: readers, validation, the leave-one-out split, training examples and batches."""
from seqrec.data.batch import Batch
from seqrec.data.dataset import InteractionData, ItemAttributes, Split, leave_one_out

__all__ = ["Batch", "InteractionData", "ItemAttributes", "Split", "leave_one_out"]
