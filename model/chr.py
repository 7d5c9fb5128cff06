"""The CHR network (Miao et al., CVPR 2019, Fig. 4) and its ablation variants.

Stages are ordered top first: index 0 is the deepest, smallest map (7x7 at 224 for ResNets), then
14x14, then 28x28. Refinement walks down from the top: the higher feature is upsampled to the lower
stage's size, concatenated with a 1x1 lateral projection of the lower feature and fused.
`official` refinement is the authors' block (MeioJane/CHR models.py): lateral 1x1 + ReLU and fusing
1x1 + ReLU at the lower stage's own width (1024 and 512 for ResNet-50/101), the raw top feature feeding
the middle stage, the refined middle one feeding the lowest, and a 1x1 + ReLU on the top stage before
its classifier. `light` refinement fuses with a 1x1 + 3x3 conv + BN block at a narrower width.
Each stage's classifier is a 1x1 conv to one map per class followed by global average pooling (equal to
the authors' pooling then linear layer), so the class activation maps (CAMs) are the classifier's own
output before pooling. Test scores are the mean of the stages' sigmoids.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model.backbones import build_backbone
from model.config import ModelConfig

STAGE_NAMES = ("stage1", "stage2", "stage3")
"""Stage names in output order: stage1 is the top (deepest, 7x7), stage3 the lowest (28x28)."""


class ChrOutput(NamedTuple):
    logits: list[torch.Tensor]  # per stage [B, C], top first
    cams: list[torch.Tensor]  # per stage [B, C, h, w], top first

    def scores(self) -> torch.Tensor:
        """Fused test output: the mean of the stages' sigmoid probabilities, [B, C]."""
        return torch.stack([torch.sigmoid(x) for x in self.logits]).mean(0)


def _conv1x1_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))


class OfficialRefine(nn.Module):
    """The authors' block: relu(conv1x1([up(higher), relu(conv1x1(lower))])) at the lower stage's width."""

    def __init__(self, higher_channels: int, lower_channels: int):
        super().__init__()
        self.lateral = _conv1x1_relu(lower_channels, lower_channels)
        self.fuse = _conv1x1_relu(higher_channels + lower_channels, lower_channels)

    def forward(self, higher: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        # PyTorch 0.3's F.upsample, which the authors used, aligned corners.
        up = F.interpolate(higher, size=lower.shape[-2:], mode="bilinear", align_corners=True)
        return self.fuse(torch.cat([up, self.lateral(lower)], 1))


class LightRefine(nn.Module):
    """A narrower block: 1x1 lateral to `width`, then 1x1 reduce + 3x3 conv + BN + ReLU."""

    def __init__(self, higher_channels: int, lower_channels: int, width: int):
        super().__init__()
        self.lateral = _conv1x1_relu(lower_channels, width)
        self.fuse = nn.Sequential(
            *_conv1x1_relu(higher_channels + width, width),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )

    def forward(self, higher: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(higher, size=lower.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([up, self.lateral(lower)], 1))


class CHR(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone, transform_input=cfg.transform_input)
        low, mid, top = self.backbone.channels
        self.top_head, self.refine = None, None
        head_channels = (top, mid, low)
        if cfg.refine and cfg.refinement == "official":
            self.top_head = _conv1x1_relu(top, top)
            self.refine = nn.ModuleList([OfficialRefine(top, mid), OfficialRefine(mid, low)])
        elif cfg.refine:
            width = cfg.refine_channels or min(128, low)
            self.refine = nn.ModuleList([LightRefine(top, mid, width), LightRefine(width, low, width)])
            head_channels = (top, width, width)
        if not cfg.multi_stage:
            head_channels = head_channels[:1]
        self.classifiers = nn.ModuleList([nn.Conv2d(c, cfg.num_classes, 1) for c in head_channels])

    def forward(self, x: torch.Tensor) -> ChrOutput:
        low, mid, top = self.backbone(x)
        if self.refine is not None:
            mid = self.refine[0](top, mid)
            low = self.refine[1](mid, low)
        if self.top_head is not None:
            top = self.top_head(top)
        cams = [clf(f) for clf, f in zip(self.classifiers, (top, mid, low), strict=False)]
        return ChrOutput([c.mean(dim=(2, 3)) for c in cams], cams)


def build_model(cfg: ModelConfig) -> CHR:
    return CHR(cfg)
