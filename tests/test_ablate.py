"""`model ablate` end to end on a tiny configuration: two subsets built by the pipeline, two variants, two
seeds, two epsilons, one epoch of the tiny backbone; then a rerun that reuses every finished run."""

import csv
import json
import statistics

import pytest
from click.testing import CliRunner
from shard_helpers import synthetic_rows, write_dataset

from model.cli import main as model_cli
from pipeline.shards import build_shards


@pytest.fixture(scope="module")
def subsets(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    write_dataset(root, synthetic_rows(30, 120, seed=2))  # a val split with positives and negatives
    for ratio in (10, 100):  # SIXray100 runs short of negatives here, which build-shards allows
        build_shards(root / "manifests", root / "shards", ratio, shard_size=20, workers=1)
    return [root / "shards" / "sixray10", root / "shards" / "sixray100"]


def ablate(subsets, out):
    args = ["ablate", *(a for s in subsets for a in ("--shards", str(s))), "--out", str(out),
            "--backbone", "tiny", "--variants", "chr,baseline", "--seeds", "2", "--epsilons", "0.01,0.3",
            "--epochs", "1", "--batch-size", "4", "--lr", "0.05", "--resize", "40", "--crop", "32",
            "--test-size", "32", "--workers", "0", "--device", "cpu", "--val-fraction", "0.3",
            "--pointing-tolerance", "5"]
    result = CliRunner().invoke(model_cli, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_ablate_writes_table4_and_reuses_finished_runs(subsets, tmp_path):
    out = tmp_path / "ablation"
    first = ablate(subsets, out)
    assert first.count("training ") == 2 * (2 + 2 * 2)  # a subset: baseline x 2 seeds, chr x 2 eps x 2 seeds
    table = (out / "table4.md").read_text()
    assert "| Method | sixray10 mAP | sixray10 pointing | sixray100 mAP | sixray100 pointing |" in table
    rows = [line for line in table.splitlines() if line.startswith("| Tiny")]
    assert [r.split(" | ")[0] for r in rows] == ["| Tiny", "| Tiny+CHR", "| Tiny+CHR"]  # Table 4, then gains
    assert "±" in rows[0] and "within 5 px" in table and "Epsilon kept (best mean val mAP)" in table
    with open(out / "table4.csv") as f:
        cells = list(csv.DictReader(f))
    assert {(c["subset"], c["variant"], c["metric"]) for c in cells} == {
        (s, v, m) for s in ("sixray10", "sixray100") for v in ("baseline", "chr") for m in ("map", "pointing")
    }
    assert all(c["seeds"] == "2" and len(c["values"].split()) == 2 for c in cells)
    assert {c["epsilon"] for c in cells if c["variant"] == "chr"} <= {"0.01", "0.3"}
    assert (out / "table4.png").stat().st_size > 1000
    assert (out / "sixray100" / "chr-eps0.3" / "seed1" / "test.json").exists()
    assert_epsilon_is_the_best_on_val(out, cells)
    assert_spread_is_the_sample_std(cells, table)

    again = ablate(subsets, out)
    assert "training " not in again and again.count("reusing ") == 12
    assert (out / "table4.md").read_text() == table

    (out / "sixray10" / "baseline" / "seed1" / "test.json").unlink()  # as if killed before the end
    resumed = ablate(subsets, out)
    assert resumed.count("training ") == 1 and (out / "table4.md").read_text() == table


def selection_map(run) -> float:
    return json.loads((run / "test.json").read_text())["selected"]["map"]


def assert_epsilon_is_the_best_on_val(out, cells):
    """The epsilon kept is the argmax of the val mAP averaged over seeds, and the val scores differ (with
    ties, keeping the worst one would pass too)."""
    for subset in ("sixray10", "sixray100"):
        means = {eps: statistics.mean(selection_map(out / subset / f"chr-eps{eps}" / f"seed{k}")
                                      for k in range(2)) for eps in ("0.01", "0.3")}
        assert len(set(means.values())) == 2, means
        kept = {c["epsilon"] for c in cells if (c["subset"], c["variant"]) == (subset, "chr")}
        assert kept == {max(means, key=means.get)}, (means, kept)


def assert_spread_is_the_sample_std(cells, table):
    """Mean and std in the CSV, and the table's cells, recomputed from the seeds' values: the sample std
    (n - 1), which differs from the population std wherever two seeds differ."""
    differing = 0
    for c in cells:
        values = [float(v) for v in c["values"].split()]
        assert float(c["mean"]) == pytest.approx(statistics.mean(values), abs=1e-4)
        assert float(c["std"]) == pytest.approx(statistics.stdev(values), abs=1e-4)
        differing += values[0] != values[1]
        if (c["subset"], c["variant"], c["metric"]) == ("sixray10", "baseline", "map"):
            assert f"| Tiny | {statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} |" in table
    assert differing, "every seed gave the same numbers: the std is not tested"
