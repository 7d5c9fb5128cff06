"""Class-balanced hierarchical loss (the paper's Eq. 6), with the per-stage mask made explicit.

Every stage is trained with binary cross-entropy on its pooled logits. With balancing on, each
(sample, class) term carries a binary weight:
- positives (label 1, difficult included) always count;
- a negative is switched off at stage l when that stage already calls it easy (sigmoid < epsilon);
- hierarchy: walking from the top stage down, a negative switched off at a higher stage stays off at
  every lower stage: keep_l = keep_{l+1} AND NOT easy_l (keep starts all-true above the top stage).
The mask is computed from detached predictions, so it selects terms and carries no gradient.

Normalisation: each stage's loss is the sum of its active terms divided by their number (at least 1),
so switching easy negatives off rebalances toward positives and hard negatives instead of merely
shrinking the loss; the stage losses are summed, as the official code does.

Paper vs official code: the paper describes the easy-negative gate flowing from higher to lower
stages; the official code (MeioJane/CHR engine.py) masks each stage independently with `logit < -20`
(probability < 2e-9, which almost never fires, so it is plain BCE in practice) and averages over all
terms. We implement the paper's hierarchical rule with a probability threshold epsilon. The default,
model.config.DEFAULT_EPSILON = 0.01 (a negative the model already gives under 1% stops counting), won
a sweep on synthetic SIXray10 shards (bench/sweep_epsilon.py: 800 positives + 8,000 negatives, tiny
backbone, 8 epochs, 2 seeds; fused test mAP 24.3 at eps 0 (off), 25.3 at 0.01, 25.1 at 0.05, 23.8 at
0.1, 20.5 at 0.2): small thresholds help a little, large ones switch off negatives the model still
needs and hurt. The figures are in bench/RESULTS.md.
"""

import torch
import torch.nn.functional as F


def balance_masks(logits: list[torch.Tensor], targets: torch.Tensor, epsilon: float) -> list[torch.Tensor]:
    """Per-stage float masks [B, C] (1 = term counts), stages ordered top first."""
    positive = targets > 0
    keep = torch.ones_like(positive)
    masks = []
    for stage_logits in logits:
        easy = torch.sigmoid(stage_logits.detach().float()) < epsilon
        keep = keep & ~(easy & ~positive)
        masks.append((keep | positive).float())
    return masks


def chr_loss(
    logits: list[torch.Tensor], targets: torch.Tensor, *, balanced: bool, epsilon: float
) -> torch.Tensor:
    """Sum over stages of the (masked, active-term-normalised) binary cross-entropy."""
    targets = targets.float()
    masks = balance_masks(logits, targets, epsilon) if balanced else [None] * len(logits)
    total = logits[0].new_zeros((), dtype=torch.float32)
    for stage_logits, mask in zip(logits, masks, strict=True):
        bce = F.binary_cross_entropy_with_logits(stage_logits.float(), targets, reduction="none")
        if mask is None:
            total = total + bce.mean()
        else:
            total = total + (bce * mask).sum() / mask.sum().clamp(min=1)
    return total
