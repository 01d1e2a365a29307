"""Synthetic face masks (surgical, N95, KN95, cloth) drawn from the 68 dlib landmarks."""

from __future__ import annotations

from m2f_bench.masks.preview import contact_sheet
from m2f_bench.masks.synth import (
    MASK_STYLES,
    MASK_TYPES,
    MaskedFace,
    MaskStyle,
    apply_mask,
    mask_rng,
)

__all__ = [
    "MASK_STYLES",
    "MASK_TYPES",
    "MaskStyle",
    "MaskedFace",
    "apply_mask",
    "contact_sheet",
    "mask_rng",
]
