"""Generator and discriminator losses.

Every term works on images in [-1, 1] (N×3×H×W) and holes N×1×H×W (1 = hole). The SSIM
term uses the settings of the evaluation metric (:mod:`m2f_bench.metrics.pixel`: Gaussian
window σ = 1.5 over 11×11, K1 = 0.01, K2 = 0.03, population covariance, the border strip
left out), so the loss optimises the number the benchmark reports.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from m2f_bench.metrics.pixel import SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WIN


def hole_weighted_l1(
    output: torch.Tensor,
    target: torch.Tensor,
    hole: torch.Tensor,
    hole_weight: float,
    valid_weight: float,
) -> torch.Tensor:
    """Mean absolute error with hole pixels weighted ``hole_weight``, others ``valid_weight``.

    The raw output (not the composite) is compared, so pixels outside the hole still teach
    the network the face; the hole, which is all that survives compositing, counts more.
    """
    weight = valid_weight + (hole_weight - valid_weight) * hole
    return (weight * (output - target).abs()).mean()


def hole_weighted_mse(
    output: torch.Tensor,
    target: torch.Tensor,
    hole: torch.Tensor,
    hole_weight: float,
    valid_weight: float,
) -> torch.Tensor:
    """Mean squared error with the same pixel weights as :func:`hole_weighted_l1`.

    PSNR is a function of the squared error, so this is the term that optimises it: L1
    pulls the hole toward the per-pixel median, squared error toward the mean.
    """
    weight = valid_weight + (hole_weight - valid_weight) * hole
    return (weight * (output - target).square()).mean()


def _gaussian_window(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    radius = (SSIM_WIN - 1) // 2
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    g = torch.exp(-(x * x) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image of two batches in [-1, 1], averaged over channels.

    Unpadded ("valid") convolutions give exactly the map's interior that the metric
    averages, so no padding convention enters.
    """
    channels = x.shape[1]
    g = _gaussian_window(x.device, x.dtype)
    gx = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    gy = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)

    def blur(a: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(a, gx, groups=channels), gy, groups=channels)

    # To the [0, 1] scale, where the data range is 1.
    x, y = (x + 1) / 2, (y + 1) / 2
    ux, uy = blur(x), blur(y)
    vx = blur(x * x) - ux * ux
    vy = blur(y * y) - uy * uy
    vxy = blur(x * y) - ux * uy
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def ssim_loss(composite: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 − SSIM`` of the composited crop against the clean one, over the batch."""
    return 1 - ssim(composite, target).mean()


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Discriminator loss: ``hinge`` or ``lsgan`` (least squares, targets 1 and 0)."""
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return ((real_logits - 1) ** 2).mean() + (fake_logits**2).mean()


def g_adversarial_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Generator's adversarial loss for ``hinge`` or ``lsgan``."""
    if kind == "hinge":
        return -fake_logits.mean()
    return ((fake_logits - 1) ** 2).mean()


def feature_matching_loss(
    fake_features: list[torch.Tensor], real_features: list[torch.Tensor]
) -> torch.Tensor:
    """Mean over discriminator layers of the L1 distance between fake and real activations."""
    terms = [
        (f - r.detach()).abs().mean() for f, r in zip(fake_features, real_features, strict=True)
    ]
    return torch.stack(terms).mean()
