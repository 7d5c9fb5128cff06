import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from model.metrics import (
    average_precision,
    box_distance,
    cam_peak,
    class_separation,
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
    # 0/1 flags, not indices: 0.9 (positive), 0.5, 0.1 (positive) stay; AP = (1 + 2/3) / 2
    assert average_precision([0.99, 0.9, 0.5, 0.1], [0, 1, 0, 1], ignore=[1, 0, 0, 0]) == pytest.approx(5 / 6)


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
    x, y = cam_peak([coarse, fine], width=100, height=100, fuse="max")
    assert x < 25 and y < 25
    assert cam_peak([coarse, fine], width=100, height=100) == (x, y)  # max by default
    x, _ = cam_peak([coarse, fine], width=100, height=100, fuse="mean")
    assert x >= 50


def test_cam_peak_upsamples_with_pixel_centres_by_hand():
    # Output pixel x samples the 2-cell CAM at (x + 0.5) * 2 / 8 - 0.5 (align_corners=False): the right cell's
    # centre, 1, from x = 5.5 on, so pixels 6 and 7 tie at the maximum and the first wins.
    assert cam_peak([torch.tensor([[0.0, 1.0]])], width=8, height=1) == (6, 0)


def test_box_distance_by_hand():
    box = {"xmin": 10, "ymin": 10, "xmax": 20, "ymax": 20}
    assert box_distance(14, 14, box) == 0  # inside
    assert box_distance(29, 14, box) == pytest.approx(9.5)  # centre at 29.5: 9.5 px right of the box
    assert box_distance(25, 25, box) == pytest.approx(np.hypot(5.5, 5.5))  # off the corner
    assert box_distance(4, 14, box) == pytest.approx(5.5)  # centre at 4.5: 5.5 px left of the box
    assert box_distance(14, 2, box) == pytest.approx(7.5)  # 7.5 px above it


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


def test_per_class_ap_leaves_each_class_difficult_samples_out():
    # Class 0: a difficult sample ranked first; counted as a negative it would halve the AP.
    scores = np.array([[0.9, 0.9], [0.5, 0.5]])
    labels = np.array([[0, 1], [1, 0]])
    difficult = np.array([[True, False], [False, False]])
    assert per_class_ap(scores, labels, difficult).tolist() == [1.0, 1.0]
    assert per_class_ap(scores, labels, np.zeros((2, 2), bool)).tolist() == [0.5, 1.0]


def test_mean_ap_without_any_class_is_nan_and_quiet(recwarn):
    assert np.isnan(mean_ap([np.nan, np.nan]))
    assert not recwarn.list  # np.nanmean of nothing but nan would warn "Mean of empty slice"


def test_pointing_counts_and_accuracy_over_several_images_by_hand():
    # Every CAM peaks in the top-left quadrant of a 100x100 image.
    cams = torch.zeros(4, 5, 2, 2)
    cams[:, :, 0, 0] = 5.0
    top_left = {"xmin": 0, "ymin": 0, "xmax": 50, "ymax": 50}
    labels = torch.zeros(4, 5)
    labels[:3, 0] = 1
    labels[3, 1] = 1
    meta = [
        {"width": 100, "height": 100, "boxes": [{"cls": "gun", **top_left}]},  # gun hit
        {"width": 100, "height": 100, "boxes": [{"cls": "gun", **top_left}]},  # gun hit
        {"width": 100, "height": 100},  # a train image: no boxes in its meta, not counted
        # a gun box on an image not labelled gun is not counted; its knife (class index 1) is a hit
        {"width": 100, "height": 100, "boxes": [{"cls": "gun", **top_left}, {"cls": 1, **top_left}]},
    ]
    counts = pointing_counts([cams], labels, meta)[0]
    assert counts.dtype == np.int64
    assert counts.tolist() == [[2, 0], [1, 0], [0, 0], [0, 0], [0, 0]]
    assert pointing_accuracy(counts)[:2].tolist() == [1.0, 1.0]
    assert pointing_accuracy(np.array([[0, 1], [1, 2], [0, 0]]))[:2].tolist() == [0.0, 1 / 3]


def test_pointing_counts_fuse_the_stages_by_max_unless_told_mean():
    coarse = torch.zeros(1, 5, 2, 2)
    coarse[0, 0] = torch.tensor([[-1.0, 3.0], [-1.0, 3.0]])
    fine = torch.full((1, 5, 4, 4), 2.0)
    fine[0, 0, 0, 0] = 5.0  # the strongest response of any scale, top left; the right half is on average
    labels = torch.zeros(1, 5)
    labels[0, 0] = 1
    box = {"cls": "gun", "xmin": 0, "ymin": 0, "xmax": 25, "ymax": 25}
    meta = [{"width": 100, "height": 100, "boxes": [box]}]
    assert pointing_counts([coarse, fine], labels, meta)[0, 0].tolist() == [1, 0]
    assert pointing_counts([coarse, fine], labels, meta, fuse="mean")[0, 0].tolist() == [0, 1]


def test_class_separation_by_hand():
    # Three positives P0 (gun), P1 (knife, a difficult gun), P2 (gun) and one negative N, which is left out:
    # counted, its top scores would lower both APs. Four classes rank the positives P0 > P1 > P2, scissors
    # the other way round.
    ranked = [0.9, 0.5, 0.1, 0.95]
    scores = np.array([ranked] * 4 + [[0.1, 0.5, 0.9, 0.95]]).T
    labels = np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    difficult = np.zeros((4, 5), bool)
    difficult[1, 0] = True
    sep = class_separation(scores, labels, difficult)
    assert sep["count"] == 3
    assert sep["ap"][:2].tolist() == [1.0, 0.5] and np.isnan(sep["ap"][2:]).all()
    assert sep["map"] == 0.75
    assert sep["chance"].tolist() == pytest.approx([2 / 3, 1 / 3, 0, 0, 0])
    # Spearman: +1 for the 12 ordered pairs among the four alike classes, -1 for the 8 with scissors.
    assert sep["spearman"] == pytest.approx((12 - 8) / 20)


def test_class_separation_without_positives(recwarn):
    sep = class_separation(np.full((2, 5), 0.5), np.zeros((2, 5)), np.zeros((2, 5), bool))
    assert sep["count"] == 0 and np.isnan(sep["map"]) and np.isnan(sep["chance"]).all()
    assert not recwarn.list  # no mean of an empty slice


def test_class_separation_of_two_positives():
    # Two positives: each pair of classes ranks them alike (+1) or reversed (-1, the 8 pairs with scissors).
    scores = np.array([[0.9, 0.9, 0.9, 0.9, 0.1], [0.1, 0.1, 0.1, 0.1, 0.9]])
    labels = np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]])
    sep = class_separation(scores, labels, np.zeros((2, 5), bool))
    assert sep["spearman"] == pytest.approx((12 - 8) / 20)
