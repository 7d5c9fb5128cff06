"""`model export`: a checkpoint as an ONNX file that scores raw pixels, and `OnnxScorer`, which runs it.

The graph takes uint8 RGB images [batch, 3, S, S] (S: the checkpoint's test size; the batch axis is
dynamic), normalises them as the loaders do (model/pixels.py `normalise`) and returns the fused scores
[batch, 5] (the mean of the stages' sigmoids) and, with `cams=True`, each stage's CAMs [batch, 5, h, w].
So a deployment only decodes and resizes (`model.pixels.load_pixels`); no torch is needed to score.
The file's metadata holds the classes, S, the checkpoint's epoch and the alarm thresholds found for it
(model/alarms.py), which `model predict --onnx` applies.
"""

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from base.atomic import write_bytes
from base.errors import DataError, MissingInputError
from base.vocabulary import CLASSES
from model.alarms import checkpoint_thresholds
from model.inference import load_model
from model.pixels import normalise

SCORES = "scores"
CAM_NAMES = ("cam_stage1", "cam_stage2", "cam_stage3")


class PixelScorer(nn.Module):
    """uint8 images -> fused scores (and the stages' CAMs): what the ONNX file computes."""

    def __init__(self, model: nn.Module, cams: bool = False):
        super().__init__()
        self.model, self.cams = model, cams

    def forward(self, images: torch.Tensor):
        out = self.model(normalise(images))
        return (out.scores(), *out.cams) if self.cams else out.scores()


def export_onnx(checkpoint: str | Path, path: str | Path, *, cams: bool = False, thresholds=None,
                trust_checkpoint: bool = False) -> dict:
    """Write the ONNX file atomically, with the alarm thresholds of the file `thresholds` or else those
    found for the checkpoint (model/alarms.py); return what it holds (metadata) and the largest difference
    between its scores and PyTorch's on two random images (onnxruntime on the CPU)."""
    model, tcfg, ckpt = load_model(checkpoint, torch.device("cpu"), trust=trust_checkpoint)
    limits, source = checkpoint_thresholds(checkpoint, ckpt["epoch"], thresholds)
    scorer = PixelScorer(model, cams).eval()
    size = tcfg.test_size
    example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8,
                            generator=torch.Generator().manual_seed(0))
    names = [SCORES, *CAM_NAMES[:len(model.classifiers)]] if cams else [SCORES]
    program = torch.onnx.export(scorer, (example,), None, input_names=["images"], output_names=names,
                                dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, verbose=False,
                                optimize=True)
    proto = program.model_proto
    metadata = {"classes": json.dumps(list(CLASSES)), "test_size": str(size), "epoch": str(ckpt["epoch"]),
                "checkpoint": Path(checkpoint).name, "cams": json.dumps(cams),
                "val_fraction": str(tcfg.val_fraction), "thresholds": json.dumps(limits)}
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    write_bytes(path, proto.SerializeToString())
    with torch.no_grad():
        expected = scorer(example)
    got = OnnxScorer(path)(example.numpy())[0]
    first = expected[0] if cams else expected
    return {**metadata, "outputs": names, "thresholds_from": source,
            "max_abs_diff": float(np.abs(got - first.numpy()).max())}


class OnnxScorer:
    """An exported file in onnxruntime (CUDA when onnxruntime has it, else every CPU core): uint8 images
    [B, 3, S, S] -> (fused scores [B, 5], the stages' CAMs or None)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        if not Path(path).is_file():
            raise MissingInputError(f"{path}: no such ONNX file; write one with `model export`")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise DataError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if "test_size" not in meta:
            raise DataError(f"{path}: no test_size in its metadata: not written by `model export`")
        self.size, self.epoch = int(meta["test_size"]), int(meta.get("epoch", 0))
        self.thresholds = json.loads(meta.get("thresholds", "null"))
        self.has_cams = json.loads(meta.get("cams", "false"))
        self.val_fraction = float(meta.get("val_fraction", 0.0))

    def __call__(self, images) -> tuple[np.ndarray, list[np.ndarray] | None]:
        outputs = self.session.run(None, {"images": np.asarray(images, dtype=np.uint8)})
        return outputs[0], (outputs[1:] if self.has_cams else None)
