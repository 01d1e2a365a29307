"""Face alignment: five keypoints → a square crop whose geometry contains the ArcFace chip.

The crop is a fixed square window in the coordinates of the standard 112×112 ArcFace
template (insightface ``face_align.arcface_dst``): x ∈ [-24, 136], y ∈ [-16, 144].
That window holds the whole face, forehead to below the chin (measured on LFW: the
chin landmark lies at y ≤ 131 for 99 % of faces), and a recognizer chip is a fixed
affine warp of the crop, so no second detection is needed. Measured on LFW View 2
with SCRFD-500M keypoints and the MobileFaceNet ArcFace model, chips taken this way
from 128-px crops verify at 99.37 % (bicubic warps) against 99.32 % for chips warped
straight from the photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

#: The five-point ArcFace template for 112×112 chips: eye centres, nose tip, mouth corners
#: (left and right as seen in the image), from insightface ``utils/face_align.py``.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
CHIP_SIZE = 112
#: Side of the crop window and its centre, in ArcFace-chip pixels.
CROP_SPAN = 160.0
CROP_CENTER = (56.0, 64.0)


@dataclass(frozen=True)
class ChipSpec:
    """A recognizer's chip: a window of the ArcFace template, sampled at a pixel size.

    Positions are template pixels, the coordinates of :data:`ARCFACE_TEMPLATE`; a chip
    pixel ``q`` samples template point ``window[:2] + q / scale``, insightface's convention
    for chips other than 112×112 (``face_align.estimate_norm`` scales the template). A
    112×96 model takes ``window=(8, 0, 104, 112)``: columns 8–104 of the 112×112 chip.

    Args:
        size: Chip height and width in pixels.
        window: Left, top, right and bottom edge in template pixels; it must keep the
            chip's aspect ratio (one scale for both axes) and lie inside the crop.
    """

    size: tuple[int, int] = (CHIP_SIZE, CHIP_SIZE)
    window: tuple[float, float, float, float] = (0.0, 0.0, float(CHIP_SIZE), float(CHIP_SIZE))

    def __post_init__(self) -> None:
        height, width = self.size
        if not (0 < height <= 2048 and 0 < width <= 2048):
            raise ValueError(f"chip size must be 1 to 2048 px a side, got {height}×{width}")
        check_window(self.window)
        left, top, right, bottom = self.window
        if not np.isclose((right - left) * height, (bottom - top) * width, rtol=1e-6):
            raise ValueError(
                f"chip window {right - left:g}×{bottom - top:g} (width×height, template px) "
                f"does not have the aspect ratio of the {height}×{width} (height×width) chip"
            )

    @classmethod
    def centred(cls, height: int, width: int) -> ChipSpec:
        """The window centred on the 112×112 chip whose longer side spans 112 template px."""
        span = CHIP_SIZE / max(height, width)
        half_w, half_h = width * span / 2.0, height * span / 2.0
        mid = CHIP_SIZE / 2.0
        return cls((height, width), (mid - half_w, mid - half_h, mid + half_w, mid + half_h))

    @property
    def scale(self) -> float:
        """Chip pixels per template pixel."""
        return self.size[1] / (self.window[2] - self.window[0])

    def arcface_box(self) -> tuple[int, int, int, int] | None:
        """The window as whole pixels of the 112×112 chip, if it is one at scale 1."""
        box = tuple(int(v) for v in self.window)
        inside = min(box[:2]) >= 0 and max(box[2:]) <= CHIP_SIZE
        if self.scale == 1.0 and box == self.window and inside:
            return box
        return None


def check_window(window: tuple[float, float, float, float]) -> None:
    """Raise ValueError unless ``window`` is a non-empty box inside the crop window."""
    left, top, right, bottom = window
    if not (left < right and top < bottom):
        raise ValueError(f"chip window {list(window)} must have left < right and top < bottom")
    x0, y0 = (c - CROP_SPAN / 2.0 for c in CROP_CENTER)
    x1, y1 = x0 + CROP_SPAN, y0 + CROP_SPAN
    if left < x0 or top < y0 or right > x1 or bottom > y1:
        raise ValueError(
            f"chip window {list(window)} reaches outside the aligned crop "
            f"(x {x0:g}…{x1:g}, y {y0:g}…{y1:g} in template px)"
        )


#: The standard 112×112 ArcFace chip.
ARCFACE_CHIP = ChipSpec()


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, shift) from src to dst.

    Umeyama, "Least-squares estimation of transformation parameters between two point
    patterns", IEEE TPAMI 13(4), 1991 — the estimator insightface uses through
    scikit-image's ``SimilarityTransform``.

    Returns:
        The 2×3 affine matrix.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_c.var(0).sum()
    shift = dst_mean - scale * rot @ src_mean
    return np.hstack([scale * rot, shift[:, None]])


@dataclass(frozen=True)
class CropGeometry:
    """The aligned crop of a given side length.

    Args:
        size: Side of the square crop in pixels (128 by default; 256 for finer work).
    """

    size: int = 128

    def __post_init__(self) -> None:
        if not 32 <= self.size <= 2048:
            raise ValueError(f"crop size must be between 32 and 2048 px, got {self.size}")

    @property
    def scale(self) -> float:
        """Crop pixels per ArcFace-chip pixel."""
        return self.size / CROP_SPAN

    @cached_property
    def template(self) -> np.ndarray:
        """Where the five keypoints land in the crop (5×2)."""
        centre = np.asarray(CROP_CENTER)
        return (ARCFACE_TEMPLATE - centre) * self.scale + self.size / 2.0

    @cached_property
    def chip_matrix(self) -> np.ndarray:
        """The fixed 2×3 affine warp from crop pixels to the 112×112 ArcFace chip."""
        return self.chip_matrix_for(ARCFACE_CHIP)

    def chip_matrix_for(self, spec: ChipSpec) -> np.ndarray:
        """The fixed 2×3 affine warp from crop pixels to the chip ``spec``."""
        s = spec.scale
        inv = s / self.scale
        left, top = spec.window[:2]
        cx, cy = CROP_CENTER
        return np.array(
            [
                [inv, 0.0, (cx - CROP_SPAN / 2.0 - left) * s],
                [0.0, inv, (cy - CROP_SPAN / 2.0 - top) * s],
            ],
            dtype=np.float64,
        )

    def alignment(self, keypoints: np.ndarray) -> np.ndarray:
        """2×3 similarity matrix taking image pixels to crop pixels."""
        return umeyama_similarity(np.asarray(keypoints).reshape(5, 2), self.template)

    def warp(self, image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """Warp ``image`` into the crop (bicubic; outside the photo is black)."""
        return cv2.warpAffine(
            image,
            matrix,
            (self.size, self.size),
            flags=cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )

    def chip(self, crops: np.ndarray, spec: ChipSpec = ARCFACE_CHIP) -> np.ndarray:
        """Recognizer chips (…×height×width×3, default 112×112) from crops, bicubic.

        A whole-pixel window of the 112×112 chip at its scale is cut from that chip, so it
        holds exactly its pixels (a warp with another shift can round differently).
        """
        crops = np.asarray(crops)
        if spec != ARCFACE_CHIP and (box := spec.arcface_box()) is not None:
            left, top, right, bottom = box
            return self.chip(crops)[..., top:bottom, left:right, :]
        matrix = self.chip_matrix if spec == ARCFACE_CHIP else self.chip_matrix_for(spec)
        if crops.ndim == 3:
            return self._chip_one(crops, matrix, spec)
        return np.stack([self._chip_one(c, matrix, spec) for c in crops])

    def _chip_one(self, crop: np.ndarray, matrix: np.ndarray, spec: ChipSpec) -> np.ndarray:
        if crop.shape[:2] != (self.size, self.size):
            raise ValueError(f"expected a {self.size}×{self.size} crop, got {crop.shape[:2]}")
        height, width = spec.size
        return cv2.warpAffine(crop, matrix, (width, height), flags=cv2.INTER_CUBIC)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to N×2 points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]
