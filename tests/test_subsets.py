import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shard_helpers import row, synthetic_rows, write_dataset

from base.hashing import stable_hash
from base.vocabulary import CLASSES
from pipeline import subsets as subsets_module
from pipeline.schema import SUBSET_SCHEMA
from pipeline.subsets import (
    SubsetConfig,
    build_subset,
    id_hashes,
    per_class_positives,
    read_keys,
    shard_numbers,
    split_codes,
)


def subset(tmp_path, manifest, **kw):
    out = tmp_path / f"sub-{len(list(tmp_path.glob('sub-*')))}.parquet"
    summary = build_subset(manifest, out, SubsetConfig(**kw))
    return pq.read_table(out), summary, out


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), synthetic_rows(40, 2000))


def counts(table):
    rows = table.to_pylist()
    pos = [r for r in rows if any(r[c] for c in CLASSES)]
    return {
        s: (
            sum(r["split"] == s for r in pos),
            sum(r["split"] == s for r in rows) - sum(r["split"] == s for r in pos),
        )
        for s in ("train", "test")
    }


def test_sixray10_takes_every_positive_and_ten_times_the_negatives_per_split(tmp_path, manifest):
    table, summary, _ = subset(tmp_path, manifest, ratio=10)
    assert table.schema.remove_metadata() == SUBSET_SCHEMA
    # synthetic_rows: blocks of five go to test every fifth block -> 10 test / 30 train positives.
    assert counts(table) == {"train": (30, 300), "test": (10, 100)}
    assert summary["train"]["negatives_short"] == 0


def test_sixray10_negatives_are_a_subset_of_sixray100_and_follow_the_seed(tmp_path, manifest):
    negatives = {}
    for ratio, seed in ((10, 0), (100, 0), (10, 1)):
        table, _, _ = subset(tmp_path, manifest, ratio=ratio, seed=seed)
        negatives[ratio, seed] = {r["id"] for r in table.to_pylist() if r["id"].startswith("N")}
    assert negatives[10, 0] < negatives[100, 0]
    assert negatives[10, 0] != negatives[10, 1]
    # Only 1600 train negatives exist for 30 x 100 wanted: all taken, and the shortfall reported.
    _, short, _ = subset(tmp_path, manifest, ratio=100)
    assert short["train"] == {
        **short["train"],
        "negatives": 1600,
        "negatives_wanted": 3000,
        "negatives_short": 1400,
    }


def test_rerun_gives_identical_bytes_and_rows_sorted_by_split_then_order(tmp_path, manifest):
    _, _, a = subset(tmp_path, manifest, ratio=10, shard_size=50)
    table, _, b = subset(tmp_path, manifest, ratio=10, shard_size=50)
    assert a.read_bytes() == b.read_bytes()
    keys = [(r["split"], r["order"]) for r in table.select(["split", "order"]).to_pylist()]
    assert keys == sorted(keys)
    test_ids = [r["id"] for r in table.to_pylist() if r["split"] == "test"]
    assert test_ids == sorted(test_ids)
    train_ids = [r["id"] for r in table.to_pylist() if r["split"] == "train"]
    assert train_ids != sorted(train_ids)  # shuffled, so a sequential read mixes classes


def test_shards_close_on_count_and_on_bytes(tmp_path, manifest):
    table, _, _ = subset(tmp_path, manifest, ratio=10, shard_size=100)
    per_shard = {}
    for r in table.to_pylist():
        per_shard[r["shard"]] = per_shard.get(r["shard"], 0) + 1
    assert per_shard == {
        "train-000000": 100,
        "train-000001": 100,
        "train-000002": 100,
        "train-000003": 30,
        "test-000000": 100,
        "test-000001": 10,
    }
    # Each tiny JPEG (~1.5 kB) costs its bytes + 4096 in the estimate: 20 kB admits 3 per shard.
    table, _, _ = subset(tmp_path, manifest, ratio=10, shard_bytes=20_000)
    sizes = {}
    for r in table.to_pylist():
        sizes.setdefault(r["shard"], []).append(r["bytes"] + 4096)
    assert all(sum(s) <= 20_000 for s in sizes.values())
    assert max(len(s) for s in sizes.values()) == 3


