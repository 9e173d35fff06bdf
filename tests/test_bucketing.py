"""Length bucketing must change how fast an epoch runs, not what it optimises (Batch.target_norm / token_norm).

The weight of a target position in an epoch's objective is 1 / (its batch's denominator). Dividing by the batch's
own target count K gives the positions of a batch of short sequences (few targets) more weight than the same
positions get in random batches; the fixed expected count does not."""
import numpy as np
import torch

from seqrec.data.batch import build_examples, causal_batch, epoch_batches, loss_norms, span_batch
from seqrec.data.dataset import InteractionData, leave_one_out
from seqrec.data.loader import BatchLoader
from seqrec.data.masking import ClozeMasking
from seqrec.losses import item_cross_entropy
from seqrec.models.mqsa_ted import ted_loss

B = 32


def _examples(mode="sequence", span_len=21, seed=0, n_users=1000):
    rng = np.random.default_rng(seed)
    # lengths from 4 to 40: long-tailed like real data, so bucketed batches differ a lot in their target counts
    seqs = [list(rng.integers(1, 200, size=int(n))) for n in np.minimum(4 + rng.geometric(0.08, n_users), 40)]
    split = leave_one_out(InteractionData.from_sequences("t", seqs, n_items=200))
    return split, build_examples(split, mode, span_len)


