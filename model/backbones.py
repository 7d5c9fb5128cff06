"""Backbone registry: each entry gives three feature stages, the last three resolutions (/8, /16, /32).

A backbone is split into `stages` (three nn.Modules applied in turn) so the CHR head sees the
features at 28x28, 14x14 and 7x7 for a 224 input (inception_v3 trains at 299: 35x35, 17x17, 8x8, since
it does not pad). `channels` gives each stage's output width. torchvision models are built with
weights=None; `load_weights` reads a local ImageNet state dict as torchvision publishes it (downloads are
impossible), and the backbone applies the input transform those weights expect (inception_v3).
"""

import re
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from base.errors import DataError, UsageError


class Backbone(nn.Module):
    def __init__(self, stages: list[nn.Module], channels: tuple[int, int, int], source: nn.Module,
                 input_transform: nn.Module | None = None):
        super().__init__()
        self.input_transform = input_transform or nn.Identity()
        self.stages = nn.ModuleList(stages)
        self.channels = channels
        # The unsplit model, kept outside the module tree (not a submodule) only to load state dicts by
        # torchvision's key names; it shares its layers with `stages`.
        object.__setattr__(self, "_source_keys", source)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the three stage features, lowest level (largest) first."""
        feats = []
        x = self.input_transform(x)
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


class _InceptionInput(nn.Module):
    """torchvision's Inception3._transform_input as a layer: Google's weights take inputs scaled to
    [-1, 1], and the loaders normalise with ImageNet's mean and std, as for every other backbone."""

    def __init__(self, inception: nn.Module):
        super().__init__()
        object.__setattr__(self, "_transform", inception._transform_input)  # a parameter-free function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._transform(x)


def _inception_v3():
    m = tvm.inception_v3(weights=None, aux_logits=False, init_weights=True, transform_input=True)
    low = nn.Sequential(m.Conv2d_1a_3x3, m.Conv2d_2a_3x3, m.Conv2d_2b_3x3, m.maxpool1, m.Conv2d_3b_1x1,
                        m.Conv2d_4a_3x3, m.maxpool2, m.Mixed_5b, m.Mixed_5c, m.Mixed_5d)
    mid = nn.Sequential(m.Mixed_6a, m.Mixed_6b, m.Mixed_6c, m.Mixed_6d, m.Mixed_6e)
    top = nn.Sequential(m.Mixed_7a, m.Mixed_7b, m.Mixed_7c)
    return Backbone([low, mid, top], (288, 768, 2048), m, _InceptionInput(m))


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


class _Residual(nn.Module):
    """ResNet's basic block: two 3x3 convolutions (the first with the stride) around a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_conv(cin, cout, stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class _Small(nn.Module):
    """A stride-2 stem and four residual blocks, one per resolution (~1.4M parameters, about 0.1 GFLOPs
    at 128 pixels): the reference recipe's backbone, which trains from random weights on a CPU."""

    def __init__(self, widths=(16, 32, 64, 128, 256)):
        super().__init__()
        self.low = nn.Sequential(_conv(3, widths[0], 2), _Residual(widths[0], widths[1], 2),
                                 _Residual(widths[1], widths[2], 2))
        self.mid = _Residual(widths[2], widths[3], 2)
        self.top = _Residual(widths[3], widths[4], 2)


def _small():
    m = _Small()
    return Backbone([m.low, m.mid, m.top], (64, 128, 256), m)


BACKBONES = {
    "resnet34": _resnet(tvm.resnet34, (128, 256, 512)),
    "resnet50": _resnet(tvm.resnet50, (512, 1024, 2048)),
    "resnet101": _resnet(tvm.resnet101, (512, 1024, 2048)),
    "inception_v3": _inception_v3,
    "densenet121": _densenet121,
    "small": _small,
    "tiny": _tiny,
}

FROM_SCRATCH = ("small", "tiny")
"""Backbones of our own, with no published ImageNet weights: made to train from random weights."""

MIN_INPUT = {"inception_v3": 75}
"""Smallest input side each backbone accepts (inception_v3 has unpadded convolutions)."""

INPUT_SIZES = {"inception_v3": (342, 299, 299)}
"""(train resize, train crop, test size) where a backbone's ImageNet weights want other than the official
code's (256, 224, 224): inception_v3 was trained at 299 (342 = 299 x 256 / 224)."""


def input_sizes(name: str) -> tuple[int, int, int]:
    return INPUT_SIZES.get(name, (256, 224, 224))


def build_backbone(name: str, *, transform_input: bool = True) -> Backbone:
    """`transform_input=False` drops the backbone's input transform (checkpoints trained without one)."""
    if name not in BACKBONES:
        raise UsageError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
    backbone = BACKBONES[name]()
    if not transform_input:
        backbone.input_transform = nn.Identity()
    return backbone


_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
"""torchvision's published DenseNet files predate its module names: `norm.1` is now `norm1`
(the pattern torchvision's own densenet loader applies)."""


def _remap_old_keys(state: dict) -> dict:
    return {_OLD_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items()}


def load_weights(backbone: Backbone, path: str | Path) -> None:
    """Load an ImageNet state dict, as torchvision publishes it, into the backbone.

    The classifier head of the file (fc / classifier / AuxLogits) is not part of the backbone and is
    dropped; any other missing or unexpected key is an error naming the file, since a partial load would
    train from a partly random init without anyone noticing.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = _remap_old_keys({k.removeprefix("module."): v for k, v in state.items()})
    head = ("fc.", "classifier.", "AuxLogits.")
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    missing, unexpected = backbone._source_keys.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        raise DataError(f"{path}: not a state dict for this backbone ({len(missing)} missing keys, e.g. "
                         f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]})")
