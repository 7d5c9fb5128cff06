"""Backbone registry: each entry gives three feature stages, the last three resolutions (/8, /16, /32).

A backbone is split into `stages` (three nn.Modules applied in turn) so the CHR head sees the
features at 28x28, 14x14 and 7x7 for a 224 input (inception_v3: 25x25, 12x12, 5x5, since it does not
pad). `channels` gives each stage's output width. torchvision models are built with weights=None;
`load_weights` reads a local ImageNet state dict in torchvision's key layout (downloads are impossible).
"""

from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn


class Backbone(nn.Module):
    def __init__(self, stages: list[nn.Module], channels: tuple[int, int, int], source: nn.Module):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.channels = channels
        # The unsplit model, kept outside the module tree (not a submodule) only to load state dicts by
        # torchvision's key names; it shares its layers with `stages`.
        object.__setattr__(self, "_source_keys", source)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the three stage features, lowest level (largest) first."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def _resnet(builder, channels):
    def build():
        m = builder(weights=None)
        stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2)
        return Backbone([stem, m.layer3, m.layer4], channels, m)

    return build


def _densenet121():
    m = tvm.densenet121(weights=None)
    f = m.features
    low = nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0, f.denseblock1, f.transition1, f.denseblock2)
    mid = nn.Sequential(f.transition2, f.denseblock3)
    top = nn.Sequential(f.transition3, f.denseblock4, f.norm5, nn.ReLU(inplace=False))
    return Backbone([low, mid, top], (512, 1024, 1024), m)


def _inception_v3():
    m = tvm.inception_v3(weights=None, aux_logits=False, init_weights=True)
    low = nn.Sequential(m.Conv2d_1a_3x3, m.Conv2d_2a_3x3, m.Conv2d_2b_3x3, m.maxpool1, m.Conv2d_3b_1x1,
                        m.Conv2d_4a_3x3, m.maxpool2, m.Mixed_5b, m.Mixed_5c, m.Mixed_5d)
    mid = nn.Sequential(m.Mixed_6a, m.Mixed_6b, m.Mixed_6c, m.Mixed_6d, m.Mixed_6e)
    top = nn.Sequential(m.Mixed_7a, m.Mixed_7b, m.Mixed_7c)
    return Backbone([low, mid, top], (288, 768, 2048), m)


def _conv(cin, cout, stride):
    conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Tiny(nn.Module):
    """A five-conv network (~0.1M parameters) with the same /8, /16, /32 stage layout, for tests and demos."""

    def __init__(self):
        super().__init__()
        self.low = nn.Sequential(_conv(3, 16, 2), _conv(16, 32, 2), _conv(32, 48, 2))
        self.mid = _conv(48, 64, 2)
        self.top = _conv(64, 96, 2)


def _tiny():
    m = _Tiny()
    return Backbone([m.low, m.mid, m.top], (48, 64, 96), m)


BACKBONES = {
    "resnet34": _resnet(tvm.resnet34, (128, 256, 512)),
    "resnet50": _resnet(tvm.resnet50, (512, 1024, 2048)),
    "resnet101": _resnet(tvm.resnet101, (512, 1024, 2048)),
    "inception_v3": _inception_v3,
    "densenet121": _densenet121,
    "tiny": _tiny,
}

MIN_INPUT = {"inception_v3": 75}
"""Smallest input side each backbone accepts (inception_v3 has unpadded convolutions)."""


def build_backbone(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
    return BACKBONES[name]()


def load_weights(backbone: Backbone, path: str | Path) -> list[str]:
    """Load an ImageNet state dict (torchvision key names) into the backbone; return the keys it lacked.

    The classifier head of the checkpoint (fc / classifier / AuxLogits) is not part of the backbone and is
    dropped; any other mismatch is an error naming the file, since a silent partial load would train from
    a random init without anyone noticing.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = {k.removeprefix("module."): v for k, v in state.items()}
    head = ("fc.", "classifier.", "AuxLogits.")
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    source = backbone._source_keys
    missing, unexpected = source.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(head)]
    if unexpected or len(missing) == len(source.state_dict()):
        raise ValueError(f"{path}: not a state dict for this backbone (unexpected keys: {unexpected[:5]}, "
                         f"{len(missing)} missing)")
    return missing
