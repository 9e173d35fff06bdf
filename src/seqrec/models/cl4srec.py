"""CL4SRec (Xie et al., ICDE 2022) on the SASRec encoder: next-item cross entropy on the original sequence plus
lambda * NT-Xent between two data-augmented views (crop / mask / reorder, two different operators per sequence).

The augmentations (seqrec.data.augment) run inside `loss`, vectorised on the batch's device with the global torch
RNG, so a resumed run draws the same views. The original sequence and both views go through the encoder in one call
([3B, T] rows). Masked views keep their length: masked items become the padding id 0, are hidden from attention as
keys, and the view's representation is still the output at position length - 1 (see `encode_views`).

With train.examples='prefix' every prefix is one example: only its last position is a CE target and the two views
are views of the prefix. With train.examples='sequence' one row per user: CE at every position, and the views are
views of the whole (max_len-cut) input sequence, one contrastive pair per user. See docs/methods/mclrec.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from seqrec.config import check_choice, check_range
from seqrec.data.augment import two_views
from seqrec.losses import info_nce
from seqrec.models import register
from seqrec.losses import rows_at
from seqrec.models.base import last_position
from seqrec.models.sasrec import SASRec, SASRecConfig
from seqrec.nn import attention_mask


@dataclass
class CL4SRecConfig(SASRecConfig):
    name: str = "cl4srec"
    cl_weight: float = 0.1
    """lambda: weight of the NT-Xent loss between the two data-augmented views (L_cl1)."""
    tau: float = 1.0
    """Temperature of the NT-Xent loss."""
    similarity: str = "dot"
    """Similarity of the NT-Xent loss: dot | cosine."""
    crop_ratio: float = 0.5
    """crop keeps a random contiguous window of max(1, floor(crop_ratio * len)) items."""
    mask_ratio: float = 0.5
    """mask sets floor(mask_ratio * len) random positions to the padding id 0 (hidden from attention)."""
    reorder_ratio: float = 0.8
    """reorder shuffles a random contiguous span of floor(reorder_ratio * len) items."""

    def validate(self) -> None:
        super().validate()
        check_choice("model.similarity", self.similarity, ("dot", "cosine"))
        check_range("model.cl_weight", self.cl_weight, lo=0)
        check_range("model.tau", self.tau, lo=0, lo_open=True)
        check_range("model.crop_ratio", self.crop_ratio, lo=0, hi=1, lo_open=True)
        check_range("model.mask_ratio", self.mask_ratio, lo=0, hi=1, hi_open=True)
        check_range("model.reorder_ratio", self.reorder_ratio, lo=0, hi=1)


@dataclass
class Views:
    """Two augmented views of a batch (right-padded, width <= the batch's)."""
    items1: torch.Tensor
    lengths1: torch.Tensor
    items2: torch.Tensor
    lengths2: torch.Tensor


def _pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1])) if x.shape[1] < width else x


@register
class CL4SRec(SASRec):
    name = "cl4srec"
    Config = CL4SRecConfig
    objective = "causal"

    # --- pieces MCLRec reuses ----------------------------------------------------------------------------------
    def augment(self, batch, generator: torch.Generator | None = None) -> Views:
        c = self.cfg
        items1, lengths1, items2, lengths2, _ = two_views(batch.items, batch.lengths, c.crop_ratio, c.mask_ratio,
                                                          c.reorder_ratio, generator=generator)
        return Views(items1, lengths1, items2, lengths2)

    def encode_views(self, items: torch.Tensor, lengths: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """[B, T, d] like SASRec.encode (or [B, d] at position length - 1 with last_only), but rows may contain
        masked items (id 0 before position length).

        Masked items are hidden as keys (like padding) but their positions keep their outputs, so the output at
        length - 1 exists even when the last item is masked (official: gather at the last index). Their input is
        norm(E[0] + P[t]) (E[0]: the padding row) as in the official RecBole model (padding rows, t >= length,
        stay zero). A query with no visible key (e.g. position 0 masked) falls back to attending to the positions
        < length before it, which only avoids NaN: such positions are never keys. On rows without masked items
        this equals SASRec.encode."""
        t = items.shape[1]
        inside = torch.arange(t, device=items.device)[None, :] < lengths[:, None]
        allowed = attention_mask(items != 0, causal=True)
        empty = ~allowed.any(dim=-1, keepdim=True)
        mask = allowed | (empty & attention_mask(inside, causal=True))
        return self.encoder(self.embed(items, lengths, keep=inside), inside, attn_mask=mask,
                            only=lengths - 1 if last_only else None)

    def encode_with_views(self, batch, views: Views, original: bool = True) -> tuple[
            torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """One encoder call over [original; view1; view2]. Returns (h, y, h1, h2): the original's hidden rows at
        its targets h [K, d] and the targets y [K] (both None with original=False), and h1, h2 [B, d], each view's
        output at its last position. When the last position is the only target ('prefix' examples:
        batch.targets_at == 'last') every row needs only its last output and the encoder computes just that
        (TransformerEncoder's `only`). The CE of (h, y) is SASRec's `ce_loss`."""
        b = views.items1.shape[0]
        last_only = not original or batch.targets_at == "last"
        parts = ([batch.items] if original else []) + [views.items1, views.items2]
        lens = ([batch.lengths] if original else []) + [views.lengths1, views.lengths2]
        width = max(p.shape[1] for p in parts)
        items = torch.cat([_pad_to(p, width) for p in parts])
        lengths = torch.cat(lens)
        hidden = self.encode_views(items, lengths, last_only=last_only)
        last = hidden if last_only else last_position(hidden, lengths)
        if not original:
            return None, None, last[:b], last[b:]
        if last_only:
            h = last[:b]
        else:
            h = rows_at(hidden[:b, :batch.items.shape[1]], batch.target_index)
        return h, batch.target_items, last[b:2 * b], last[2 * b:]

    def nce(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return info_nce(a, b, self.cfg.tau, self.cfg.similarity)

    # --- the protocol ------------------------------------------------------------------------------------------
    def loss(self, batch, views: Views | None = None) -> dict[str, torch.Tensor]:
        views = views if views is not None else self.augment(batch)
        h, y, h1, h2 = self.encode_with_views(batch, views)
        ce = self.ce_loss(h, y, batch.target_norm)
        cl1 = self.nce(h1, h2)
        total = ce + self.cfg.cl_weight * cl1
        return {"loss": total, "ce": ce.detach(), "cl1": cl1.detach()}
