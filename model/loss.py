"""Class-balanced hierarchical loss (the paper's Eq. 6): per-stage binary cross-entropy with a binary
weight per (sample, class) term, under one of three named rules.

Positives (label 1, difficult included) always count. A negative's fate depends on the rule, judged on
each stage's detached prediction against epsilon (compared as logits, so epsilon = sigmoid(-20) is
exactly the authors' `logit < -20`):
- `drop-easy` (our default): a negative stops counting once a stage calls it easy (p < epsilon), and
  once off at a higher stage it stays off below: the direction of the authors' code (and of the paper's
  stated aim, "the noise introduced by easy negative samples") with the hierarchy of the paper's text.
- `paper`: the paper's text read literally: at the top stage a negative counts "only if the prediction
  is smaller than a fixed threshold epsilon"; below, only if that holds there too and at every higher
  stage ("if a class is switched off at some level, it will never be considered in each of the lower
  levels").
- `official`: the authors' code (MeioJane/CHR engine.py): each stage on its own drops the negatives
  whose logit is below -20 (epsilon = sigmoid(-20)); no hierarchy.
The masks select terms and carry no gradient.

Normalisation of each stage's loss: `mean` divides the kept terms' sum by all B x C terms (the official
code's torch.mean, so the loss and the effective learning rate stay those of plain BCE however many terms
are off); `active` divides by the number of kept terms (switching negatives off then re-weights toward the
rest). The paper's Eq. 6 sums over classes and averages over samples and stages: `mean` times C / L, a
constant the learning rate absorbs. Stage losses are summed, as the official code does.
"""

import math

import torch
import torch.nn.functional as F

from model.config import ModelConfig

HIERARCHICAL = {"drop-easy": True, "paper": True, "official": False}


def logit_threshold(epsilon: float) -> float:
    """logit(epsilon), with 0 and 1 mapped to -inf and +inf."""
    if epsilon <= 0:
        return -math.inf
    if epsilon >= 1:
        return math.inf
    return math.log(epsilon) - math.log1p(-epsilon)


def balance_masks(logits: list[torch.Tensor], targets: torch.Tensor, rule: str, epsilon: float
                  ) -> list[torch.Tensor]:
    """Per-stage float masks [B, C] (1 = the term counts), stages ordered top first."""
    threshold = logit_threshold(epsilon)
    positive = targets > 0
    keep = torch.ones_like(positive)
    masks = []
    for stage_logits in logits:
        below = stage_logits.detach().float() < threshold
        counts_here = positive | (below if rule == "paper" else ~below)
        keep = keep & counts_here if HIERARCHICAL[rule] else counts_here
        masks.append(keep.float())
    return masks


def stage_loss(bce: torch.Tensor, mask: torch.Tensor | None, normalisation: str) -> torch.Tensor:
    if mask is None:
        return bce.mean()
    kept = (bce * mask).sum()
    return kept / (bce.numel() if normalisation == "mean" else mask.sum().clamp(min=1))


def chr_loss(logits: list[torch.Tensor], targets: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Sum over stages of the binary cross-entropy, masked by cfg's rule when the variant is balanced."""
    targets = targets.float()
    if cfg.balanced:
        masks = balance_masks(logits, targets, cfg.loss_rule, cfg.epsilon)
    else:
        masks = [None] * len(logits)
    total = logits[0].new_zeros((), dtype=torch.float32)
    for stage_logits, mask in zip(logits, masks, strict=True):
        bce = F.binary_cross_entropy_with_logits(stage_logits.float(), targets, reduction="none")
        total = total + stage_loss(bce, mask, cfg.loss_normalisation)
    return total
