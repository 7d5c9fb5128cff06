"""The CHR network (Miao et al., CVPR 2019, Fig. 4) and its ablation variants.

Stages are ordered top first: index 0 is the deepest, smallest map (7x7 at 224 for ResNets), then
14x14, then 28x28. Refinement walks down from the top: the refined higher feature is upsampled to the
lower stage's size, concatenated with (a 1x1 lateral projection of) the lower feature and passed through
a 1x1 reduce + 3x3 conv + BN + ReLU block. Each stage's classifier is a 1x1 conv to one map per class
followed by global average pooling, so the class activation maps (CAMs) are the classifier's own
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


class RefineBlock(nn.Module):
    def __init__(self, higher_channels: int, lower_channels: int, width: int):
        super().__init__()
        self.lateral = nn.Sequential(nn.Conv2d(lower_channels, width, 1), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(
            nn.Conv2d(higher_channels + width, width, 1),
            nn.ReLU(inplace=True),
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
        self.backbone = build_backbone(cfg.backbone)
        low, mid, top = self.backbone.channels
        width = cfg.refine_channels or min(128, low)
        if cfg.refine:
            self.refine = nn.ModuleList([RefineBlock(top, mid, width), RefineBlock(width, low, width)])
            head_channels = (top, width, width)
        else:
            self.refine = None
            head_channels = (top, mid, low)
        if not cfg.multi_stage:
            head_channels = head_channels[:1]
        self.classifiers = nn.ModuleList([nn.Conv2d(c, cfg.num_classes, 1) for c in head_channels])

    def forward(self, x: torch.Tensor) -> ChrOutput:
        low, mid, top = self.backbone(x)
        feats = [top, mid, low]
        if self.refine is not None:
            mid = self.refine[0](top, mid)
            feats = [top, mid, self.refine[1](mid, low)]
        cams = [clf(f) for clf, f in zip(self.classifiers, feats, strict=False)]
        return ChrOutput([c.mean(dim=(2, 3)) for c in cams], cams)


def build_model(cfg: ModelConfig) -> CHR:
    return CHR(cfg)