def test_unusable_and_hammer_only_rows_are_left_out(tmp_path):
    rows = synthetic_rows(10, 100) + [
        row("P09001", classes=["gun"], status="corrupt"),
        row("N9000001", status="truncated"),
        row("P09002", classes=["hammer"]),
        row("P09003", classes=["knife"], status="no_boxes"),
    ]
    table, summary, _ = subset(tmp_path, write_dataset(tmp_path, rows), ratio=10)
    ids = set(table["id"].to_pylist())
    assert "P09003" in ids and not ids & {"P09001", "N9000001", "P09002"}
    assert summary["hammer_only_excluded"] == 1


def test_sixray1000_takes_a_quota_per_class_and_every_negative(tmp_path, manifest):
    table, summary, _ = subset(tmp_path, manifest, ratio=1000, positives_per_class=5)
    rows = table.to_pylist()
    assert sum(r["id"].startswith("N") for r in rows) == 2000
    per_class = {c: sum(r[c] == 1 for r in rows) for c in CLASSES}
    # 8 images per class exist (40 positives cycling 5 classes, +1 class on every third): quota 5 each
    # (4 train + 1 test), images counting for every class they hold, so none falls short.
    assert all(n >= 5 for n in per_class.values()), per_class
    assert sum(r["id"].startswith("P") for r in rows) < 25
    everything, _, _ = subset(tmp_path, manifest, ratio=1000, positives_per_class=1000)
    assert sum(i.startswith("P") for i in everything["id"].to_pylist()) == 40  # fewer than the quota: all


def test_official_split_comes_from_the_label_files(tmp_path):
    rows = [
        row("P00001", "train", ["gun"], official=["10/test_new"]),
        row("P00002", "test", ["knife"], official=["10/train"]),
        row("N0000001", "test", official=["10/train"]),
        row("N0000002", "test", official=["100/train"]),
    ]
    table, _, _ = subset(tmp_path, write_dataset(tmp_path, rows), ratio=10, split_source="official")
    assert dict(zip(table["id"].to_pylist(), table["split"].to_pylist(), strict=True)) == {
        "P00001": "test",
        "P00002": "train",
        "N0000001": "train",
    }
    with pytest.raises(ValueError, match="ImageSet/1000"):
        subset(tmp_path, tmp_path / "manifests" / "manifest.parquet", ratio=1000, split_source="official")


def positives_of(table) -> set[str]:
    return {i for i in table["id"].to_pylist() if i.startswith("P")}


def test_sixray1000_takes_the_smallest_hash_ids_of_each_class_and_follows_the_seed(tmp_path):
    """Single-class train positives, 6 per class, quota 2: the picks are, per class, the two ids with the
    smallest stable_hash(seed, 'positives', id), a hand computation of the rule; another seed, other ids."""
    ids = {c: [f"P{k:02d}{n}" for n in range(6)] for k, c in enumerate(CLASSES)}
    rows = [row(i, "train", [c]) for c, group in ids.items() for i in group] + [row("N0000001", "train")]
    manifest = write_dataset(tmp_path, rows)
    picks = {}
    for seed in (0, 1):
        expected = {i for group in ids.values()
                    for i in sorted(group, key=lambda i: stable_hash(seed, "positives", i))[:2]}
        table, _, _ = subset(tmp_path, manifest, ratio=1000, positives_per_class=2, seed=seed)
        picks[seed] = positives_of(table)
        assert picks[seed] == expected, seed
    assert picks[0] != picks[1]


def test_sixray1000_fills_the_rarest_class_first():
    """One scissors image, which also holds a gun; five gun images; quota 1. Scissors first takes that
    image, which fills the gun quota too: one positive. Guns first would take another image as well."""
    ids = [f"P0000{n}" for n in range(6)]
    both = next(i for i in ids if min(ids, key=lambda j: stable_hash(0, "positives", j)) != i)
    labels = np.array([[1, 0, 0, 0, 1] if i == both else [1, 0, 0, 0, 0] for i in ids], dtype=np.int8)
    keys = {"ids": pa.array(ids), "labels": labels, "tip": np.zeros(len(ids), bool)}
    chosen = per_class_positives(keys, np.arange(len(ids)), SubsetConfig(ratio=1000, positives_per_class=1))
    assert [ids[k] for k in chosen] == [both]


