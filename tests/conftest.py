from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared is not beside this checkout")
    return SHARED


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    """synth -> ingest -> build-shards --ratio 10 by the stage functions: root/{raw,manifests,shards}; shared
    by the misuse tests, which copy what they damage."""
    from pipeline.ingest import ingest
    from pipeline.shards import build_shards
    from pipeline.xray.synth import synthesize

    root = tmp_path_factory.mktemp("built")
    synthesize(root / "raw", positives=30, negatives=90, size_factor=0.2, seed=2, chunk_size=100, workers=1)
    ingest(root / "raw", root / "manifests", workers=1)
    build_shards(root / "manifests", root / "shards", 10, shard_size=40, workers=1)
    return root


@pytest.fixture(scope="session")
def trained(built, tmp_path_factory) -> Path:
    """A finished 1-epoch run of the tiny backbone on `built`: its folder."""
    from test_misuse import TRAIN, run

    from model.cli import main as model_cli

    out = tmp_path_factory.mktemp("trained") / "run"
    result = run(model_cli, "train", "--shards", built / "shards/sixray10", "--out", out, *TRAIN)
    assert result.exit_code == 0, result.output
    return out
