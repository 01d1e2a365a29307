"""Degradations that make synthetic training crops look like crops of real photos.

Real masked-face photos are often small, soft, JPEG-compressed, noisy, tinted, unevenly
lit or grey, and the aligner places their crops a little differently from LFW's. Each
transform is drawn with its probability from the sample's own generator, so a sample stays
a pure function of (seed, epoch, image id). The hole moves with the geometry and is
unaffected by the photometric changes.
"""

from __future__ import annotations

import cv2
import numpy as np

from m2f_bench.training.config import AugmentSpec


def jitter_geometry(
    image: np.ndarray, hole: np.ndarray, rng: np.random.Generator, spec: AugmentSpec
) -> tuple[np.ndarray, np.ndarray]:
    """A small random similarity (rotation, scale, shift) applied to crop and hole alike."""
    if not spec.geometry or rng.random() >= spec.geometry:
        return image, hole
    h, w = hole.shape
    angle = rng.uniform(-spec.max_rotation, spec.max_rotation)
    scale = 1.0 + rng.uniform(-spec.max_scale, spec.max_scale)
    shift = rng.uniform(-spec.max_shift, spec.max_shift, size=2) * (w, h)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[:, 2] += shift
    image = cv2.warpAffine(
        image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    warped = cv2.warpAffine(
        hole.astype(np.uint8), matrix, (w, h), flags=cv2.INTER_NEAREST, borderValue=0
    )
    return image, warped.astype(bool)


def degrade(image: np.ndarray, rng: np.random.Generator, spec: AugmentSpec) -> np.ndarray:
    """Lighting, grey, low resolution, blur, noise and JPEG, each with its probability."""
    x = image
    if rng.random() < spec.lighting:
        gamma = np.exp(rng.uniform(-0.5, 0.5))
        tint = 1.0 + rng.uniform(-0.12, 0.12, size=3)
        # A linear ramp of light across the face (a lamp or window on one side).
        h, w = x.shape[:2]
        direction = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ramp = ((xx - w / 2) * np.cos(direction) + (yy - h / 2) * np.sin(direction)) / max(h, w)
        gain = 1.0 + rng.uniform(0, 0.6) * ramp
        f = (x.astype(np.float32) / 255.0) ** gamma * tint * gain[..., None]
        x = np.clip(f * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < spec.grayscale:
        grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
        x = np.repeat(grey[..., None], 3, axis=2)
    if rng.random() < spec.downscale:
        h, w = x.shape[:2]
        factor = rng.uniform(0.3, 0.8)
        small = cv2.resize(
            x, (max(8, round(w * factor)), max(8, round(h * factor))), interpolation=cv2.INTER_AREA
        )
        x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < spec.blur:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.6))
    if rng.random() < spec.noise:
        sigma = rng.uniform(2.0, 9.0)
        x = np.clip(x + rng.normal(0, sigma, size=x.shape), 0, 255).astype(np.uint8)
    if rng.random() < spec.jpeg:
        quality = int(rng.integers(25, 91))
        ok, data = cv2.imencode(".jpg", x[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            x = cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(x)
