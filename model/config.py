"""Configuration dataclasses for the CHR model and its training run; both are saved in every checkpoint.

`model eval` rebuilds the network from `ModelConfig` alone, so everything that changes the
architecture lives there, with the loss settings the paper's variant names (the "C" of CHR) pick;
everything that only changes how it is trained or selected lives in `TrainConfig`.
Checkpoints written before a field existed load with the value they were trained with (`LEGACY_*`).
"""

import math
from dataclasses import asdict, dataclass, field, fields

from base.errors import UsageError

VARIANTS = ("baseline", "h", "hr", "ch", "chr")
"""The paper's ablation (Table 4): h = a classifier per stage, r = refinement, c = class-balanced loss."""

REFINEMENTS = ("official", "light")
"""`official`: the authors' block (lower stage's width, a 1x1 conv + ReLU on the top stage);
`light`: a narrower 1x1 + 3x3 block (width `refine_channels`, default min(128, lowest stage's width))."""

LOSS_RULES = ("drop-easy", "paper", "official")
"""Which negatives the class-balanced loss counts (model/loss.py; README "The class-balanced loss")."""

NORMALISATIONS = ("mean", "active")
"""`mean`: each stage's loss over all B x C terms (the official code); `active`: over the terms that count."""

DEFAULT_EPSILON = 0.1
"""Easy-negative threshold on the sigmoid probability for the `drop-easy` rule (model/loss.py): chosen on
the val split under the reference recipe, 2 seeds each of 0 (plain BCE), 0.01 and 0.1 (bench/RESULTS.md);
the differences are within the seeds' spread."""

OFFICIAL_EPSILON = 1 / (1 + math.exp(20))
"""sigmoid(-20): the authors' code drops a negative whose logit is below -20."""

PAPER_EPSILON = 0.5
"""The paper gives no value; 0.5, the decision threshold, is the one that keeps its literal rule trainable."""

SELECT_ON = ("val", "test")
SELECT_BY = ("fused", "stage1")
"""The output whose mAP picks the best epoch: the fused one (ours), or the top stage's (stage1), which is
what the authors' engine.py reads (`output[0]`, the 7x7 stage's classifier)."""
POINTING_FUSE = ("max", "mean")


def _check(name: str, value, valid: tuple) -> None:
    if value not in valid:
        raise UsageError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def _require(ok: bool, flag: str, value, rule: str) -> None:
    """One flag's value against its rule, before any work: the error names the flag as the user types it."""
    if not ok:
        raise UsageError(f"{flag} {value}: {rule}")


