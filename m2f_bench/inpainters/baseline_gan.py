"""``baseline-gan``: a Context-Encoder-style encoder–decoder without skip connections.

The ablation of ``unet-gan``: the same depth, widths, losses, data and step budget, but the
decoder sees only the bottleneck, so everything it paints must pass through the coarsest
grid. Importing this module imports torch; the registry loads it only when used.
"""

from __future__ import annotations

from m2f_bench.inpainters._nets import EncoderDecoderGenerator, GeneratorInpainter


class ContextEncoderGenerator(EncoderDecoderGenerator):
    """Encoder–decoder whose decoder levels see no encoder features."""

    skips = False


class BaselineGANInpainter(GeneratorInpainter):
    """Context-Encoder-style GAN without skips (trained with ``m2f-bench train``)."""

    name = "baseline-gan"
    model_name = "baseline-gan"
    network_class = ContextEncoderGenerator
