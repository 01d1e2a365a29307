"""Inpainters: one registry, one file per family, a factory that builds one from a spec.

Built-ins: ``masked`` (the lower bound), ``opencv-telea``, ``opencv-ns``, ``biharmonic``;
and three ways to benchmark someone else's model without touching this package:
``python`` (an importable class), ``onnx`` (an exported model) and ``command`` (an
external program). Installed packages add more through the ``m2f_bench.inpainters``
entry-point group.
"""

from __future__ import annotations

from m2f_bench.inpainters import classical, command, python  # noqa: F401  (registration)
from m2f_bench.inpainters.base import INPAINTERS, Inpainter, build_inpainter, list_inpainters

# ONNX Runtime is imported only when an onnx inpainter is built.
INPAINTERS.register_lazy("onnx", "m2f_bench.inpainters.onnx:ONNXInpainter")
# Learned generators import torch; they are loaded only when a protocol or training uses them.
INPAINTERS.register_lazy("unet-gan", "m2f_bench.inpainters.unet_gan:UNetGANInpainter")
INPAINTERS.register_lazy(
    "unet-gan-blind", "m2f_bench.inpainters.unet_gan_blind:BlindUNetGANInpainter"
)
INPAINTERS.register_lazy("baseline-gan", "m2f_bench.inpainters.baseline_gan:BaselineGANInpainter")
# Optional extras: Keras models (m2f-bench[keras]), diffusers pipelines (m2f-bench[diffusers]).
INPAINTERS.register_lazy("keras", "m2f_bench.inpainters.keras_model:KerasInpainter")
INPAINTERS.register_lazy("diffusers", "m2f_bench.inpainters.diffusion:DiffusersInpainter")

__all__ = ["INPAINTERS", "Inpainter", "build_inpainter", "list_inpainters"]
