import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from model.metrics import (
    average_precision,
    box_distance,
    cam_peak,
    mean_ap,
    per_class_ap,
    pointing_accuracy,
    pointing_counts,
)


def test_ap_by_hand():
    # Ranked: pos, neg, pos, neg -> precision at the two positives: 1 and 2/3; AP = (1 + 2/3) / 2.
    assert average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx(5 / 6)
    # A tie between a positive and a negative is one threshold: precision 1/2 at recall 1.
    assert average_precision([0.5, 0.5], [1, 0]) == pytest.approx(0.5)


def test_ap_ignores_difficult_samples():
    # The difficult sample ranked first would halve the precision if it counted as a negative.
    scores, labels = [0.99, 0.9, 0.1], [0, 1, 0]
    assert average_precision(scores, labels, ignore=[True, False, False]) == pytest.approx(1.0)
    assert average_precision(scores, labels) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", range(20))
def test_ap_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels = rng.integers(0, 2, n)
    labels[0] = 1
    scores = rng.integers(0, 10, n) / 10 if seed % 2 else rng.random(n)  # with and without ties
    expected = average_precision_score(labels, scores)
    assert average_precision(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_per_class_ap_and_map_skip_classes_without_positives():
    scores = np.array([[0.9, 0.1], [0.2, 0.3]])
    labels = np.array([[1, 0], [0, 0]])
    aps = per_class_ap(scores, labels, np.zeros_like(labels, dtype=bool))
    assert aps[0] == 1.0 and np.isnan(aps[1])
    assert mean_ap(aps) == 1.0


def test_cam_peak_maps_to_original_pixels():
    cam = torch.zeros(4, 4)
    cam[1, 3] = 1.0  # column 3 of 4, row 1 of 4 -> right edge, upper part of a 400x200 image
    x, y = cam_peak([cam], width=400, height=200)
    assert 300 <= x < 400 and 50 <= y < 100


def test_pointing_by_hand():
    # Two images, class 0 (gun) present in both; CAM peaks at the top-left vs the bottom-right quadrant.
    cams = torch.zeros(2, 5, 2, 2)
    cams[0, 0, 0, 0] = 5.0
    cams[1, 0, 1, 1] = 5.0
    box = {"cls": "gun", "xmin": 0, "ymin": 0, "xmax": 50, "ymax": 50}
    meta = [{"width": 100, "height": 100, "boxes": [box]}, {"width": 100, "height": 100, "boxes": [box]}]
    labels = torch.zeros(2, 5)
    labels[:, 0] = 1
    labels[0, 1] = 1  # knife present but without a knife box: not counted
    counts = pointing_counts([cams], labels, meta)[0]  # the only tolerance: 0 px
    assert counts[0].tolist() == [1, 1] and counts[1:].sum() == 0
    acc = pointing_accuracy(counts)
    assert acc[0] == 0.5 and np.isnan(acc[1:]).all()


def test_fused_peak_is_the_maximal_response_across_scales_or_the_mean_peak():
    # A coarse CAM responding on the right, a fine one with a single strong spot on the left: the spot is
    # the strongest response of any scale, the right half the strongest on average.
    coarse = torch.tensor([[-1.0, 3.0], [-1.0, 3.0]])
    fine = torch.full((4, 4), 2.0)
    fine[0, 0] = 5.0
    x, _ = cam_peak([coarse, fine], width=100, height=100, fuse="max")
    assert x < 25
    x, _ = cam_peak([coarse, fine], width=100, height=100, fuse="mean")
    assert x >= 50


def test_box_distance_by_hand():
    box = {"xmin": 10, "ymin": 10, "xmax": 20, "ymax": 20}
    assert box_distance(14, 14, box) == 0  # inside
    assert box_distance(29, 14, box) == pytest.approx(9.5)  # centre at 29.5: 9.5 px right of the box
    assert box_distance(25, 25, box) == pytest.approx(np.hypot(5.5, 5.5))  # off the corner


def test_pointing_tolerance_counts_near_misses_as_hits():
    cams = torch.zeros(1, 5, 10, 10)
    cams[0, 0, 0, 9] = 5.0  # peak in the top-right cell of a 100x100 image: x in 90..99, y in 0..9
    box = {"cls": "gun", "xmin": 60, "ymin": 0, "xmax": 85, "ymax": 20}
    labels = torch.zeros(1, 5)
    labels[0, 0] = 1
    meta = [{"width": 100, "height": 100, "boxes": [box]}]
    x, _ = cam_peak([cams[0, 0]], 100, 100)
    distance = x + 0.5 - 85
    counts = pointing_counts([cams], labels, meta, tolerances=(0.0, distance - 0.1, distance, 15.0))
    assert [c[0].tolist() for c in counts] == [[0, 1], [0, 1], [1, 0], [1, 0]]
