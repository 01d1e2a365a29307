"""The mask segmenter network and its weight files (torch imported here, not by the registry).

A small U-Net over pixel-unshuffled input, built from the generators' blocks
(:mod:`m2f_bench.inpainters._nets`): no batch normalisation, so a crop's prediction never
depends on the other crops of its batch. Input: RGB N×3×H×W in [-1, 1]; output: hole
logits N×1×H×W (sigmoid > 0.5: the pixel belongs to a face mask).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from m2f_bench.errors import M2FError, ModelNotFoundError
from m2f_bench.inpainters._nets import ConvBlock, ResidualBlock, Upsample, read_weights

#: ``format`` metadata of a segmenter weight file written by m2f-bench.
WEIGHTS_FORMAT = "m2f-bench-segmenter/1"


class MaskSegmenterNet(nn.Module):
    """U-Net with skips that predicts, per pixel, whether a face mask covers it.

    Args:
        widths: Channels per level, finest first; each level halves the resolution.
        bottleneck_blocks: Dilated residual blocks at the coarsest level.
        unshuffle: Side of the pixel blocks folded into channels at the input.
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64, 128),
        bottleneck_blocks: int = 2,
        unshuffle: int = 2,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise M2FError(f"widths must be at least two positive channel counts, got {widths}")
        self.arch_args = {
            "widths": widths,
            "bottleneck_blocks": int(bottleneck_blocks),
            "unshuffle": int(unshuffle),
        }
        self.unshuffle = unshuffle
        self.multiple = unshuffle * 2 ** (len(widths) - 1)
        self.encoder = nn.ModuleList(
            [ConvBlock(3 * unshuffle * unshuffle, widths[0])]
            + [ConvBlock(a, b, stride=2) for a, b in itertools.pairwise(widths)]
        )
        self.bottleneck = nn.Sequential(
            *[ResidualBlock(widths[-1], dilation=2**i) for i in range(bottleneck_blocks)]
        )
        self.upsample = nn.ModuleList([Upsample(b, a) for a, b in itertools.pairwise(widths)])
        self.merge = nn.ModuleList([ConvBlock(2 * w, w) for w in widths[:-1]])
        self.head = nn.Sequential(
            nn.Conv2d(widths[0], unshuffle * unshuffle, 3, padding=1),
            nn.PixelShuffle(unshuffle),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Hole logits N×1×H×W of RGB crops N×3×H×W in [-1, 1] (sides: multiples of
        :attr:`multiple`)."""
        x = F.pixel_unshuffle(image, self.unshuffle)
        features = []
        for level in self.encoder:
            x = level(x)
            features.append(x)
        x = self.bottleneck(x)
        for i in reversed(range(len(self.upsample))):
            x = self.merge[i](torch.cat([self.upsample[i](x), features[i]], dim=1))
        return self.head(x)


def save_segmenter(path: str | Path, network: MaskSegmenterNet, name: str) -> None:
    """Write a segmenter as safetensors with its architecture in the metadata."""
    from m2f_bench._io import write_safetensors

    tensors = {k: v.detach().contiguous().cpu() for k, v in network.state_dict().items()}
    metadata = {
        "format": WEIGHTS_FORMAT,
        "segmenter": name,
        "arch_args": json.dumps(network.arch_args),
    }
    write_safetensors(path, tensors, metadata)


def load_segmenter_network(path: Path, name: str) -> MaskSegmenterNet:
    """Rebuild a segmenter from its weight file; nothing is unpickled.

    Raises:
        M2FError: Missing file, not a segmenter weight file, another segmenter's weights,
            or weights that do not fit the architecture.
    """
    if not path.is_file():
        raise ModelNotFoundError(f"segmenter {name!r}: weight file not found: {path}")
    metadata, tensors = read_weights(path, WEIGHTS_FORMAT, "segmenter")
    if metadata.get("segmenter") != name:
        raise M2FError(f"segmenter {name!r}: {path} holds {metadata.get('segmenter')!r} weights")
    network = MaskSegmenterNet(**json.loads(metadata["arch_args"]))
    try:
        network.load_state_dict({k: v.float() for k, v in tensors.items()})
    except RuntimeError as exc:
        raise M2FError(f"segmenter {name!r}: {path} does not fit the architecture: {exc}") from None
    return network.eval()
