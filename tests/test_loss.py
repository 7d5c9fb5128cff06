import math

import torch
import torch.nn.functional as F

from model.loss import balance_masks, chr_loss


def logit(p):
    return math.log(p / (1 - p))


def test_masks_follow_the_hierarchical_rule_by_hand():
    # One sample, classes: 0 positive; 1..4 negatives. Stages top first, epsilon 0.1.
    targets = torch.tensor([[1.0, 0, 0, 0, 0]])
    probs = [
        [0.01, 0.05, 0.5, 0.5, 0.5],  # top: class 1 easy; class 0 positive (always counts even if "easy")
        [0.5, 0.5, 0.05, 0.5, 0.5],  # mid: class 1 stays off although not easy here; class 2 goes off
        [0.5, 0.5, 0.5, 0.05, 0.09],  # low: classes 3 and 4 go off; 1 and 2 stay off
    ]
    logits = [torch.tensor([[logit(p) for p in row]]) for row in probs]
    masks = balance_masks(logits, targets, epsilon=0.1)
    assert masks[0].tolist() == [[1, 0, 1, 1, 1]]
    assert masks[1].tolist() == [[1, 0, 0, 1, 1]]
    assert masks[2].tolist() == [[1, 0, 0, 0, 0]]


def test_loss_normalises_by_active_terms_by_hand():
    targets = torch.tensor([[1.0, 0, 0, 0, 0]])
    probs = [0.8, 0.01, 0.3, 0.3, 0.3]
    logits = [torch.tensor([[logit(p) for p in probs]], requires_grad=True)]
    loss = chr_loss(logits, targets, balanced=True, epsilon=0.1)
    expected = (-math.log(0.8) - 3 * math.log(0.7)) / 4  # class 1 switched off: 4 active terms
    assert abs(loss.item() - expected) < 1e-6
    loss.backward()
    assert logits[0].grad[0, 1] == 0  # the masked term gets no gradient
    assert logits[0].grad[0, 2] != 0


def test_unbalanced_loss_is_summed_mean_bce_over_stages():
    torch.manual_seed(0)
    targets = torch.randint(0, 2, (4, 5)).float()
    logits = [torch.randn(4, 5) for _ in range(3)]
    expected = sum(F.binary_cross_entropy_with_logits(x, targets) for x in logits)
    assert torch.allclose(chr_loss(logits, targets, balanced=False, epsilon=0.5), expected)


def test_zero_epsilon_switches_nothing_off():
    torch.manual_seed(0)
    targets = torch.randint(0, 2, (4, 5)).float()
    logits = [torch.randn(4, 5) * 30 for _ in range(3)]
    balanced = chr_loss(logits, targets, balanced=True, epsilon=0.0)
    assert torch.allclose(balanced, chr_loss(logits, targets, balanced=False, epsilon=0.0))
