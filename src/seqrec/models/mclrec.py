"""MCLRec (Qin et al., SIGIR 2023): CL4SRec plus two learnable model augmenters trained in a separate step.

Views: h1 = f(aug1(s)), h2 = f(aug2(s)) (data augmentation, CL4SRec's), z1 = w1(h1), z2 = w2(h2) (model augmenters:
MLP d -> 32 -> 16 -> d with GELU, L2-normalised rows).
  L_cl1 = NCE(h1, h2);  L_cl2 = NCE(h1, z2) + NCE(h2, z1) + NCE(z1, z2)
  Reg   = R(h1, z2) + R(h2, z1) + R(z1, z2)         (losses.contrastive_margin_regularizer)
Per batch (`manual_step`, same augmented views in all three steps, fresh forward with fresh dropout each step):
  1. encoder step:   CE + lambda * L_cl1 + beta * (L_cl2 + reg_weight * Reg), Adam on the encoder only
  2. augmenter step: L_cl2 + reg_weight * Reg, Adam on w1, w2 only (encoder forward under no_grad)
  3. encoder step again (same loss as 1)
`joint: true` (MCLRec-J): one optimiser over everything, one step on the step-1 loss.
Ablation switches: cl_weight 0 (without L_cl1), use_cl2 false, use_reg false, shared_augmenter true.

The three steps use the trainer's manual-optimisation handle (seqrec.train.manual.ManualOptimization): it runs
autocast, the fp16 gradient scaler, clipping and, under torchrun, the gradient averaging of the stepped parameters
(three steps over different parameter subsets do not fit DDP's one-forward-one-backward reducer). MCLRec-J (joint)
is an ordinary automatic-optimisation model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.config import check_range
from seqrec.losses import contrastive_margin_regularizer
from seqrec.models import register
from seqrec.models.base import make_optimizer
from seqrec.models.cl4srec import CL4SRec, CL4SRecConfig, Views


@dataclass
class MCLRecConfig(CL4SRecConfig):
    name: str = "mclrec"
    cl_weight: float = 0.0
    """lambda: weight of L_cl1 = NCE(h1, h2) in the encoder loss (0 on Beauty and ML-1M)."""
    beta: float = 0.05
    """Weight of L_cl2 + reg_weight * Reg in the encoder loss."""
    reg_weight: float = 0.1
    """Weight of the regulariser Reg inside the model-augmentation loss (0.1 in the official code)."""
    use_cl2: bool = True
    """Include L_cl2 (ablation 'without L_cl2': false)."""
    use_reg: bool = True
    """Include the regulariser Reg (ablation 'without R': false)."""
    shared_augmenter: bool = False
    """One augmenter MLP for both views (ablation 'shared augmenter')."""
    joint: bool = False
    """MCLRec-J: one optimiser over encoder and augmenters, one step per batch on the step-1 loss."""
    aug_hidden: list[int] = field(default_factory=lambda: [32, 16])
    """Hidden widths of the augmenter MLP (d -> 32 -> 16 -> d)."""
    aug_lr: float | None = None
    """Learning rate of the augmenter optimiser (None: train.lr)."""

    def validate(self) -> None:
        super().validate()
        check_range("model.beta", self.beta, lo=0)
        check_range("model.reg_weight", self.reg_weight, lo=0)
        for i, h in enumerate(self.aug_hidden):
            check_range(f"model.aug_hidden[{i}]", h, lo=1)
        if self.aug_lr is not None:
            check_range("model.aug_lr", self.aug_lr, lo=0, lo_open=True)


class Augmenter(nn.Module):
    """MLP d -> hidden... -> d with GELU between layers, rows L2-normalised."""

    def __init__(self, d: int, hidden: list[int]):
        super().__init__()
        dims = [d, *hidden, d]
        layers: list[nn.Module] = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.GELU())
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(h), dim=-1)


@register
class MCLRec(CL4SRec):
    name = "mclrec"
    Config = MCLRecConfig
    objective = "causal"

    def __init__(self, cfg: MCLRecConfig, info):
        super().__init__(cfg, info)          # the SASRec encoder (N(0, 0.02) init)
        # augmenters keep PyTorch's default Linear init; built after the encoder's init
        self.aug1 = Augmenter(cfg.d, list(cfg.aug_hidden))
        self.aug2 = self.aug1 if cfg.shared_augmenter else Augmenter(cfg.d, list(cfg.aug_hidden))

    @property
    def automatic_optimization(self) -> bool:          # MCLRec-J: one loss, one step; MCLRec: three steps
        return self.cfg.joint

    compiled_methods = ("loss", "augmenter_loss")

    @property
    def uses_augmenters(self) -> bool:
        return self.cfg.use_cl2 or self.cfg.use_reg

    def augmenter_parameters(self) -> list[nn.Parameter]:
        seen = {}
        for m in (self.aug1, self.aug2):
            for p in m.parameters():
                seen[id(p)] = p
        return list(seen.values())

    def encoder_parameters(self) -> list[nn.Parameter]:
        aug = {id(p) for p in self.augmenter_parameters()}
        return [p for p in self.parameters() if id(p) not in aug]

    def configure_optimizers(self, train_cfg) -> list[torch.optim.Optimizer]:
        if self.cfg.joint:
            return [make_optimizer(self.parameters(), train_cfg)]
        enc = make_optimizer(self.encoder_parameters(), train_cfg)
        aug = make_optimizer(self.augmenter_parameters(), train_cfg, lr=self.cfg.aug_lr)
        return [enc, aug]

    # --- losses -------------------------------------------------------------------------------------------------
    def model_aug_terms(self, h1: torch.Tensor, h2: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_cl2 and Reg on (h1, h2, z1 = w1(h1), z2 = w2(h2)); only the switched-on terms."""
        z1, z2 = self.aug1(h1), self.aug2(h2)
        pairs = ((h1, z2), (h2, z1), (z1, z2))
        out = {}
        if self.cfg.use_cl2:
            out["cl2"] = sum(self.nce(a, b) for a, b in pairs)
        if self.cfg.use_reg:
            out["reg"] = sum(contrastive_margin_regularizer(a, b, self.cfg.tau) for a, b in pairs)
        return out

    def _meta_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        zero = next(iter(terms.values())) * 0.0 if terms else torch.zeros(())
        return terms.get("cl2", zero) + self.cfg.reg_weight * terms.get("reg", zero)

    def loss(self, batch, views: Views | None = None) -> dict[str, torch.Tensor]:
        """The encoder (step 1 / 3) loss: CE + lambda L_cl1 + beta (L_cl2 + reg_weight Reg)."""
        views = views if views is not None else self.augment(batch)
        h, y, h1, h2 = self.encode_with_views(batch, views)
        ce = self.ce_loss(h, y, batch.target_norm)
        total = ce
        out = {"ce": ce.detach()}
        if self.cfg.cl_weight > 0:
            cl1 = self.nce(h1, h2)
            total = total + self.cfg.cl_weight * cl1
            out["cl1"] = cl1.detach()
        if self.uses_augmenters and self.cfg.beta > 0:
            terms = self.model_aug_terms(h1, h2)
            total = total + self.cfg.beta * self._meta_loss(terms)
            out.update({k: v.detach() for k, v in terms.items()})
        out["loss"] = total
        return out

    def augmenter_loss(self, batch, views: Views) -> dict[str, torch.Tensor]:
        """Step 2: L_cl2 + reg_weight Reg with the encoder run under no_grad (no encoder graph)."""
        with torch.no_grad():
            _, _, h1, h2 = self.encode_with_views(batch, views, original=False)
        terms = self.model_aug_terms(h1, h2)
        return {"loss": self._meta_loss(terms), **{k: v.detach() for k, v in terms.items()}}

    # --- the three-step update ----------------------------------------------------------------------------------
    def manual_step(self, batch, opt) -> dict[str, torch.Tensor]:
        """Encoder, augmenter, encoder steps on the same views through the trainer's handle `opt`. Returns step 1's
        terms (the loss before this batch's updates) plus 'aug_loss' (step 2's loss), all detached."""
        views = self.augment(batch)                     # the same views in every step
        enc_opt, aug_opt = opt.optimizers
        enc_params, aug_params = self.encoder_parameters(), self.augmenter_parameters()

        def update(loss_fn, params, optimizer) -> dict[str, torch.Tensor]:
            with opt.autocast():
                terms = loss_fn(batch, views)
            opt.zero_grad()
            opt.backward(terms["loss"], params)
            opt.step(optimizer, params)
            return terms

        terms = update(self.loss, enc_params, enc_opt)                                   # step 1
        if self.uses_augmenters:                                                         # step 2
            terms["aug_loss"] = update(self.augmenter_loss, aug_params, aug_opt)["loss"].detach()
        update(self.loss, enc_params, enc_opt)                                           # step 3
        opt.zero_grad()
        terms["loss"] = terms["loss"].detach()
        return terms
