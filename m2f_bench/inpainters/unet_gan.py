"""``unet-gan``: the Mask2Face inpainter, a U-Net generator trained with a PatchGAN.

Importing this module imports torch; the registry loads it only when ``unet-gan`` is used.
"""

from __future__ import annotations

from m2f_bench.inpainters._nets import EncoderDecoderGenerator, GeneratorInpainter


class UNetGenerator(EncoderDecoderGenerator):
    """U-Net: every decoder level concatenates the encoder features of its resolution.

    The skips carry the known pixels around the hole to the output at full detail, which
    is what lets the filled region match the face around it.
    """

    skips = True


class UNetGANInpainter(GeneratorInpainter):
    """Mask2Face U-Net GAN (trained with ``m2f-bench train``; weights: file, card or run)."""

    name = "unet-gan"
    model_name = "unet-gan"
    network_class = UNetGenerator
