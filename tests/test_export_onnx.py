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

from model.alarms import fit_thresholds, thresholds_document, write_thresholds
from model.cli import main as model_cli
from model.export import OnnxScorer, PixelScorer
from model.inference import load_model
from model.predict import predict_command
from pipeline.classes import CLASSES


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A fabricated checkpoint with a thresholds.json beside it, exported with its CAMs."""
    root = tmp_path_factory.mktemp("onnx")
    checkpoint = fabricate_checkpoint(root / "best.pt", test_size=64)
    labels = np.eye(5)[np.arange(20) % 5]
    val = {"scores": {"fused": np.linspace(0.01, 0.99, 100).reshape(20, 5)}, "labels": labels,
           "difficult": labels < 0}
    write_thresholds(root, thresholds_document(fit_thresholds(val, 0.9), 0.9, checkpoint=checkpoint, epoch=1,
                                               val_count=20, val_fraction=0.5, held_out=True))
    result = CliRunner().invoke(model_cli, ["export", "--checkpoint", str(checkpoint), "--onnx",
                                            str(root / "model.onnx"), "--cams"])
    assert result.exit_code == 0, result.output
    return root, checkpoint, result.output


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_scores_and_cams_match_pytorch(exported, batch):
    root, checkpoint, _ = exported
    model, _, _ = load_model(checkpoint, torch.device("cpu"))
    seeded = torch.Generator().manual_seed(batch)
    images = torch.randint(0, 256, (batch, 3, 64, 64), dtype=torch.uint8, generator=seeded)
    with torch.no_grad():
        expected = [t.numpy() for t in PixelScorer(model, cams=True).eval()(images)]
    scores, cams = OnnxScorer(root / "model.onnx")(images.numpy())
    assert scores.shape == (batch, 5) and [c.shape[:2] for c in cams] == [(batch, 5)] * 3
    for got, want in zip([scores, *cams], expected, strict=True):
        assert np.abs(got - want).max() <= 1e-4


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
