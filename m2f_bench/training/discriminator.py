"""The PatchGAN discriminator, conditioned on the masked input.

It judges 8×8 patches of a 128 px crop (each cell sees a 16 px square plus context) from
the candidate image, the masked input and the hole. Spectral norm on every convolution
bounds its Lipschitz constant, which keeps the hinge-loss game stable without gradient
penalties. It is small and folds 2×2 pixel blocks into channels first, because on a CPU
every discriminator pass costs as much as a good part of the generator's.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """Strided 4×4 convolutions down to a grid of real/fake logits.

    Args:
        widths: Channels of the strided layers; each halves the resolution.
        unshuffle: Side of the pixel blocks folded into channels at the input.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128), unshuffle: int = 2) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        # Candidate RGB + masked RGB + hole, per pixel of each block.
        channels = [7 * unshuffle * unshuffle, *widths]
        self.layers = nn.ModuleList(
            [
                spectral_norm(nn.Conv2d(a, b, 4, stride=2, padding=1))
                for a, b in itertools.pairwise(channels)
            ]
        )
        self.logits = spectral_norm(nn.Conv2d(channels[-1], 1, 3, padding=1))

    def forward(
        self, candidate: torch.Tensor, masked: torch.Tensor, hole: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Score a candidate restoration.

        Args:
            candidate: The image to judge, N×3×H×W in [-1, 1] (real or composited).
            masked: The masked input, N×3×H×W in [-1, 1]; hole pixels are zeroed here.
            hole: N×1×H×W, 1 inside the hole.

        Returns:
            Patch logits N×1×h×w, and every layer's activations (for feature matching).
        """
        x = torch.cat([candidate, masked * (1 - hole), hole], dim=1)
        x = F.pixel_unshuffle(x, self.unshuffle)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.logits(x), features
