"""Training configs: YAML mapped key by key onto a frozen, validated schema.

Like a protocol (:mod:`m2f_bench.evaluation.protocol`): ``version: 1``, unknown keys and
bad values rejected with the key's path, ``${VAR}`` / ``${VAR:-default}`` expanded from
the environment. Every loss term is named here with its weight; what the file says is
what trains.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator

from m2f_bench.errors import M2FError
from m2f_bench.evaluation.protocol import _format_errors, expand_env, yaml_problem

CONFIG_VERSION = 1


class TrainConfigError(M2FError):
    """A training config is missing, malformed or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """The generator: a registered learned inpainter and its architecture's arguments."""

    name: Literal["unet-gan", "baseline-gan"]
    widths: tuple[PositiveInt, ...] = Field((32, 64, 128, 256), min_length=2)
    bottleneck_blocks: int = Field(2, ge=0)
    unshuffle: int = Field(2, ge=1)
    init: str | None = Field(
        None,
        description="start from these generator weights (a .safetensors file, a model folder "
        "or a training run) instead of a random initialisation: a second training stage",
    )
    init_widen: bool = Field(
        False,
        description="model.init may have fewer channels per level (same levels, bottleneck "
        "and unshuffle): its filters are kept, added channels start unread (zero weights "
        "into every consumer), so the wider generator starts computing what the init did",
    )

    def arch_args(self) -> dict[str, Any]:
        """Keyword arguments of the generator network."""
        return {
            "widths": list(self.widths),
            "bottleneck_blocks": self.bottleneck_blocks,
            "unshuffle": self.unshuffle,
        }


class DiscriminatorSpec(_Strict):
    widths: tuple[PositiveInt, ...] = Field((32, 64, 128), min_length=1)
    unshuffle: int = Field(2, ge=1)
    lr: float = Field(2e-4, gt=0)
    every: int = Field(1, ge=1, description="update the discriminator every N steps")


class AugmentSpec(_Strict):
    """Real-photo degradations (:mod:`m2f_bench.training.augment`): probabilities per sample."""

    geometry: float = Field(0.7, ge=0, le=1, description="rotation/scale/shift jitter")
    max_rotation: float = Field(10.0, ge=0, le=45, description="degrees")
    max_scale: float = Field(0.08, ge=0, lt=0.5, description="relative")
    max_shift: float = Field(0.04, ge=0, lt=0.5, description="share of the crop side")
    lighting: float = Field(0.5, ge=0, le=1, description="gamma, tint and a light ramp")
    grayscale: float = Field(0.1, ge=0, le=1)
    downscale: float = Field(0.3, ge=0, le=1, description="down to 30-80 % and back up")
    blur: float = Field(0.3, ge=0, le=1)
    noise: float = Field(0.3, ge=0, le=1)
    jpeg: float = Field(0.5, ge=0, le=1, description="re-encoded at quality 25-90")


class DataSpec(_Strict):
    root: Path = Field(description="a folder written by `m2f-bench prepare`")
    train_split: str = "train"
    val_split: str = "val"
    mask_types: tuple[str, ...] | None = Field(None, min_length=1)
    flip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    brightness: float = Field(0.1, ge=0, lt=1, description="max relative brightness change")
    contrast: float = Field(0.1, ge=0, lt=1)
    saturation: float = Field(0.1, ge=0, lt=1)
    workers: int = Field(1, ge=0, description="DataLoader worker processes")
    val_limit: int | None = Field(256, ge=1, description="validation images (None: all)")
    degrade: AugmentSpec | None = Field(
        None,
        description="inpainters: real-photo degradations applied alike to the masked input "
        "and its target (None: none)",
    )
    holes: Literal["exact", "predicted"] = Field(
        "exact",
        description="inpainters: train on the synthetic mask's exact hole or on the hole the "
        "segmenter finds in the masked crop (as unet-gan-blind runs)",
    )
    segmenter: str | None = Field(
        None, description="segmenter weights for holes: predicted (default: mask-unet's card)"
    )


