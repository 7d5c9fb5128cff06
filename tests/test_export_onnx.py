"""`model export`: the ONNX file scores like PyTorch (onnxruntime, CPU) at any batch size, carries the
thresholds, and `model predict --onnx` matches `model predict` on the checkpoint."""

import json

import numpy as np
import onnx
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from model_helpers import bad_folder, fabricate_checkpoint

from base.vocabulary import CLASSES
from model.alarms import fit_thresholds, thresholds_document, write_thresholds
from model.cli import main as model_cli
from model.export import OnnxScorer
from model.inference import FUSED, forward, load_model
from model.predict import predict_command


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A fabricated checkpoint with a thresholds.json beside it, exported with its CAMs."""
    root = tmp_path_factory.mktemp("onnx")
    checkpoint = fabricate_checkpoint(root / "best.pt", test_size=64, classifier_gain=30)
    labels = np.eye(5)[np.arange(20) % 5]
    val = {"scores": {"fused": np.linspace(0.01, 0.99, 100).reshape(20, 5)}, "labels": labels,
           "difficult": labels < 0}
    write_thresholds(root, thresholds_document(fit_thresholds(val, 0.9), 0.9, checkpoint=checkpoint, epoch=1,
                                               val_count=20, val_fraction=0.5, held_out=True))
    result = CliRunner().invoke(model_cli, ["export", "--checkpoint", str(checkpoint), "--onnx",
                                            str(root / "model.onnx"), "--cams"])
    assert result.exit_code == 0, result.output
    return root, checkpoint, result.output


def coloured_scans(batch: int, seed: int) -> torch.Tensor:
    """uint8 scans of different colours (noise around a random RGB tint): red and blue differ in each."""
    seeded = torch.Generator().manual_seed(seed)
    tint = torch.randint(0, 256, (batch, 3, 1, 1), generator=seeded)
    return (tint + torch.randint(-40, 40, (batch, 3, 64, 64), generator=seeded)).clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_scores_and_cams_match_the_eval_path(exported, batch):
    """The ONNX file on uint8 RGB against the evaluator's own path (inference.forward on the same uint8
    batch, normalised on the device), within 1e-6; the scans' scores spread far more than that, so a
    graph that read BGR, or skipped a step, would fail."""
    root, checkpoint, _ = exported
    model, _, _ = load_model(checkpoint, torch.device("cpu"))
    model.eval()
    images = coloured_scans(batch, seed=batch)
    scores, cams = forward(model, images, torch.device("cpu"))
    got_scores, got_cams = OnnxScorer(root / "model.onnx")(images.numpy())
    assert got_scores.shape == (batch, 5) and [c.shape[:2] for c in got_cams] == [(batch, 5)] * 3
    for got, want in zip([got_scores, *got_cams], [scores[FUSED], *cams], strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-6)
    if batch > 1:
        assert (scores[FUSED].max(0).values - scores[FUSED].min(0).values).min() > 1e-3  # 1000x the tolerance
    bgr, _ = OnnxScorer(root / "model.onnx")(images.flip(1).numpy())
    assert np.abs(bgr - got_scores).max() > 1e-3  # the check above can see a channel swap


def test_onnx_file_has_a_dynamic_batch_and_the_thresholds(exported):
    root, _, output = exported
    proto = onnx.load(root / "model.onnx")
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, free batch axis
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    meta = {p.key: p.value for p in proto.metadata_props}
    saved = json.loads((root / "thresholds.json").read_text())["classes"]
    assert json.loads(meta["thresholds"]) == {c: saved[c]["threshold"] for c in CLASSES}
    assert meta["test_size"] == "64" and json.loads(meta["classes"]) == list(CLASSES)
    assert "thresholds.json" in output and "max |ONNX - PyTorch|" in output


def test_predict_with_onnx_matches_predict_with_the_checkpoint(exported, tmp_path):
    root, checkpoint, _ = exported
    folder = bad_folder(tmp_path / "scans")
    runs = {}
    for name, source in (("torch", {"checkpoint": checkpoint}), ("onnx", {"onnx": root / "model.onnx"})):
        result = predict_command(folder, tmp_path / name, workers=1, batch_size=2, cams=1, device="cpu",
                                 **source)
        runs[name] = pq.read_table(tmp_path / name / "predictions.parquet").to_pylist()
        assert result["thresholds"] is not None and len(result["files"]) == 2  # parquet + one overlay
    for a, b in zip(runs["torch"], runs["onnx"], strict=True):
        assert (a["id"], a["status"]) == (b["id"], b["status"])
        for c in CLASSES:
            assert a[f"alarm_{c}"] == b[f"alarm_{c}"]
            if a["status"] == "ok":
                assert abs(a[f"score_{c}"] - b[f"score_{c}"]) <= 1e-4
