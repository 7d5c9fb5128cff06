"""The train epoch plan (model/epochs.py) on a fabricated catalogue: counts, rotation, determinism."""

from collections import Counter

import numpy as np
import pytest

from model.epochs import Catalogue, Sampling, epoch_samples, negative_order, rank_batches, repeat_factors

N_POS, N_NEG = 40, 400


def catalogue(order=None) -> Catalogue:
    """40 positives (one class each, cycling; scissors only every tenth), then 400 negatives."""
    keys = [f"P{i:05d}" for i in range(1, N_POS + 1)] + [f"N{i:07d}" for i in range(1, N_NEG + 1)]
    labels = np.zeros((len(keys), 5), np.float32)
    for i in range(N_POS):
        labels[i, 4 if i % 10 == 0 else i % 4] = 1
    rows = np.arange(len(keys)) if order is None else np.asarray(order)
    n = len(keys)
    return Catalogue(("a.tar",), np.zeros(n, np.int32), np.array(keys)[rows], np.zeros((n, 4), np.int64),
                     np.zeros((n, 4), np.int64), labels[rows])


def keys_of(cat, samples) -> list[str]:
    return [str(k) for k in cat.keys[samples]]


def test_every_positive_once_and_k_negatives_per_positive_rounded_to_full_batches():
    cat = catalogue()
    for epoch in range(3):
        samples = epoch_samples(cat, Sampling(seed=0, negatives_per_positive=1.5), epoch, unit=16)
        counts = Counter(keys_of(cat, samples))
        positives = {k: n for k, n in counts.items() if k.startswith("P")}
        assert positives == {f"P{i:05d}": 1 for i in range(1, 41)}
        # 40 positives + 60 negatives = 100, rounded up to 112 (7 x 16) with 12 more negatives
        assert len(samples) == 112 and sum(k.startswith("N") for k in counts) == 72
        assert max(counts.values()) == 1


def test_negatives_rotate_through_the_whole_pool_before_any_comes_back():
    cat = catalogue()
    per_epoch = [
        {k for k in keys_of(cat, epoch_samples(cat, Sampling(0, 2.0), e, unit=8)) if k.startswith("N")}
        for e in range(6)
    ]
    assert all(len(s) == 80 for s in per_epoch)  # 2 x 40 positives, already a multiple of 8
    assert all(not (per_epoch[a] & per_epoch[b]) for a in range(5) for b in range(a + 1, 5))
    assert set().union(*per_epoch[:5]) == {f"N{i:07d}" for i in range(1, 401)}
    assert per_epoch[5] == per_epoch[0]  # the sixth epoch starts the second round


def test_every_negative_by_default_and_the_order_changes_each_epoch():
    cat = catalogue()
    first, second = (epoch_samples(cat, Sampling(0), e, unit=32) for e in (0, 1))
    assert len(first) == 448  # 440 rounded up to 14 x 32: 8 negatives twice
    assert set(keys_of(cat, first)) == set(cat.keys) and max(Counter(first.tolist()).values()) == 2
    assert first.tolist() != second.tolist()


def test_plan_depends_on_ids_seed_and_epoch_only():
    cat = catalogue()
    shuffled = catalogue(np.random.default_rng(5).permutation(N_POS + N_NEG))
    sampling = Sampling(seed=3, negatives_per_positive=1.0)
    a = keys_of(cat, epoch_samples(cat, sampling, 2, unit=8))
    assert a == keys_of(shuffled, epoch_samples(shuffled, sampling, 2, unit=8))  # not row order
    assert a == keys_of(cat, epoch_samples(cat, sampling, 2, unit=8))
    assert a != keys_of(cat, epoch_samples(cat, Sampling(4, 1.0), 2, unit=8))
    other_seed = set(keys_of(cat, negative_order(cat, 4)[:40]))
    assert other_seed != set(keys_of(cat, negative_order(cat, 3)[:40]))


def test_ranks_get_equal_disjoint_parts_of_full_batches():
    cat = catalogue()
    samples = epoch_samples(cat, Sampling(0, 1.0), 0, unit=2 * 6)
    parts = [rank_batches(samples, r, 2, 6) for r in range(2)]
    assert [len(p) for p in parts] == [len(samples) // 12] * 2
    assert all(len(b) == 6 for p in parts for b in p)
    flat = [row for p in parts for b in p for row in b]
    assert sorted(flat) == sorted(samples.tolist())


def test_repeat_factors_follow_the_lvis_rule():
    labels = catalogue().labels[:N_POS]
    share = (labels > 0).mean(axis=0)
    assert share.tolist() == pytest.approx([0.2, 0.25, 0.2, 0.25, 0.1])
    factors = repeat_factors(labels, 0.4)
    assert factors[0] == pytest.approx(2.0)  # P00001 holds scissors: sqrt(0.4 / 0.1)
    assert factors[4] == pytest.approx(2**0.5)  # P00005 holds a gun: sqrt(0.4 / 0.2)
    assert factors[1] == pytest.approx((0.4 / 0.25) ** 0.5)
    assert repeat_factors(labels, 0.05).tolist() == [1.0] * N_POS  # no class that rare


def test_repeated_positives_come_round_down_or_up_and_average_their_factor():
    cat = catalogue()
    sampling = Sampling(0, 1.0, repeat_threshold=0.4)
    counts = [Counter(keys_of(cat, epoch_samples(cat, sampling, e, unit=1))) for e in range(200)]
    assert all(c["P00001"] == 2 for c in counts)  # scissors, factor exactly 2
    assert len({sum(c.values()) for c in counts}) == 1  # every epoch as long
    gun = [c["P00005"] for c in counts]  # factor 1.414: once or twice
    assert set(gun) == {1, 2} and np.mean(gun) == pytest.approx(2**0.5, abs=0.07)