# Key columns and the manifest checks, row by row.
FIVE = [row("N0000001"), row("N0000002", "test"), row("N0000003", status="corrupt"),
        row("P00001", classes=["gun"]), row("P00002", "test", ["knife"])]


def rewrite(path, **columns):
    """Replace whole columns of a manifest (None: drop the column), its metadata kept."""
    table = pq.read_table(path)
    for name, values in columns.items():
        i = table.schema.get_field_index(name)
        field = table.schema.field(i)
        values = None if values is None else pa.array(values, field.type)
        table = table.remove_column(i) if values is None else table.set_column(i, field, values)
    pq.write_table(table, path)
    return path


def test_read_keys_holds_narrow_columns_tip_flags_and_manifest_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(subsets_module, "BATCH_ROWS", 2)  # three batches
    manifest = rewrite(write_dataset(tmp_path, FIVE), source=["real", None, "real", "real", "tip"],
                       knife=[None, 0, 0, 0, 1], hammer=[None, 0, 0, 0, 0])
    keys = read_keys(manifest, SubsetConfig(10))
    assert keys["ids"].to_pylist() == ["N0000001", "N0000002", "P00001", "P00002"]  # the corrupt row left out
    assert keys["manifest_rows"].tolist() == [0, 1, 3, 4] and keys["manifest_size"] == 5
    assert keys["splits"].tolist() == [0, 1, 0, 1]
    assert keys["labels"].dtype == np.int8  # a null label reads as absent
    assert keys["labels"].tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 1, 0, 0, 0]]
    assert keys["hammer"].tolist() == [False] * 4
    assert keys["tip"].dtype == bool and keys["tip"].tolist() == [False, False, False, True]
    kept = read_keys(manifest, SubsetConfig(10, exclude_sources=("tip",)))  # a null source is kept
    assert kept["ids"].to_pylist() == ["N0000001", "N0000002", "P00001"]
    assert kept["manifest_rows"].tolist() == [0, 1, 3]


def test_read_keys_of_a_manifest_from_before_the_source_column(tmp_path):
    manifest = rewrite(write_dataset(tmp_path, FIVE), source=None)
    keys = read_keys(manifest, SubsetConfig(10, exclude_sources=("tip",)))
    assert keys["ids"].to_pylist() == ["N0000001", "N0000002", "P00001", "P00002"]
    assert keys["tip"].dtype == bool and not keys["tip"].any()


def test_a_manifest_without_rows_is_a_data_error(tmp_path):
    with pytest.raises(ValueError, match="has no rows, so there is no subset to build"):
        subset(tmp_path, write_dataset(tmp_path, []), ratio=10)


def test_split_codes():
    codes = split_codes(pa.array(["train", "test", None, "val"]))
    assert codes.dtype == np.int8 and codes.tolist() == [0, 1, -1, -1]


def test_unsorted_ids_and_missing_splits_are_data_errors_naming_the_rows(tmp_path):
    unsorted = write_dataset(tmp_path / "a", [row("N0000001"), row("N0000002"), row("N0000003")])
    pq.write_table(pq.read_table(unsorted).take([0, 2, 1]), unsorted)
    with pytest.raises(ValueError, match=r"not strictly increasing at row 1 \('N0000003', 'N0000002'\)"):
        read_keys(unsorted, SubsetConfig(10))
    no_split = write_dataset(tmp_path / "b", [row(f"N000000{k}", None) for k in range(1, 6)])
    first_three = r"\['N0000001', 'N0000002', 'N0000003'\]$"
    with pytest.raises(ValueError, match=r"without a train/test split, e.g. " + first_three):
        read_keys(no_split, SubsetConfig(10))


