import math

import pytest
import torch
import torch.nn.functional as F

from model.config import OFFICIAL_EPSILON, ModelConfig
from model.loss import balance_masks, chr_loss


def logit(p):
    return math.log(p / (1 - p))


def softplus(x):
    """BCE of a negative with logit x; a positive's is softplus(-x)."""
    return math.log1p(math.exp(x))


def stage_logits(rows):
    """Per stage (top first) probabilities of one sample -> logits [1, C]."""
    return [torch.tensor([[logit(p) for p in row]]) for row in rows]


def cfg(rule="drop-easy", normalisation="mean", epsilon=0.1, variant="chr"):
    return ModelConfig(backbone="tiny", variant=variant, loss_rule=rule, loss_normalisation=normalisation,
                       epsilon=epsilon)


# One sample; class 0 positive, classes 1..4 negatives; stages top first; epsilon 0.1.
TARGETS = torch.tensor([[1.0, 0, 0, 0, 0]])
PROBS = [
    [0.01, 0.05, 0.5, 0.5, 0.5],  # top: class 1 easy (p < eps); the positive counts however low
    [0.5, 0.5, 0.05, 0.5, 0.05],  # mid: class 2 and class 4 easy here
    [0.5, 0.5, 0.5, 0.05, 0.09],  # low: classes 3 and 4 easy here
]


def test_drop_easy_rule_by_hand():
    # A negative leaves once a stage calls it easy, and stays out of every lower stage.
    masks = balance_masks(stage_logits(PROBS), TARGETS, "drop-easy", 0.1)
    assert masks[0].tolist() == [[1, 0, 1, 1, 1]]
    assert masks[1].tolist() == [[1, 0, 0, 1, 0]]  # class 1 stays off although not easy here
    assert masks[2].tolist() == [[1, 0, 0, 0, 0]]


def test_paper_rule_by_hand():
    # Literally: a negative counts only while its prediction is below epsilon, at this stage and above.
    masks = balance_masks(stage_logits(PROBS), TARGETS, "paper", 0.1)
    assert masks[0].tolist() == [[1, 1, 0, 0, 0]]
    assert masks[1].tolist() == [[1, 0, 0, 0, 0]]  # class 1 above eps here: off, and off below
    assert masks[2].tolist() == [[1, 0, 0, 0, 0]]  # class 4 is below eps here but was switched off above


def test_official_rule_by_hand():
    # Each stage on its own: the negatives under epsilon drop out, no hierarchy.
    masks = balance_masks(stage_logits(PROBS), TARGETS, "official", 0.1)
    assert masks[0].tolist() == [[1, 0, 1, 1, 1]]
    assert masks[1].tolist() == [[1, 1, 0, 1, 0]]  # class 1 counts again at the middle stage
    assert masks[2].tolist() == [[1, 1, 1, 0, 0]]


def test_official_epsilon_is_the_authors_logit_minus_20():
    targets = torch.tensor([[1.0, 0, 0, 0]])
    logits = [torch.tensor([[-30.0, -20.0, -20.001, -19.0]])]  # positive, on the bound, just under, above
    assert balance_masks(logits, targets, "official", OFFICIAL_EPSILON)[0].tolist() == [[1, 1, 0, 1]]


def test_mean_normalisation_divides_by_all_terms_by_hand():
    probs = [0.8, 0.01, 0.3, 0.3, 0.3]  # class 1 switched off by drop-easy at eps 0.1
    logits = [torch.tensor([[logit(p) for p in probs]], requires_grad=True)]
    loss = chr_loss(logits, TARGETS, cfg(normalisation="mean"))
    assert loss.item() == pytest.approx((-math.log(0.8) - 3 * math.log(0.7)) / 5, abs=1e-6)
    loss.backward()
    assert logits[0].grad[0, 1] == 0  # the masked term gets no gradient
    assert logits[0].grad[0, 2] != 0


def test_active_normalisation_divides_by_counted_terms_by_hand():
    probs = [0.8, 0.01, 0.3, 0.3, 0.3]
    logits = [torch.tensor([[logit(p) for p in probs]])]
    loss = chr_loss(logits, TARGETS, cfg(normalisation="active"))
    assert loss.item() == pytest.approx((-math.log(0.8) - 3 * math.log(0.7)) / 4, abs=1e-6)


def test_paper_rule_loss_over_two_stages_by_hand():
    # Top: class 1 (p 0.05 < 0.1) counts, classes 2-4 (0.5) do not. Mid: class 1 is 0.5 -> off.
    rows = [[0.9, 0.05, 0.5, 0.5, 0.5], [0.6, 0.5, 0.05, 0.05, 0.05]]
    loss = chr_loss(stage_logits(rows), TARGETS, cfg(rule="paper"))
    top = (-math.log(0.9) - math.log(0.95)) / 5
    mid = -math.log(0.6) / 5
    assert loss.item() == pytest.approx(top + mid, abs=1e-6)


def test_official_rule_loss_is_the_authors_masked_mean_by_hand():
    # engine.py: torch.mean(mask * bce) per stage, stages summed; mask drops negatives with logit < -20.
    logits = [torch.tensor([[2.0, -25.0, 0.0, -1.0]]), torch.tensor([[-1.0, 0.0, -21.0, 3.0]])]
    targets = torch.tensor([[1.0, 0, 0, 0]])
    loss = chr_loss(logits, targets, cfg(rule="official", epsilon=OFFICIAL_EPSILON))
    top = (softplus(-2.0) + softplus(0.0) + softplus(-1.0)) / 4
    mid = (softplus(1.0) + softplus(0.0) + softplus(3.0)) / 4
    assert loss.item() == pytest.approx(top + mid, abs=1e-6)


def test_unbalanced_variants_are_summed_mean_bce_whatever_the_rule():
    torch.manual_seed(0)
    targets = torch.randint(0, 2, (4, 5)).float()
    logits = [torch.randn(4, 5) * 5 for _ in range(3)]
    expected = sum(F.binary_cross_entropy_with_logits(x, targets) for x in logits)
    for rule in ("drop-easy", "paper", "official"):
        assert torch.allclose(chr_loss(logits, targets, cfg(rule=rule, epsilon=0.5, variant="hr")), expected)


def test_zero_epsilon_switches_nothing_off_under_drop_easy():
    torch.manual_seed(0)
    targets = torch.randint(0, 2, (4, 5)).float()
    logits = [torch.randn(4, 5) * 30 for _ in range(3)]
    for normalisation in ("mean", "active"):
        balanced = chr_loss(logits, targets, cfg(epsilon=0.0, normalisation=normalisation))
        assert torch.allclose(balanced, chr_loss(logits, targets, cfg(variant="hr")))


def test_epsilon_one_makes_every_negative_easy():
    # model.config allows epsilon < 1 only; balance_masks takes 1 (logit +inf): the positive alone counts.
    logits = [torch.tensor([[logit(p) for p in [0.8, 0.3, 0.3, 0.3, 0.999]]])]
    assert balance_masks(logits, TARGETS, "drop-easy", 1.0)[0].tolist() == [[1, 0, 0, 0, 0]]


def test_active_normalisation_of_a_single_counted_term():
    logits = [torch.tensor([[logit(p) for p in [0.8, 0.3, 0.3, 0.3, 0.3]]])]  # every negative under 0.9
    loss = chr_loss(logits, TARGETS, cfg(epsilon=0.9, normalisation="active"))
    assert loss.item() == pytest.approx(-math.log(0.8), abs=1e-6)  # one kept term, divided by 1