class OptimSpec(_Strict):
    steps: int = Field(ge=1)
    batch_size: int = Field(32, ge=1, description="global batch, split over DDP ranks")
    lr: float = Field(2e-4, gt=0, description="generator learning rate")
    betas: tuple[float, float] = (0.5, 0.999)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    min_lr_ratio: float = Field(0.05, ge=0, le=1, description="cosine floor as a share of lr")
    grad_clip: float | None = Field(None, gt=0)


class LossSpec(_Strict):
    """Generator loss = Σ weight × term; a weight of 0 turns its term off."""

    l1: float = Field(1.0, ge=0)
    l1_hole_weight: float = Field(6.0, ge=0)
    l1_valid_weight: float = Field(1.0, ge=0)
    mse: float = Field(
        0.0, ge=0, description="squared error, weighted like l1 (hole / valid weights)"
    )
    ssim: float = Field(0.5, ge=0)
    adversarial: float = Field(0.01, ge=0)
    adversarial_type: Literal["hinge", "lsgan"] = "hinge"
    feature_matching: float = Field(1.0, ge=0)
    gan_start_step: int = Field(0, ge=0, description="reconstruction-only steps first")
    identity: float = Field(
        0.0, ge=0, description="1 − cosine of ArcFace embeddings of output and target"
    )
    identity_model: str = Field(
        "mobilefacenet_arcface.onnx",
        description="ArcFace ONNX model of the identity term (model home file or path)",
    )

    @property
    def uses_gan(self) -> bool:
        return self.adversarial > 0 or self.feature_matching > 0


class CheckpointSpec(_Strict):
    every: int = Field(500, ge=1, description="steps between checkpoints")
    keep: int = Field(3, ge=1, description="most recent checkpoints kept")
    best: bool = Field(
        False,
        description="also keep the generator of the validation with the highest PSNR in "
        "checkpoints/best/ (package-model --best ships it)",
    )


class LogSpec(_Strict):
    every: int = Field(50, ge=1, description="steps between TensorBoard scalars")
    images: int = Field(8, ge=0, le=64, description="validation samples in the image grid")
    validate_every: int = Field(
        1, ge=1, description="epochs between validations (and one at the last step)"
    )


class _RunConfig(_Strict):
    """What every training config file has: its version, name and seed."""

    version: Literal[1]
    name: str
    description: str = ""
    seed: int = Field(0, ge=0, lt=2**63, description="seeds every random draw of the run")

    @field_validator("name")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class TrainConfig(_RunConfig):
    """A whole training config file."""

    model: ModelSpec
    discriminator: DiscriminatorSpec = DiscriminatorSpec()
    data: DataSpec
    optim: OptimSpec
    loss: LossSpec = LossSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    log: LogSpec = LogSpec()
    amp: bool = Field(True, description="bfloat16 autocast on CUDA (CPU trains in float32)")


class SegmenterModelSpec(_Strict):
    """The mask segmenter: a registered segmenter and its architecture's arguments."""

    name: Literal["mask-unet"]
    widths: tuple[PositiveInt, ...] = Field((16, 32, 64, 128), min_length=2)
    bottleneck_blocks: int = Field(2, ge=0)
    unshuffle: int = Field(2, ge=1)

    def arch_args(self) -> dict[str, Any]:
        return {
            "widths": list(self.widths),
            "bottleneck_blocks": self.bottleneck_blocks,
            "unshuffle": self.unshuffle,
        }


class SegmentLossSpec(_Strict):
    """Segmenter loss = bce × binary cross-entropy + dice × (1 − soft Dice)."""

    bce: float = Field(1.0, ge=0)
    dice: float = Field(1.0, ge=0)


