"""Mask segmenters: find the face mask in a crop when nobody says where the hole is.

A segmenter maps uint8 N×H×W×3 RGB crops to a per-pixel probability that a face mask
covers the pixel. :meth:`Segmenter.holes` turns those into the holes an inpainter fills:
the pixels above ``threshold``, grown by ``dilate`` pixels (the anti-aliased rim of a mask
is where a segmenter is least sure), and no hole at all when less than ``min_coverage`` of
the crop is found (then the face is taken as unmasked and left untouched).

Registered like the other plug-in families: built-in ``mask-unet`` (trained with
``m2f-bench train`` on synthetic masks), third parties through the
``m2f_bench.segmenters`` entry-point group. This module imports no torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from m2f_bench.errors import M2FError
from m2f_bench.registry import Registry

#: Segmenters by name; third parties add theirs through ``m2f_bench.segmenters``.
SEGMENTERS: Registry[Callable[..., Any]] = Registry("segmenter", "m2f_bench.segmenters")
SEGMENTERS.register_lazy("mask-unet", "m2f_bench.segmenters.mask_unet:MaskUNetSegmenter")

#: The segmenter a protocol's ``hole: predicted`` uses when it names none.
DEFAULT_SEGMENTER = "mask-unet"


class Segmenter(ABC):
    """Predicts where a face mask is.

    Args:
        threshold: Probability above which a pixel is in the hole.
        dilate: Pixels the thresholded hole is grown by (a square structuring element).
        min_coverage: Share of the crop the hole must reach for a mask to count as found;
            below it the hole is empty.
    """

    name: str = "segmenter"

    def __init__(self, threshold: float = 0.5, dilate: int = 0, min_coverage: float = 0.03):
        self.check_hole_settings(threshold, dilate, min_coverage)
        self.threshold, self.dilate, self.min_coverage = float(threshold), dilate, min_coverage

    @staticmethod
    def check_hole_settings(threshold: Any, dilate: Any, min_coverage: Any) -> None:
        """Raises M2FError (one line naming the argument) for a value the hole rule refuses."""

        def number(value: Any) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool)

        if not (number(threshold) and 0 < threshold < 1):
            raise M2FError(f"segmenter: threshold must be between 0 and 1, got {threshold!r}")
        if not isinstance(dilate, int) or isinstance(dilate, bool) or dilate < 0:
            raise M2FError(f"segmenter: dilate must be an integer ≥ 0, got {dilate!r}")
        if not (number(min_coverage) and 0 <= min_coverage < 1):
            raise M2FError(f"segmenter: min_coverage must be in [0, 1), got {min_coverage!r}")

    def fingerprint(self) -> dict[str, Any]:
        """The settings that shape the holes (and, in subclasses, the weights' sha256)."""
        return {
            "type": self.name,
            "threshold": self.threshold,
            "dilate": self.dilate,
            "min_coverage": self.min_coverage,
        }

    @abstractmethod
    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Float32 N×H×W in [0, 1] for uint8 N×H×W×3 RGB crops."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """:meth:`probabilities`, with the batch and the result checked."""
        if not (
            isinstance(images, np.ndarray)
            and images.dtype == np.uint8
            and images.ndim == 4
            and images.shape[-1] == 3
        ):
            shape = getattr(images, "shape", None)
            raise M2FError(f"segmenter {self.name!r}: images must be uint8 N×H×W×3, got {shape}")
        if len(images) == 0:
            return np.zeros(images.shape[:3], np.float32)
        probs = np.asarray(self.probabilities(images), dtype=np.float32)
        if probs.shape != images.shape[:3]:
            raise M2FError(
                f"segmenter {self.name!r} returned {probs.shape}; expected {images.shape[:3]}"
            )
        return probs

    def holes(self, images: np.ndarray) -> np.ndarray:
        """Bool N×H×W holes (see the module docstring)."""
        return holes_from_probabilities(
            self(images), self.threshold, self.dilate, self.min_coverage
        )


def holes_from_probabilities(
    probs: np.ndarray, threshold: float = 0.5, dilate: int = 0, min_coverage: float = 0.03
) -> np.ndarray:
    """Threshold, drop holes smaller than ``min_coverage`` of the crop, then dilate."""
    import cv2

    holes = np.asarray(probs) > threshold
    found = holes.reshape(len(holes), -1).mean(axis=1) >= min_coverage
    holes[~found] = False
    if dilate:
        kernel = np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8)
        holes = np.stack([cv2.dilate(h.astype(np.uint8), kernel) > 0 for h in holes])
    return holes


def mask_found(holes: np.ndarray) -> np.ndarray:
    """Bool N: whether each hole is non-empty (a mask was found)."""
    return np.asarray(holes).reshape(len(holes), -1).any(axis=1)


def hole_iou(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Intersection over union of bool N×H×W holes, per crop (1.0 where both are empty)."""
    p = np.asarray(predicted, bool).reshape(len(predicted), -1)
    t = np.asarray(true, bool).reshape(len(true), -1)
    inter = (p & t).sum(axis=1)
    union = (p | t).sum(axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def build_segmenter(spec: Mapping[str, Any] | str | None = None) -> Segmenter:
    """Build a segmenter from ``{"type": name, **arguments}`` (or just a name; None: the
    default).

    Raises:
        M2FError: Unknown type or argument, or the entry does not make a Segmenter.
    """
    from m2f_bench.inpainters.base import construct

    if spec is None or isinstance(spec, str):
        spec = {"type": spec or DEFAULT_SEGMENTER}
    arguments = dict(spec)
    type_name = arguments.pop("type", DEFAULT_SEGMENTER)
    if not isinstance(type_name, str):
        raise M2FError(f"a segmenter needs 'type:' naming one of {', '.join(SEGMENTERS)}")
    made = construct(f"segmenter {type_name!r}", SEGMENTERS.get(type_name), arguments)
    if not isinstance(made, Segmenter):
        raise M2FError(f"segmenter {type_name!r} did not make a Segmenter")
    made.name = type_name
    return made
