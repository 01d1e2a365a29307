"""Shared pieces of the learned inpainters: conv blocks, weight files, the inference wrapper.

The generators are laid out for CPU speed. A 128 px crop is folded into 2×2 pixel blocks
(pixel-unshuffle) before the first convolution and unfolded (pixel-shuffle) after the
last, so no convolution runs at full resolution; upsampling is a 1×1 convolution plus a
pixel-shuffle instead of a 3×3 convolution at the finer scale. There is no batch
normalisation: an image's output never depends on the other images of its batch, which
keeps inference batch-independent and lets data-parallel training equal one big batch.

Tensor conventions, shared by training, inference and the ONNX export: images are RGB
N×3×H×W in [-1, 1]; the hole is N×1×H×W, 1 inside the hole and 0 elsewhere; the network
zeroes the hole pixels itself, so it never sees what the synthetic mask drew there.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from m2f_bench.errors import M2FError, ModelNotFoundError
from m2f_bench.inpainters.cards import resolve_weights

#: ``format`` metadata of a generator weight file written by m2f-bench.
WEIGHTS_FORMAT = "m2f-bench-generator/1"


def conv3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution with 'same' padding (halving the size at stride 2)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


class ConvBlock(nn.Sequential):
    """Two 3×3 convolutions with LeakyReLU; the first may halve the resolution."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            conv3(in_channels, out_channels, stride),
            nn.LeakyReLU(0.2, inplace=True),
            conv3(out_channels, out_channels),
            nn.LeakyReLU(0.2, inplace=True),
        )


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions added to their input (the bottleneck's context mixing)."""

    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = conv3(channels, channels)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class Upsample(nn.Sequential):
    """Doubles the resolution: 1×1 convolution to 4× the channels, then pixel-shuffle."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, 4 * out_channels, 1),
            nn.PixelShuffle(2),
            nn.LeakyReLU(0.2, inplace=True),
        )


class EncoderDecoderGenerator(nn.Module):
    """Encoder–decoder over pixel-unshuffled input, with or without U-Net skips.

    Args:
        skips: Whether decoder levels concatenate the encoder features of their
            resolution (``unet-gan``) or see only the bottleneck (``baseline-gan``).
        widths: Channels per level, finest first; each level halves the resolution.
        bottleneck_blocks: Residual blocks at the coarsest level.
        unshuffle: Side of the pixel blocks folded into channels at the input.
    """

    def __init__(
        self,
        skips: bool,
        widths: Sequence[int] = (32, 64, 128, 256),
        bottleneck_blocks: int = 2,
        unshuffle: int = 2,
    ) -> None:
        super().__init__()
        self.skips = skips
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise M2FError(f"widths must be at least two positive channel counts, got {widths}")
        self.arch_args = {
            "widths": widths,
            "bottleneck_blocks": int(bottleneck_blocks),
            "unshuffle": int(unshuffle),
        }
        self.unshuffle = unshuffle
        #: Input sides must be multiples of this (the coarsest level's cell size).
        self.multiple = unshuffle * 2 ** (len(widths) - 1)
        stem_channels = 4 * unshuffle * unshuffle
        self.encoder = nn.ModuleList(
            [ConvBlock(stem_channels, widths[0])]
            + [ConvBlock(a, b, stride=2) for a, b in itertools.pairwise(widths)]
        )
        # Growing dilation widens the receptive field across the whole coarse grid.
        self.bottleneck = nn.Sequential(
            *[ResidualBlock(widths[-1], dilation=2**i) for i in range(bottleneck_blocks)]
        )
        self.upsample = nn.ModuleList([Upsample(b, a) for a, b in itertools.pairwise(widths)])
        merge_in = [2 * w if self.skips else w for w in widths[:-1]]
        self.merge = nn.ModuleList(
            [ConvBlock(c, w) for c, w in zip(merge_in, widths[:-1], strict=True)]
        )
        self.head = nn.Sequential(
            nn.Conv2d(widths[0], 3 * unshuffle * unshuffle, 3, padding=1),
            nn.PixelShuffle(unshuffle),
        )

    def forward(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """Predict the whole crop.

        Args:
            image: Masked crops, N×3×H×W in [-1, 1]; hole pixels are ignored.
            hole: N×1×H×W, 1 inside the hole.

        Returns:
            N×3×H×W in [-1, 1], every pixel predicted (callers composite).
        """
        x = torch.cat([image * (1 - hole), hole], dim=1)
        x = F.pixel_unshuffle(x, self.unshuffle)
        features = []
        for level in self.encoder:
            x = level(x)
            features.append(x)
        x = self.bottleneck(x)
        for i in reversed(range(len(self.upsample))):
            x = self.upsample[i](x)
            if self.skips:
                x = torch.cat([x, features[i]], dim=1)
            x = self.merge[i](x)
        return torch.tanh(self.head(x))


def save_generator(path: str | Path, network: EncoderDecoderGenerator, name: str) -> None:
    """Write a generator as safetensors, with what rebuilding it needs in the metadata.

    Args:
        path: Destination ``.safetensors`` file (written as given; callers make it atomic).
        network: The generator.
        name: The inpainter it belongs to (``unet-gan``, ``baseline-gan``).
    """
    from m2f_bench._io import write_safetensors

    tensors = {k: v.detach().contiguous().cpu() for k, v in network.state_dict().items()}
    metadata = {
        "format": WEIGHTS_FORMAT,
        "inpainter": name,
        "arch_args": json.dumps(network.arch_args),
    }
    write_safetensors(path, tensors, metadata)


def read_weights(
    path: Path, weights_format: str = WEIGHTS_FORMAT, what: str = "generator"
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of an m2f-bench weight file; nothing is unpickled.

    Args:
        path: The ``.safetensors`` file.
        weights_format: The ``format`` its metadata must name (generators by default).
        what: What to call it in messages (``generator``, ``segmenter``).

    Raises:
        M2FError: Unreadable, or not a weight file of that format.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise M2FError(f"cannot read {what} weights {path}: {exc}") from None
    if metadata.get("format") != weights_format:
        raise M2FError(f"{path} is not an m2f-bench {what} weight file")
    return metadata, tensors


def read_generator(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and tensors of a generator weight file (:func:`read_weights`)."""
    return read_weights(path)


def load_network(weights: str | Path | None, name: str, skips: bool) -> EncoderDecoderGenerator:
    """Rebuild a generator from its weight file (``weights`` as :func:`resolve_weights`).

    Raises:
        M2FError: The file belongs to another inpainter or does not fit the architecture.
    """
    path = resolve_weights(weights, name)
    if not path.is_file():
        raise ModelNotFoundError(f"inpainter {name!r}: weight file not found: {path}")
    metadata, tensors = read_generator(path)
    if metadata.get("inpainter") != name:
        raise M2FError(f"inpainter {name!r}: {path} holds {metadata.get('inpainter')!r} weights")
    network = EncoderDecoderGenerator(skips, **json.loads(metadata["arch_args"]))
    try:
        network.load_state_dict({k: v.float() for k, v in tensors.items()})
    except RuntimeError as exc:
        raise M2FError(f"inpainter {name!r}: {path} does not fit the architecture: {exc}") from None
    return network.eval()


def to_tensors(images: np.ndarray, holes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Uint8 N×H×W×3 crops and bool N×H×W holes → network inputs (channels-last memory)."""
    image = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    hole = torch.from_numpy(holes).unsqueeze(1).float()
    return (
        image.contiguous(memory_format=torch.channels_last),
        hole.contiguous(memory_format=torch.channels_last),
    )


def to_uint8(output: torch.Tensor) -> np.ndarray:
    """Network output in [-1, 1], N×3×H×W → uint8 N×H×W×3."""
    scaled = (output.float() + 1.0) * 127.5
    return scaled.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
