"""Is model B better than model A on these users, or is the difference test-set noise? A paired comparison of
two models' per-user metric values on the same evaluated users (seqrec.eval.metrics.metric_values).

Per user u, d_u = b_u - a_u. Reported:
* the mean difference (= metric of B minus metric of A) and B's relative change;
* a paired bootstrap confidence interval of the mean difference: users resampled with replacement, `resamples`
  times, the percentile interval of the resampled means;
* a two-sided p-value of the paired t statistic mean(d) / (sd(d) / sqrt(n)), from the normal distribution (for
  the thousands of users an evaluation has, the t distribution's p-values differ from it by under 0.001);
* how many users B ranks better, worse or the same.

What this does not measure: the spread between training runs (seeds). A difference can be far outside the test
users' noise and still within what another seed would give; that needs several runs per model.
"""
from __future__ import annotations

import math

import numpy as np

# resampled means are drawn this many resamples at a time: memory ~ chunk x users x 8 bytes
_BOOTSTRAP_CHUNK = 64


def paired_difference(a: np.ndarray, b: np.ndarray, resamples: int = 10_000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """The paired comparison of per-user values `a` (model A) and `b` (model B) of the same users, in the same order.

    resamples: bootstrap resamples of the users (0: no interval). seed: of the resampling (numpy's default
    generator), so that the interval is reproducible. level: the interval's coverage, e.g. 0.95."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-d arrays of the same users; got shapes {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"a paired comparison needs at least 2 users; got {len(a)}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level}")
    d = b - a
    n = len(d)
    mean_a, mean_b, mean_d = float(a.mean()), float(b.mean()), float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se > 0:
        z = mean_d / se
        p = math.erfc(abs(z) / math.sqrt(2))
    else:                       # every user differs by the same amount: no noise at all
        z = 0.0 if mean_d == 0 else math.copysign(math.inf, mean_d)
        p = 1.0 if mean_d == 0 else 0.0
    out = {"users": n, "a": mean_a, "b": mean_b, "difference": mean_d,
           "relative": mean_d / mean_a if mean_a else None, "z": z, "p_value": p,
           "b_better": int((d > 0).sum()), "a_better": int((d < 0).sum()), "same": int((d == 0).sum()),
           "level": level, "resamples": resamples, "seed": seed, "ci_low": None, "ci_high": None}
    if resamples > 0:
        means = bootstrap_means(d, resamples, seed)
        tail = (1 - level) / 2
        out["ci_low"], out["ci_high"] = (float(x) for x in np.quantile(means, [tail, 1 - tail]))
    return out


def paired_ranks(ranks_a, ranks_b, metrics=("NDCG@10", "HR@10"), **kwargs) -> dict:
    """{metric: paired_difference} of two models' 0-based target ranks of the same users (in the same order), for
    each metric name (HR@K, NDCG@K, MRR@K); kwargs go to paired_difference (resamples, seed, level)."""
    from seqrec.eval.metrics import metric_values, parse_metric_name
    out = {}
    for name in metrics:
        kind, k = parse_metric_name(name)
        out[name] = paired_difference(metric_values(ranks_a, kind, k).numpy(), metric_values(ranks_b, kind, k).numpy(),
                                      **kwargs)
    return out


def bootstrap_means(d: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of `resamples` resamples of d with replacement: resample r takes the r-th n indices that a
    np.random.default_rng(seed) draws (so drawing in chunks gives the same means as one resample at a time)."""
    rng = np.random.default_rng(seed)
    n = len(d)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, _BOOTSTRAP_CHUNK):
        m = min(_BOOTSTRAP_CHUNK, resamples - start)
        means[start:start + m] = d[rng.integers(0, n, size=(m, n))].mean(axis=1)
    return means
