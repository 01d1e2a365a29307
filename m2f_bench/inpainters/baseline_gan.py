"""``baseline-gan``: a Context-Encoder-style encoder–decoder without skip connections.

The ablation of ``unet-gan``: the same depth, widths, losses, data and step budget, but the
decoder sees only the bottleneck, so everything it paints must pass through the coarsest
grid. Like ``unet-gan`` this module imports no torch until an inpainter is built.
"""

from __future__ import annotations

from m2f_bench.inpainters.unet_gan import UNetGANInpainter


class BaselineGANInpainter(UNetGANInpainter):
    """Context-Encoder-style GAN without skips (trained with ``m2f-bench train``).

    Args:
        weights: As for ``unet-gan``; the file must hold ``baseline-gan`` weights.
        device: ``cpu`` or ``cuda``.
        batch_size: Crops per forward pass.
    """

    name = "baseline-gan"
    model_name = "baseline-gan"
    skips = False
