"""Configuration dataclasses for the CHR model and its training run; both are saved in every checkpoint.

`model eval` rebuilds the network from `ModelConfig` alone, so everything that changes the
architecture lives there; everything that only changes how it is trained lives in `TrainConfig`.
"""

from dataclasses import asdict, dataclass, field, fields

VARIANTS = ("baseline", "h", "hr", "ch", "chr")
"""The paper's ablation (Table 4): h = a classifier per stage, r = refinement, c = class-balanced loss."""

DEFAULT_EPSILON = 0.01
"""Easy-negative threshold on the sigmoid probability, chosen by bench/sweep_epsilon.py (model/loss.py)."""


@dataclass
class ModelConfig:
    backbone: str = "resnet101"  # the official code's backbone
    variant: str = "chr"
    num_classes: int = 5
    epsilon: float = DEFAULT_EPSILON
    # Width of the refined lower-stage features; None: min(128, the lowest stage's width), which keeps
    # CHR's extra cost near the paper's +8% on ResNet-50 and the tiny backbone tiny.
    refine_channels: int | None = None

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; valid: {', '.join(VARIANTS)}")

    @property
    def multi_stage(self) -> bool:
        return self.variant != "baseline"

    @property
    def refine(self) -> bool:
        return self.variant in ("hr", "chr")

    @property
    def balanced(self) -> bool:
        return self.variant in ("ch", "chr")


@dataclass
class TrainConfig:
    shards: str = "shards/sixray100"
    out: str = "runs/chr"
    epochs: int = 15  # official recipe: 15 epochs, batch 16, SGD 0.01/0.9/1e-4, x0.1 at epoch 20
    batch_size: int = 16
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_steps: tuple[int, ...] = (20,)
    resize: int = 256
    crop: int = 224
    test_size: int = 224
    shuffle_buffer: int = 1000
    workers: int = 4
    loader: str = "cpu"
    device: str = "auto"  # "auto": cuda if available, else cpu
    amp: bool | None = None  # None: on for CUDA, off on the CPU
    channels_last: bool | None = None  # None: on for CUDA
    seed: int = 0
    weights: str | None = None  # local ImageNet state dict for the backbone
    model: ModelConfig = field(default_factory=ModelConfig)


def to_dict(cfg) -> dict:
    return asdict(cfg)


def model_config_from_dict(d: dict) -> ModelConfig:
    known = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in d.items() if k in known})


def train_config_from_dict(d: dict) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    d = {k: v for k, v in d.items() if k in known}
    d["model"] = model_config_from_dict(d.get("model", {}))
    d["lr_steps"] = tuple(d.get("lr_steps", ()))
    return TrainConfig(**d)
