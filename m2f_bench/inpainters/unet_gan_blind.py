"""``unet-gan-blind``: Mask2Face for real photos — it finds the mask itself, then fills it.

A model folder (``models/unet-gan-blind-lfw128/``) holds two networks named by its card:
``segmenter_weights`` (a ``mask-unet`` segmenter: which pixels a face mask covers) and
``generator_weights`` (a ``unet-gan`` generator that fills that hole). Given only a masked crop,
:meth:`BlindUNetGANInpainter.unmask` returns the restored crop and the hole it filled; in
a protocol it defaults to ``hole: predicted``, so the report shows it as it would work on
a real photo. The composite network (:class:`BlindUnmasker`) is what ``export-onnx``
writes: ``image`` in; ``output``, ``hole`` and ``hole_probability`` out.

This module imports no torch at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from m2f_bench.errors import M2FError, ModelNotFoundError
from m2f_bench.inpainters.unet_gan import UNetGANInpainter


def blind_model_files(weights: str | Path | None) -> tuple[Path, Path, dict[str, Any]]:
    """The (generator, segmenter) weight files of a blind model folder and its card.

    Raises:
        ModelNotFoundError: No such folder, no card, or a file the card names is missing.
    """
    from m2f_bench.inpainters.cards import find_model, read_card, weights_path

    where = "inpainter 'unet-gan-blind'"
    folder = find_model("unet-gan-blind") if weights is None else weights_path(weights, where)
    if not (folder / "card.yaml").is_file():
        raise ModelNotFoundError(
            f"inpainter 'unet-gan-blind': {folder} is not a model folder with card.yaml "
            "(naming generator_weights and segmenter_weights files)"
        )
    card = read_card(folder)
    files = []
    for key in ("generator", "segmenter"):
        path = folder / str(card.get(f"{key}_weights", f"{key}.safetensors"))
        if not path.is_file():
            raise ModelNotFoundError(f"inpainter 'unet-gan-blind': {key} file not found: {path}")
        files.append(path)
    return files[0], files[1], card


class BlindUNetGANInpainter(UNetGANInpainter):
    """Mask2Face blind unmasking: a mask segmenter finds the hole, the U-Net GAN fills it.

    Args:
        weights: A model folder whose ``card.yaml`` names ``generator_weights`` and
            ``segmenter_weights`` files; default: the model whose card says
            ``inpainter: unet-gan-blind``.
        device: ``cpu`` or ``cuda``.
        batch_size: Crops per forward pass.
        size: Working size (see ``unet-gan``); the segmenter runs at its own 128 px.
        threshold, dilate, min_coverage: How probabilities become a hole (see
            :class:`~m2f_bench.segmenters.Segmenter`).
    """

    name = "unet-gan-blind"
    model_name: ClassVar[str] = "unet-gan-blind"
    #: Finds the hole itself: protocols default to ``hole: predicted`` for it.
    blind: ClassVar[bool] = True

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        size: int | list[int] | None = None,
        threshold: float = 0.5,
        dilate: int = 0,
        min_coverage: float = 0.03,
        flip_tta: bool = False,
    ) -> None:
        from m2f_bench.segmenters.mask_unet import MaskUNetSegmenter

        generator, segmenter, self.card = blind_model_files(weights)
        super().__init__(
            str(generator), device, batch_size, size, flip_tta, network_name="unet-gan"
        )
        self.segmenter = MaskUNetSegmenter(
            str(segmenter),
            device,
            batch_size=max(batch_size, 1),
            threshold=threshold,
            dilate=dilate,
            min_coverage=min_coverage,
        )

    @classmethod
    def check_spec(cls, args: Mapping[str, Any]) -> None:
        """The generator's arguments, then threshold, dilate and min_coverage."""
        from m2f_bench.segmenters import Segmenter

        super().check_spec(args)
        Segmenter.check_hole_settings(
            args.get("threshold", 0.5), args.get("dilate", 0), args.get("min_coverage", 0.03)
        )

    @classmethod
    def check_files(cls, args: dict[str, Any], settings: Any) -> None:
        blind_model_files(args.get("weights"))

    def fingerprint(self) -> dict[str, Any]:
        return super().fingerprint() | {"segmenter": self.segmenter.fingerprint()}

    @classmethod
    def build_network(cls, **arch_args: Any):
        raise M2FError(
            "unet-gan-blind is assembled from a trained unet-gan generator and a mask-unet "
            "segmenter (m2f-bench package-blind), not trained as one network"
        )

    def predict_holes(self, images: np.ndarray) -> np.ndarray:
        """Bool N×H×W: where the segmenter finds a face mask (empty: no mask found)."""
        return self.segmenter.holes(images)

    def unmask(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Restore masked crops without being told where the mask is.

        Returns:
            The restored uint8 crops (unchanged where no mask was found) and the bool
            holes that were filled.
        """
        holes = self.predict_holes(images)
        return self(images, holes), holes