@dataclass
class ModelConfig:
    backbone: str = "resnet101"  # the official code's backbone
    variant: str = "chr"
    num_classes: int = 5
    epsilon: float = DEFAULT_EPSILON
    refinement: str = "official"
    refine_channels: int | None = None  # `light` refinement only
    loss_rule: str = "drop-easy"
    loss_normalisation: str = "mean"
    # inception_v3 only: re-scale ImageNet-normalised input to the [-1, 1] range its torchvision weights
    # were trained on, as torchvision does whenever it loads them.
    transform_input: bool = True

    def __post_init__(self):
        _check("variant", self.variant, VARIANTS)
        _check("refinement", self.refinement, REFINEMENTS)
        _check("loss rule", self.loss_rule, LOSS_RULES)
        _check("loss normalisation", self.loss_normalisation, NORMALISATIONS)
        _require(0 <= self.epsilon < 1, "--epsilon", self.epsilon, "a probability threshold in [0, 1)")
        _require(self.num_classes >= 1, "num_classes", self.num_classes, "at least one class")
        _require(self.refine_channels is None or self.refine_channels >= 1, "--refine-channels",
                 self.refine_channels, "at least 1")

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
    resize: int | None = None  # None: the backbone's (model.backbones.INPUT_SIZES)
    crop: int | None = None
    test_size: int | None = None
    # Each epoch: every train positive, and every negative (None) or K x the positives, rotating through
    # the negatives; rare classes' positives repeated with repeat_threshold > 0 (model/epochs.py).
    negatives_per_positive: float | None = None
    repeat_threshold: float = 0.0
    workers: int = 4
    loader: str = "cpu"
    device: str = "auto"  # "auto": cuda if available, else cpu
    amp: bool | None = None  # None: on for CUDA, off on the CPU
    channels_last: bool | None = None  # None: on for CUDA
    seed: int = 0
    weights: str | None = None  # local ImageNet state dict for the backbone
    # The best epoch is chosen on `val` (val_fraction of the train split, held out by id hash) or, as the
    # authors do, on `test`; the test split then gives the final numbers of that epoch.
    select_on: str = "val"
    select_by: str = "fused"
    val_fraction: float = 0.1
    pointing_fuse: str = "max"  # the fused CAM's peak: "maximal response across scales", or their mean
    pointing_tolerance: float = 0.0  # pixels; Zhang et al.'s pointing game allows 15
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self):
        from model.backbones import input_sizes

        _check("select-on split", self.select_on, SELECT_ON)
        _check("select-by output", self.select_by, SELECT_BY)
        _check("pointing fuse rule", self.pointing_fuse, POINTING_FUSE)
        resize, crop, test_size = input_sizes(self.model.backbone)
        self.resize = resize if self.resize is None else self.resize
        self.crop = crop if self.crop is None else self.crop
        self.test_size = test_size if self.test_size is None else self.test_size
        self._check_ranges()

    def _check_ranges(self) -> None:
        """Every value and relation between flags, so that a bad one stops the command before it writes."""
        at_least_one = [("--epochs", self.epochs), ("--batch-size", self.batch_size),
                        ("--resize", self.resize), ("--crop", self.crop), ("--test-size", self.test_size)]
        for flag, value in at_least_one:
            _require(value >= 1, flag, value, "must be at least 1")
        _require(self.crop <= self.resize, "--crop", self.crop,
                 f"must not exceed --resize {self.resize} (the crop is cut from the resized image)")
        _require(self.lr >= 0, "--lr", self.lr, "must not be negative")
        _require(0 <= self.momentum < 1, "--momentum", self.momentum, "must be in [0, 1)")
        _require(self.weight_decay >= 0, "--weight-decay", self.weight_decay, "must not be negative")
        _require(all(s >= 1 for s in self.lr_steps), "--lr-steps", ",".join(map(str, self.lr_steps)),
                 "epochs are counted from 1")
        _require(self.workers >= 0, "--workers", self.workers, "must not be negative")
        _require(0 < self.val_fraction < 1, "--val-fraction", self.val_fraction,
                 "a share of the train split, strictly between 0 and 1")
        _require(self.pointing_tolerance >= 0, "--pointing-tolerance", self.pointing_tolerance,
                 "pixels, must not be negative")
        _require(self.negatives_per_positive is None or self.negatives_per_positive >= 0,
                 "--negatives-per-positive", self.negatives_per_positive, "must not be negative")
        _require(0 <= self.repeat_threshold <= 1, "--repeat-threshold", self.repeat_threshold,
                 "a share of the train positives, in [0, 1]")

    @property
    def held_out(self) -> float:
        """The train split's fraction held out for model selection (none when selecting on test)."""
        return self.val_fraction if self.select_on == "val" else 0.0


PRESETS = {
    # MeioJane/CHR: main.py + engine.py + runme.sh (batch 320 over its GPUs), best epoch picked on test.
    "official": {"variant": "chr", "refinement": "official", "loss_rule": "official",
                 "epsilon": OFFICIAL_EPSILON, "loss_normalisation": "mean", "global_batch": 320, "lr": 0.01,
                 "momentum": 0.9, "weight_decay": 1e-4, "epochs": 15, "lr_steps": (20,), "select_on": "test",
                 "select_by": "stage1"},
    # Ours: a small backbone trained from random weights on balanced epochs, measured to learn the task on
    # 2 CPU cores within an hour (bench/bench_learning.py; bench/RESULTS.md).
    "reference": {"backbone": "small", "variant": "chr", "resize": 144, "crop": 128, "test_size": 128,
                  "batch_size": 32, "lr": 0.05, "epochs": 30, "lr_steps": (20, 27),
                  "negatives_per_positive": 1.0, "repeat_threshold": 0.5, "workers": 2},
    # The paper's text (Sec. 4.3 read literally); what it leaves open follows the official code.
    "paper": {"variant": "chr", "refinement": "official", "loss_rule": "paper", "epsilon": PAPER_EPSILON,
              "loss_normalisation": "mean", "select_on": "val"},
}
"""`--preset NAME`: values for every flag the user did not type (`global_batch` is split over the ranks)."""

LEGACY_MODEL = {"refinement": "light", "loss_rule": "drop-easy", "loss_normalisation": "active",
                "transform_input": False}
LEGACY_TRAIN = {"select_on": "test"}


def to_dict(cfg) -> dict:
    return asdict(cfg)


def model_config_from_dict(d: dict) -> ModelConfig:
    known = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{**LEGACY_MODEL, **{k: v for k, v in d.items() if k in known}})


def train_config_from_dict(d: dict) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    d = {**LEGACY_TRAIN, **{k: v for k, v in d.items() if k in known}}
    d["model"] = model_config_from_dict(d.get("model", {}))
    d["lr_steps"] = tuple(d.get("lr_steps", ()))
    return TrainConfig(**d)
