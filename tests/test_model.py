import pytest
import torch

from model.backbones import BACKBONES, MIN_INPUT, build_backbone, load_weights
from model.chr import build_model
from model.config import VARIANTS, ModelConfig
from model.loss import chr_loss


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_forward_backward(backbone, variant):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=backbone, variant=variant)
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
    chr_loss(out.logits, targets, balanced=cfg.balanced, epsilon=cfg.epsilon).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


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


def test_weights_load_into_backbone(tmp_path):
    source = build_backbone("resnet34")
    state = source._source_keys.state_dict()
    state["fc.weight"] = torch.zeros(1000, 512)  # an ImageNet head is dropped, not an error
    torch.save(state, tmp_path / "r34.pth")
    target = build_backbone("resnet34")
    assert load_weights(target, tmp_path / "r34.pth") == []
    x = torch.randn(1, 3, 64, 64)
    source.eval(), target.eval()
    assert torch.equal(source(x)[-1], target(x)[-1])
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth"):
        load_weights(target, tmp_path / "bad.pth")