class SegmenterConfig(_RunConfig):
    """A training config for a mask segmenter (``model.name: mask-unet``)."""

    model: SegmenterModelSpec
    data: DataSpec
    negatives: float = Field(
        0.25, ge=0, lt=1, description="share of samples shown without a mask (empty hole)"
    )
    augment: AugmentSpec = AugmentSpec()
    optim: OptimSpec
    loss: SegmentLossSpec = SegmentLossSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    log: LogSpec = LogSpec()
    amp: bool = Field(True, description="bfloat16 autocast on CUDA (CPU trains in float32)")

    @field_validator("checkpoint")
    @classmethod
    def _no_best(cls, value: CheckpointSpec) -> CheckpointSpec:
        if value.best:
            raise ValueError("best is kept for the inpainters' training only (by PSNR)")
        return value


#: Model names trained by the segmentation loop rather than the GAN loop.
SEGMENTER_MODELS = ("mask-unet",)


def parse_config(data: Any, source: str = "<config>") -> TrainConfig | SegmenterConfig:
    """Validate an already-loaded mapping.

    Raises:
        TrainConfigError: One line listing each bad key by its path.
    """
    if not isinstance(data, dict):
        raise TrainConfigError(f"{source}: a training config must be a mapping of keys")
    if data.get("version") != CONFIG_VERSION:
        raise TrainConfigError(
            f"{source}: version: {data.get('version')!r} is not supported (this m2f-bench "
            f"reads version {CONFIG_VERSION})"
        )
    model = data.get("model")
    schema = (
        SegmenterConfig
        if isinstance(model, dict) and model.get("name") in SEGMENTER_MODELS
        else TrainConfig
    )
    try:
        return schema.model_validate(expand_env(data))
    except ValidationError as exc:
        raise TrainConfigError(_format_errors(source, exc)) from None
    except M2FError as exc:  # an unset environment variable
        raise TrainConfigError(f"{source}: {exc}") from None


def load_config(path: str | os.PathLike) -> TrainConfig | SegmenterConfig:
    """Read and validate a training config file.

    Raises:
        TrainConfigError: Missing file, YAML syntax error, or invalid content.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainConfigError(f"training config not found: {path}") from None
    except OSError as exc:
        raise TrainConfigError(f"cannot read {path}: {exc}") from None
    except UnicodeDecodeError:
        raise TrainConfigError(f"cannot read {path}: not a text file (invalid UTF-8)") from None
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"{path}: YAML syntax error{yaml_problem(exc)}") from None
    return parse_config(data, str(path))


def file_problems(config: TrainConfig | SegmenterConfig) -> list[str]:
    """The files a training config reads, checked without loading them (``validate``):
    its prepared data, ``model.init`` (whose weights must be this model's) and, for
    predicted holes, the segmenter's weights; one entry, naming the key, per missing or
    unfit file."""
    from m2f_bench.inpainters.cards import resolve_weights, weights_network

    problems = []
    manifest = Path(config.data.root) / "manifest.csv"
    if not manifest.is_file():
        problems.append(f"data.root: {manifest} not found (m2f-bench prepare ... --out)")
    init = getattr(config.model, "init", None)
    try:
        if init:
            weights = resolve_weights(init, config.model.name)
            found = weights_network(weights)
            if found != config.model.name:
                problems.append(f"model.init: {weights} holds {found!r} weights")
    except M2FError as exc:
        problems.append(f"model.init: {exc}")
    if getattr(config.data, "holes", "exact") == "predicted":
        try:
            weights = resolve_weights(
                config.data.segmenter, "mask-unet", kind="segmenter", file="segmenter"
            )
            if not weights.is_file():
                raise M2FError(f"weight file not found: {weights}")
        except M2FError as exc:
            problems.append(f"data.segmenter: {exc}")
    return problems


def config_to_yaml(config: TrainConfig | SegmenterConfig) -> str:
    """The validated config as YAML (defaults filled in), for the run folder."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
