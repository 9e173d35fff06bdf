"""Serving: load a trained checkpoint and recommend top-k items for a history."""
from seqrec.serve.recommender import Recommender

__all__ = ["Recommender"]
