"""Contact sheets of masked faces, for looking at what the synthesis does."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from m2f_bench.masks.synth import MASK_TYPES, apply_mask


def contact_sheet(
    faces: Sequence[tuple[np.ndarray, np.ndarray, str]],
    mask_types: Sequence[str] = MASK_TYPES,
    *,
    seed: int = 0,
    labels: bool = True,
) -> np.ndarray:
    """One row per face: the crop, then the crop under each mask type.

    Args:
        faces: ``(crop, landmarks, image_id)`` triples; crops of one size.
        mask_types: The columns after the original.
        seed: Passed to :func:`apply_mask`.
        labels: Put a header row naming the columns on top.

    Returns:
        The sheet, uint8 RGB, ``len(faces)`` tiles high and ``1 + len(mask_types)`` wide,
        plus the header row.
    """
    rows = []
    for crop, landmarks, image_id in faces:
        tiles = [np.asarray(crop)]
        for mask_type in mask_types:
            tiles.append(apply_mask(crop, landmarks, mask_type, image_id=image_id, seed=seed).image)
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    if not labels:
        return sheet
    size = np.asarray(faces[0][0]).shape[1]
    header = np.full((max(12, size // 8), sheet.shape[1], 3), 255, np.uint8)
    scale = size / 350
    for column, name in enumerate(["original", *mask_types]):
        origin = (column * size + size // 20, header.shape[0] * 3 // 4)
        cv2.putText(
            header, name, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA
        )
    return np.concatenate([header, sheet], axis=0)
