"""Full-ranking evaluation."""
from seqrec.eval.evaluator import evaluate, exclude_items, target_ranks
from seqrec.eval.metrics import metrics_from_ranks
from seqrec.eval.topk import topk_chunked

__all__ = ["evaluate", "exclude_items", "target_ranks", "metrics_from_ranks", "topk_chunked"]