def _position_weights(split, ex, bucket, norms, epochs=1, causal=True, masking=None):
    """Total weight of each example's target positions per target, summed over `epochs` epochs: [n_examples]."""
    make = causal_batch if causal else span_batch
    loader = BatchLoader(lambda idx: make(split.data.items, ex, idx), masking, seed=1, prefetch=0, norms=norms)
    weight = np.zeros(len(ex))
    count = np.zeros(len(ex))
    for epoch in range(epochs):
        batches = epoch_batches(ex.lengths, B, 7, epoch, bucket=bucket)
        for idx, batch in zip(batches, loader.epoch(epoch, batches)):
            if len(idx) < B:            # the epoch's last, partial batch: weighted by its own size either way
                continue
            k = len(batch.target_index)
            denom = k if batch.target_norm is None else batch.target_norm
            rows = (batch.target_index // batch.items.shape[1]).numpy()
            np.add.at(weight, idx[rows], 1.0 / denom)
            np.add.at(count, idx[rows], 1.0)
    keep = count > 0
    return weight[keep] / count[keep], ex.lengths[keep]


def test_bucketed_batches_give_every_target_position_the_same_weight():
    split, ex = _examples()
    norms = loss_norms(ex, causal=True)
    w, _ = _position_weights(split, ex, bucket=True, norms=norms)
    expected = 1.0 / (B * float((ex.lengths - 1).mean()))
    np.testing.assert_allclose(w, expected, rtol=1e-12)


def test_fixed_norm_matches_random_batches_and_per_batch_mean_does_not():
    """Per length group, the mean weight of a position: random batches (no bucketing, the reference
    implementations' objective) vs bucketed batches with the fixed norm (equal within the randomness of random
    batches) vs bucketed batches divided by their own K (the old behaviour: short sequences overweighted)."""
    split, ex = _examples()
    short = ex.lengths <= np.quantile(ex.lengths, 0.25)
    long = ex.lengths >= np.quantile(ex.lengths, 0.75)

    def group_means(w, lengths):
        return np.array([w[lengths <= np.quantile(ex.lengths, 0.25)].mean(),
                         w[lengths >= np.quantile(ex.lengths, 0.75)].mean()])
    assert short.any() and long.any()
    random = group_means(*_position_weights(split, ex, bucket=False, norms=None, epochs=20))
    fixed = group_means(*_position_weights(split, ex, bucket=True, norms=loss_norms(ex, causal=True)))
    per_batch = group_means(*_position_weights(split, ex, bucket=True, norms=None))
    np.testing.assert_allclose(fixed, random, rtol=0.05)
    assert per_batch[0] / per_batch[1] > 2.0            # the old objective: short users' positions count more


def test_cloze_norm_is_the_expected_masked_count():
    """BERT4Rec's loader masking: rows x p x mean length is the expected number of masked positions, so the
    epoch's mean weight equals random batching's (1 / K on average)."""
    split, ex = _examples(mode="sequence", span_len=20)
    masking = ClozeMasking(prob=0.2, mask_token=201, n_items=200)
    norms = loss_norms(ex, causal=False, mask_prob=0.2)
    assert norms[0] == 0.2 * ex.lengths.mean()
    fixed, lengths = _position_weights(split, ex, bucket=True, norms=norms, causal=False, masking=masking)
    random, _ = _position_weights(split, ex, bucket=False, norms=None, epochs=5, causal=False, masking=masking)
    np.testing.assert_allclose(fixed, 1.0 / norms[0] / B, rtol=1e-12)
    np.testing.assert_allclose(fixed.mean(), random.mean(), rtol=0.05)


def test_prefix_examples_are_unchanged():
    """One target per row: the fixed norm is the batch size, exactly the old per-batch mean."""
    _, ex = _examples(mode="prefix")
    assert loss_norms(ex, causal=True)[0] == 1.0


def test_losses_divide_their_sum_by_the_norm():
    torch.manual_seed(0)
    h, emb = torch.randn(7, 8), torch.randn(30, 8)
    y = torch.randint(1, 30, (7,))
    naive = sum(-torch.log_softmax((h[i] @ emb[1:].T), 0)[y[i] - 1] for i in range(7))
    for chunk in (0, 3):
        got = item_cross_entropy(h, y, lambda q: q @ emb.T, chunk_rows=chunk, norm=11.0)
        torch.testing.assert_close(got, naive / 11.0)

    class Teacher:        # uniform teacher: expected embedding = mean of the item embeddings
        def expected_embedding(self, items, e):
            return e.mean(0).expand(len(items), -1)
    items = torch.randint(1, 30, (7,))
    q = torch.randn(7, 8)
    per_item = torch.logsumexp(q @ emb[1:].T, 1) - q @ emb[1:].mean(0)
    torch.testing.assert_close(ted_loss(items, q, emb[1:], Teacher(), 1.0, norm=11.0), per_item.sum() / 11.0)
    torch.testing.assert_close(ted_loss(items, q, emb[1:], Teacher(), 1.0), per_item.mean())


def test_emkd_divides_by_expected_counts_in_bucketed_batches():
    """EMKD masks inside the model: a bucketed batch (token_norm set) divides each view's CE by mask_prob x the
    expected input tokens; a batch's own counts otherwise. Equal when the batch holds exactly the expected tokens."""
    from seqrec.config import load_config
    from seqrec.data.batch import Batch
    from seqrec.models import DatasetInfo, build_model
    cfg = load_config(None, ["model.name=emkd", "model.d=16", "model.layers=1", "model.heads=1", "model.inner=32",
                             "model.max_len=10", "model.n_networks=2", "model.n_views=2", "model.mask_prob=0.5",
                             "model.dropout=0.0", "model.attn_dropout=0.0", "model.attr_weight=0.0"])
    model = build_model(cfg.model, DatasetInfo(30, None))
    items = torch.randint(1, 31, (6, 10))
    lengths = torch.full((6,), 10)
    batch = Batch(items, lengths)
    torch.manual_seed(0)
    own = model.loss(batch)["ce"]
    torch.manual_seed(0)
    rows_times_tokens = Batch(items, lengths, token_norm=60.0)        # 6 rows x 10 tokens
    expected = model.loss(rows_times_tokens)["ce"]
    torch.manual_seed(0)
    doubled = model.loss(Batch(items, lengths, token_norm=120.0))["ce"]
    # the draws were the same (same seed; the views are the loss's first draw): per view, own = S_v / c_v and
    # expected = S_v / (0.5 x 60), so for a single view their ratio is exactly c / 30
    torch.testing.assert_close(doubled, expected / 2)
    cfg.model.n_views = 1
    cfg.model.use_icl = cfg.model.use_ccl = False
    single = build_model(cfg.model, DatasetInfo(30, None))
    torch.manual_seed(0)
    own = single.loss(batch)["ce"]
    torch.manual_seed(0)
    expected = single.loss(rows_times_tokens)["ce"]
    torch.manual_seed(0)
    chosen = single.make_views(items, lengths, None)[3]
    assert 0 < int(chosen.sum()) != 30                               # the two normalisers differ here
    torch.testing.assert_close(expected / own, chosen.sum().float() / 30.0)
