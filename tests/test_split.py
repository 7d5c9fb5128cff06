"""Our 80/20 split: exact rule, per-class shares, independence from row order, seed dependence."""

import random
from collections import Counter

import duckdb
import pyarrow as pa

from base.hashing import stable_hash
from base.vocabulary import CLASSES
from pipeline.split import register_split_hash, split_sql


def assign_splits(ids: list[str], labels: list[tuple[int, ...]], seed: int) -> list[str]:
    """The split of each id given its 5-class presence vector, through the SQL the manifest uses."""
    classes = {c: pa.array([row[k] for row in labels], pa.int8()) for k, c in enumerate(CLASSES)}
    table = pa.table({"id": ids, **classes})
    con = duckdb.connect()
    register_split_hash(con, seed)
    con.register("split_input", table)
    rows = con.execute(f"SELECT id, split FROM ({split_sql('split_input')})").fetchall()
    by_id = dict(rows)
    return [by_id[i] for i in ids]


CLASS_MIX = (3129, 1962, 2205, 3963, 986)
"""Images per class in the real release (gun, knife, wrench, pliers, scissors)."""


def generated_labels(n_pos: int, n_neg: int, seed: int = 7):
    """Positives with 1-3 classes drawn with the real class mix, plus all-absent negatives."""
    rng = random.Random(seed)
    ids, labels = [], []
    for i in range(n_pos):
        present = set(rng.choices(range(5), weights=CLASS_MIX, k=rng.choices((1, 2, 3), (70, 25, 5))[0]))
        ids.append(f"P{i:05d}")
        labels.append(tuple(int(k in present) for k in range(5)))
    ids += [f"N{i:07d}" for i in range(n_neg)]
    labels += [(0,) * 5] * n_neg
    return ids, labels


def test_rule_by_hand():
    ids = ["a", "b", "c", "d", "e", "f"]
    splits = assign_splits(ids, [(1, 0, 0, 0, 0)] * 6, seed=3)
    by_hash = sorted(ids, key=lambda i: (stable_hash(3, "split", i), i))
    assert [i for i, s in zip(ids, splits, strict=True) if s == "test"] == [by_hash[4]]


def test_shares_per_class_within_one_percent_of_twenty():
    ids, labels = generated_labels(4000, 6000)
    splits = assign_splits(ids, labels, seed=0)
    assert Counter(splits)["test"] == len(ids) // 5
    for k, cls in enumerate(CLASSES):
        members = [s for s, lab in zip(splits, labels, strict=True) if lab[k]]
        share = members.count("test") / len(members)
        assert 0.19 <= share <= 0.21, (cls, len(members), share)
    for combo, n in Counter(labels).items():  # each label combination: floor or ceil of a fifth
        tests = sum(s == "test" for s, lab in zip(splits, labels, strict=True) if lab == combo)
        assert n // 5 <= tests <= -(-n // 5), combo


def test_independent_of_row_order_and_dependent_on_seed():
    ids, labels = generated_labels(300, 700)
    base = dict(zip(ids, assign_splits(ids, labels, seed=0), strict=True))
    order = list(range(len(ids)))
    random.Random(1).shuffle(order)
    shuffled = assign_splits([ids[i] for i in order], [labels[i] for i in order], seed=0)
    assert {ids[i]: s for i, s in zip(order, shuffled, strict=True)} == base
    other = dict(zip(ids, assign_splits(ids, labels, seed=1), strict=True))
    assert Counter(other.values()) == Counter(base.values()) and other != base
