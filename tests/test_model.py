import re

import pytest
import torch
import torchvision.models as tvm

from model.backbones import BACKBONES, MIN_INPUT, build_backbone, load_weights
from model.chr import build_model
from model.config import VARIANTS, ModelConfig, TrainConfig, model_config_from_dict, train_config_from_dict
from model.loss import chr_loss

HEAVY_BACKBONES = ("resnet50", "resnet101", "inception_v3", "densenet121")
"""About 18 s a case on 2 cores: the default run smokes each with the full variant only (tiny and
resnet34 run every variant)."""
CASES = [pytest.param(b, v, marks=pytest.mark.slow) if b in HEAVY_BACKBONES and v != "chr"
         else (b, v) for b in BACKBONES for v in VARIANTS]


@pytest.mark.parametrize("backbone,variant", CASES)
def test_forward_backward(backbone, variant, refinement="official"):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, variant=variant, refinement=refinement)
    model = build_model(cfg)
    side = max(64, MIN_INPUT.get(backbone, 0))
    out = model(torch.randn(2, 3, side, side))
    n_stages = 1 if variant == "baseline" else 3
    assert len(out.logits) == len(out.cams) == n_stages
    sizes = [c.shape[-1] for c in out.cams]
    assert sizes == sorted(sizes)  # top (smallest) first
    for logits, cams in zip(out.logits, out.cams, strict=True):
        assert logits.shape == (2, 5) and cams.shape[:2] == (2, 5)
        assert torch.isfinite(logits).all()
        assert torch.allclose(logits, cams.mean(dim=(2, 3)), atol=1e-5)  # CAMs come from the same weights
    assert out.scores().shape == (2, 5)
    targets = torch.tensor([[1.0, 0, 0, 1, 0], [0, 0, 0, 0, 0]])
    chr_loss(out.logits, targets, cfg).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_forward_backward_light_refinement():
    test_forward_backward("tiny", "chr", refinement="light")


def test_resnet_stages_are_28_14_7_at_224():
    feats = build_backbone("resnet34")(torch.randn(1, 3, 224, 224))
    assert [f.shape[-1] for f in feats] == [28, 14, 7]


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="resnet50.*densenet121.*tiny"):
        build_backbone("vgg16")


def test_unknown_variant_lists_valid_names():
    with pytest.raises(ValueError, match="baseline, h, hr, ch, chr"):
        ModelConfig(variant="x")


def test_variants_differ_in_structure():
    counts = {v: sum(p.numel() for p in build_model(ModelConfig("tiny", v)).parameters()) for v in VARIANTS}
    assert counts["h"] == counts["ch"] > counts["baseline"]
    assert counts["hr"] == counts["chr"] > counts["h"]


def test_official_refinement_has_the_authors_widths():
    # MeioJane/CHR models.py for ResNet-50/101: cov4 2048->2048, cov3_1 1024->1024, cov3 3072->1024,
    # cov2_1 512->512, cov2 1536->512.
    model = build_model(ModelConfig(backbone="resnet50", variant="chr"))
    shapes = {name: tuple(p.shape[:2]) for name, p in model.named_parameters() if name.endswith("weight")
              and not name.startswith("backbone")}
    assert shapes["top_head.0.weight"] == (2048, 2048)
    assert shapes["refine.0.lateral.0.weight"] == (1024, 1024)
    assert shapes["refine.0.fuse.0.weight"] == (1024, 3072)
    assert shapes["refine.1.lateral.0.weight"] == (512, 512)
    assert shapes["refine.1.fuse.0.weight"] == (512, 1536)
    assert [shapes[f"classifiers.{i}.weight"] for i in range(3)] == [(5, 2048), (5, 1024), (5, 512)]


def test_light_refinement_keeps_the_earlier_checkpoints_layout():
    # Configs saved before `refinement` existed were trained with the light block: they load as such.
    old = {"backbone": "tiny", "variant": "chr", "num_classes": 5, "epsilon": 0.01, "refine_channels": None}
    cfg = model_config_from_dict(old)
    assert (cfg.refinement, cfg.loss_rule, cfg.loss_normalisation) == ("light", "drop-easy", "active")
    keys = set(build_model(cfg).state_dict())
    assert {"refine.0.lateral.0.weight", "refine.0.fuse.0.weight", "refine.0.fuse.2.weight",
            "refine.1.fuse.3.running_mean"} <= keys and not any(k.startswith("top_head") for k in keys)
    old_run = {"model": old, "resize": 72, "crop": 64, "test_size": 64}
    assert train_config_from_dict(old_run).select_on == "test"  # the authors' choice, as those runs made


# ---- published ImageNet weights: torchvision's key layout, random values ----

PUBLISHED = {
    "resnet34": lambda: tvm.resnet34(weights=None),
    "resnet50": lambda: tvm.resnet50(weights=None),
    "resnet101": lambda: tvm.resnet101(weights=None),
    "inception_v3": lambda: tvm.inception_v3(weights=None, aux_logits=True, init_weights=False),
    "densenet121": lambda: tvm.densenet121(weights=None),
}


def old_densenet_keys(state: dict) -> dict:
    """The published densenet121 file's names: `denselayer1.norm.1.weight` for torchvision's `norm1`."""
    return {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()}


@pytest.mark.parametrize("backbone", list(PUBLISHED))
def test_published_state_dicts_load_through_weights(backbone, tmp_path):
    torch.manual_seed(0)
    state = PUBLISHED[backbone]().state_dict()  # with its ImageNet head (fc / classifier / AuxLogits)
    published = state
    if backbone in ("inception_v3", "densenet121"):
        # Their only published files predate PyTorch 0.4: no BatchNorm `num_batches_tracked` counters,
        # and densenet121's layers under their old names.
        published = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if backbone == "densenet121":
        published = old_densenet_keys(published)
        assert "features.denseblock1.denselayer1.norm.1.weight" in published
    torch.save(published, tmp_path / f"{backbone}.pth")
    model = build_model(ModelConfig(backbone=backbone, variant="chr"))
    load_weights(model.backbone, tmp_path / f"{backbone}.pth")  # raises on any missing or unexpected key
    for key, value in model.backbone._source_keys.state_dict().items():
        if not key.startswith(("fc.", "classifier.", "AuxLogits.")):  # the ImageNet head is not loaded
            assert torch.equal(value, state[key]) or key.endswith("num_batches_tracked"), key


def test_weights_errors_name_the_file(tmp_path):
    target = build_backbone("resnet34")
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth.*missing"):
        load_weights(target, tmp_path / "bad.pth")
    partial = {k: v for k, v in tvm.resnet34(weights=None).state_dict().items() if not k.startswith("layer4")}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="partial.pth.*layer4"):
        load_weights(target, tmp_path / "partial.pth")


def test_inception_applies_torchvisions_input_transform_and_trains_at_299():
    x = torch.randn(2, 3, 80, 80)
    reference = tvm.inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=True)
    backbone = build_backbone("inception_v3")
    assert torch.equal(backbone.input_transform(x), reference._transform_input(x))
    assert torch.equal(build_backbone("inception_v3", transform_input=False).input_transform(x), x)
    assert torch.equal(build_backbone("resnet34").input_transform(x), x)  # the others take x as it is
    cfg = TrainConfig(model=ModelConfig(backbone="inception_v3"))
    assert (cfg.resize, cfg.crop, cfg.test_size) == (342, 299, 299)
    assert (TrainConfig().resize, TrainConfig().crop, TrainConfig().test_size) == (256, 224, 224)