def test_an_id_in_both_official_splits_is_a_data_error_naming_it(tmp_path):
    rows = [row("N0000001", official=["10/train"]),
            row("P00001", classes=["gun"], official=["10/train", "10/test"])]
    with pytest.raises(ValueError, match="P00001 is in both train and test of ImageSet/10"):
        read_keys(write_dataset(tmp_path, rows), SubsetConfig(10, split_source="official"))


def test_negatives_and_train_order_follow_their_hashes(tmp_path, manifest):
    # SIXray10's train negatives: the 300 of the 1600 with the smallest stable_hash(seed, 'negatives', id);
    # the train split's order: by stable_hash(seed, 'shuffle', id).
    table, _, _ = subset(tmp_path, manifest, ratio=10, seed=3)
    train = sorted((r for r in table.to_pylist() if r["split"] == "train"), key=lambda r: r["order"])
    all_negatives = [r["id"] for r in pq.read_table(manifest).to_pylist() if r["id"].startswith("N")
                     and r["split"] == "train"]
    smallest = sorted(all_negatives, key=lambda i: stable_hash(3, "negatives", i))[:300]
    assert sorted(r["id"] for r in train if r["id"].startswith("N")) == sorted(smallest)
    ids = [r["id"] for r in train]
    assert ids == sorted(ids, key=lambda i: stable_hash(3, "shuffle", i))


def test_tip_scans_are_added_to_train_and_counted_apart(tmp_path):
    rows = [row("N0000001"), row("N0000002", "test"), row("P00001", classes=["gun"]),
            row("P00002", classes=["knife"]), row("P00003", "test", ["gun"])]
    manifest = rewrite(write_dataset(tmp_path, rows), source=["real", "real", "real", "tip", "real"])
    table, summary, _ = subset(tmp_path, manifest, ratio=10)
    assert sorted(table["id"].to_pylist()) == ["N0000001", "N0000002", "P00001", "P00002", "P00003"]
    gun_only = {c: int(c == "gun") for c in CLASSES}
    expected = {"positives": 1, "negatives": 1, "negatives_wanted": 10, "negatives_short": 9,
                "per_class": gun_only}
    assert summary["train"] == {**expected, "tip": 1} and summary["test"] == {**expected, "tip": 0}


def test_shard_numbers_by_hand():
    cfg = SubsetConfig(10, shard_size=3, shard_bytes=10)
    assert shard_numbers(np.array([5, 5, 5, 5]), cfg).tolist() == [0, 0, 1, 1]  # 10 bytes fit exactly
    assert shard_numbers(np.array([1, 1, 1, 1, 11]), cfg).tolist() == [0, 0, 0, 1, 2]  # 3 at most; 11 alone


def test_subset_manifest_metadata_says_how_it_was_made(tmp_path, manifest):
    _, _, out = subset(tmp_path, manifest, ratio=10, seed=3, exclude_sources=("synth", "tip"))
    metadata = pq.read_schema(out).metadata
    assert {k: metadata[k] for k in (b"ratio", b"seed", b"split_source", b"exclude_sources")} == {
        b"ratio": b"10", b"seed": b"3", b"split_source": b"ours", b"exclude_sources": b"synth,tip"}
    assert metadata[b"raw_root"] == pq.read_schema(manifest).metadata[b"raw_root"]  # the manifest's kept


def test_id_hashes_past_one_slice_of_65536_ids():
    ids = [f"N{i:07d}" for i in range(65_537)]
    hashes = id_hashes(0, "negatives", pa.array(ids))
    assert len(hashes) == 65_537
    assert hashes[0] == stable_hash(0, "negatives", ids[0])
    assert hashes[-1] == stable_hash(0, "negatives", ids[-1])


def test_a_subset_without_positives_or_of_an_unknown_ratio_is_refused(tmp_path):
    negatives = write_dataset(tmp_path, [row("N0000001"), row("N0000002", "test")])
    message = (r"no usable positive \(an image with one of gun, knife, wrench, pliers, scissors, status ok "
               r"or no_boxes\), no subset to build")
    with pytest.raises(ValueError, match=message):
        subset(tmp_path, negatives, ratio=10)
    with pytest.raises(ValueError, match=r"ratio must be one of \(10, 100, 1000\), got 7"):
        subset(tmp_path, negatives, ratio=7)
