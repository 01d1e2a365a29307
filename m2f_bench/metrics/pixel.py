"""Pixel fidelity of restored crops: PSNR, SSIM and L1 over the whole crop or the hole.

Every function takes uint8 N×H×W×3 RGB batches, computes in float64 with data range 255,
and returns one value per image. PSNR and SSIM follow scikit-image exactly
(``peak_signal_noise_ratio(data_range=255)`` and ``structural_similarity(data_range=255,
channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``), and
the tests hold them to it; SSIM is vectorised over the batch instead of looping over
images and channels.

Conventions:
    * An exact restoration has MSE 0 and PSNR ``+inf``, as in scikit-image;
      :func:`m2f_bench.metrics.base.aggregate` leaves such values out of means and
      counts them.
    * A hole metric of an image with no hole pixel (for SSIM: none outside the border
      strip) is NaN.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from m2f_bench.errors import M2FError
from m2f_bench.metrics.base import PixelMetric, check_batch

DATA_RANGE = 255.0
SSIM_SIGMA = 1.5
#: Truncating the Gaussian at 3.5 σ gives Wang et al.'s 11×11 window, as scikit-image does.
SSIM_TRUNCATE = 3.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: Window side as scipy.ndimage sizes it: 2·int(3.5·1.5 + 0.5) + 1 = 11.
SSIM_WIN = 2 * int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5) + 1
#: Pixels this close to the border see reflected windows; SSIM averages leave them out,
#: as scikit-image's ``crop(S, (win_size - 1) // 2)`` does.
SSIM_BORDER = (SSIM_WIN - 1) // 2

# Images per step: bounds the float64 temporaries (about 60 MB for 32 crops of 128×128).
_CHUNK = 32


def _chunked(fn: Callable[..., np.ndarray], *arrays: np.ndarray) -> np.ndarray:
    n = arrays[0].shape[0]
    starts = range(0, n, _CHUNK)
    # OpenCV and numpy release the GIL in the heavy parts, so chunks run in parallel.
    with ThreadPoolExecutor(max_workers=min(len(starts), os.cpu_count() or 1) or 1) as pool:
        parts = list(pool.map(lambda i: fn(*(a[i : i + _CHUNK] for a in arrays)), starts))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)


def _to_psnr(mse: np.ndarray) -> np.ndarray:
    # MSE 0 → +inf and an empty hole's NaN stays NaN; neither deserves a warning.
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(DATA_RANGE**2 / mse)


def _squared_error(restored: np.ndarray, reference: np.ndarray) -> np.ndarray:
    # Integer arithmetic is exact, and float64 sums of these integers are too.
    diff = restored.astype(np.int32) - reference
    return (diff * diff).astype(np.float64)


def _hole_mean(per_pixel: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """Mean of an N×H×W×C array over the hole pixels and channels; NaN for no hole."""
    total = (per_pixel.sum(axis=-1) * holes).sum(axis=(1, 2))
    count = holes.sum(axis=(1, 2)) * per_pixel.shape[-1]
    with np.errstate(invalid="ignore"):
        return total / count


def psnr(restored: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """PSNR of each whole crop, 10·log10(255² / MSE) with the MSE over pixels and channels.

    Args:
        restored: Restored crops, uint8 N×H×W×3.
        reference: Unmasked crops, uint8 N×H×W×3.

    Returns:
        Float64 (N,) in dB; ``+inf`` where the crops are identical.
    """
    check_batch(restored, reference)
    return _chunked(
        lambda r, t: _to_psnr(_squared_error(r, t).mean(axis=(1, 2, 3))), restored, reference
    )


def psnr_hole(restored: np.ndarray, reference: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """PSNR with the MSE over the hole pixels only (all 3 channels).

    Args:
        restored: Restored crops, uint8 N×H×W×3.
        reference: Unmasked crops, uint8 N×H×W×3.
        holes: Bool N×H×W, the pixels the mask covered.

    Returns:
        Float64 (N,) in dB; ``+inf`` for an exactly restored hole, NaN for an empty one.
    """
    check_batch(restored, reference, holes)
    return _chunked(
        lambda r, t, h: _to_psnr(_hole_mean(_squared_error(r, t), h)), restored, reference, holes
    )


def l1_hole(restored: np.ndarray, reference: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """Mean absolute error over the hole pixels and channels, on the [0, 1] scale.

    Args:
        restored: Restored crops, uint8 N×H×W×3.
        reference: Unmasked crops, uint8 N×H×W×3.
        holes: Bool N×H×W, the pixels the mask covered.

    Returns:
        Float64 (N,) in [0, 1]; NaN for an empty hole.
    """
    check_batch(restored, reference, holes)

    def l1(r: np.ndarray, t: np.ndarray, h: np.ndarray) -> np.ndarray:
        error = np.abs(r.astype(np.int16) - t).astype(np.float64) / DATA_RANGE
        return _hole_mean(error, h)

    return _chunked(l1, restored, reference, holes)


def _check_ssim_size(images: np.ndarray) -> None:
    height, width = images.shape[1:3]
    if min(height, width) < SSIM_WIN:
        raise M2FError(
            f"SSIM needs crops of at least {SSIM_WIN}×{SSIM_WIN} pixels, got {height}×{width}"
        )


def _ssim_map(restored: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """scikit-image's SSIM map, for a batch at once; the operations are in its order."""
    x = restored.astype(np.float64)
    y = reference.astype(np.float64)

    def blur(a: np.ndarray) -> np.ndarray:
        # scipy.ndimage.gaussian_filter(sigma=1.5, truncate=3.5, mode="reflect") on the
        # spatial axes, as scikit-image calls it: the same normalised 11-tap kernel and
        # half-sample reflection (BORDER_REFLECT). One image per call, so a value never
        # depends on which other images share its batch.
        return np.stack(
            [
                cv2.GaussianBlur(
                    image, (SSIM_WIN, SSIM_WIN), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT
                )
                for image in a
            ]
        )

    ux, uy = blur(x), blur(y)
    vx = blur(x * x) - ux * ux
    vy = blur(y * y) - uy * uy
    vxy = blur(x * y) - ux * uy
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    a1, a2 = 2 * ux * uy + c1, 2 * vxy + c2
    b1, b2 = ux**2 + uy**2 + c1, vx + vy + c2
    return (a1 * a2) / (b1 * b2)


def _interior(shape: tuple[int, ...]) -> tuple[slice, ...]:
    b = SSIM_BORDER
    return (slice(None), slice(b, shape[1] - b), slice(b, shape[2] - b))


def ssim_map(restored: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-pixel, per-channel SSIM map, equal to scikit-image's ``full=True`` map.

    The map covers the whole crop; averages leave out the :data:`SSIM_BORDER`-pixel
    strip along the border. It holds N×H×W×3 float64 values: use :func:`ssim` or
    :func:`ssim_hole` for large batches.

    Args:
        restored: Restored crops, uint8 N×H×W×3, at least 11×11.
        reference: Unmasked crops, uint8 N×H×W×3.

    Returns:
        Float64 N×H×W×3.
    """
    check_batch(restored, reference)
    _check_ssim_size(restored)
    return _ssim_map(restored, reference)


def ssim(restored: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mean SSIM of each whole crop (Wang et al. 2004), averaged over RGB channels.

    Args:
        restored: Restored crops, uint8 N×H×W×3, at least 11×11.
        reference: Unmasked crops, uint8 N×H×W×3.

    Returns:
        Float64 (N,); 1 for identical crops.
    """
    check_batch(restored, reference)
    _check_ssim_size(restored)

    def mean_ssim(r: np.ndarray, t: np.ndarray) -> np.ndarray:
        return _ssim_map(r, t)[_interior(r.shape)].mean(axis=(1, 2, 3))

    return _chunked(mean_ssim, restored, reference)


def ssim_hole(restored: np.ndarray, reference: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """Mean of the SSIM map over the hole pixels outside the border strip.

    The map is the whole crop's, so windows centred near the hole edge also see known
    pixels; the value is the mean of scikit-image's ``full=True`` map over channels and
    over the hole pixels at least :data:`SSIM_BORDER` pixels from the border.

    Args:
        restored: Restored crops, uint8 N×H×W×3, at least 11×11.
        reference: Unmasked crops, uint8 N×H×W×3.
        holes: Bool N×H×W, the pixels the mask covered.

    Returns:
        Float64 (N,); NaN when no hole pixel lies outside the border strip.
    """
    check_batch(restored, reference, holes)
    _check_ssim_size(restored)

    def hole_ssim(r: np.ndarray, t: np.ndarray, h: np.ndarray) -> np.ndarray:
        inside = _interior(r.shape)
        return _hole_mean(_ssim_map(r, t)[inside], h[inside])

    return _chunked(hole_ssim, restored, reference, holes)


def ssim_whole_and_hole(
    restored: np.ndarray, reference: np.ndarray, holes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ssim` and :func:`ssim_hole` at once, from one SSIM map per image (the map is
    most of their cost); the values are those of the two functions, bit for bit."""
    check_batch(restored, reference, holes)
    _check_ssim_size(restored)

    def both(r: np.ndarray, t: np.ndarray, h: np.ndarray) -> np.ndarray:
        inside = _interior(r.shape)
        interior = _ssim_map(r, t)[inside]
        return np.stack([interior.mean(axis=(1, 2, 3)), _hole_mean(interior, h[inside])], 1)

    values = _chunked(both, restored, reference, holes)
    if values.ndim == 1:  # an empty batch
        return values, values
    return values[:, 0], values[:, 1]


_SSIM_SETTINGS = (
    "Gaussian window σ = 1.5 truncated at 3.5σ (11×11, reflect padding), K1 = 0.01, "
    "K2 = 0.03, data range 255, population covariance, per RGB channel in float64 and "
    "averaged over channels, as scikit-image's structural_similarity(gaussian_weights=True, "
    "use_sample_covariance=False)"
)

PSNR = PixelMetric(
    name="psnr",
    higher_is_better=True,
    description=(
        "PSNR over the whole crop: 10·log10(255²/MSE), the MSE taken jointly over all "
        "pixels and the 3 RGB channels of the uint8 crops in float64, as scikit-image's "
        "peak_signal_noise_ratio(data_range=255); +inf for an identical crop, left out of "
        "means and counted."
    ),
    compute=lambda restored, reference, holes: psnr(restored, reference),
)
SSIM = PixelMetric(
    name="ssim",
    higher_is_better=True,
    description=(
        f"SSIM (Wang et al. 2004) over the whole crop: {_SSIM_SETTINGS}; the map is "
        f"averaged over pixels at least {SSIM_BORDER} px from the border."
    ),
    compute=lambda restored, reference, holes: ssim(restored, reference),
)
PSNR_HOLE = PixelMetric(
    name="psnr_hole",
    higher_is_better=True,
    description=(
        "PSNR over the hole: 10·log10(255²/MSE) with the MSE over the hole pixels only, "
        "all 3 RGB channels, in float64; +inf for an exactly restored hole, NaN for an "
        "empty one."
    ),
    compute=psnr_hole,
)
SSIM_HOLE = PixelMetric(
    name="ssim_hole",
    higher_is_better=True,
    description=(
        f"Mean of the whole crop's SSIM map (Wang et al. 2004; {_SSIM_SETTINGS}) over the "
        f"hole pixels at least {SSIM_BORDER} px from the border and over channels; NaN "
        "when there are none."
    ),
    compute=ssim_hole,
)
L1_HOLE = PixelMetric(
    name="l1_hole",
    higher_is_better=False,
    description=(
        "Mean absolute error over the hole pixels and the 3 RGB channels on the [0, 1] "
        "scale (|restored − reference| / 255), in float64; NaN for an empty hole."
    ),
    compute=l1_hole,
)


def compute_metrics(
    metrics: Sequence[PixelMetric],
    restored: np.ndarray,
    reference: np.ndarray,
    holes: np.ndarray,
) -> dict[str, np.ndarray]:
    """The values of several pixel metrics by name; :data:`SSIM` and :data:`SSIM_HOLE`
    together share one SSIM map per image (:func:`ssim_whole_and_hole`)."""
    values: dict[str, np.ndarray] = {}
    if SSIM in metrics and SSIM_HOLE in metrics:
        values[SSIM.name], values[SSIM_HOLE.name] = ssim_whole_and_hole(restored, reference, holes)
    for metric in metrics:
        if metric.name not in values:
            values[metric.name] = metric(restored, reference, holes)
    return {metric.name: values[metric.name] for metric in metrics}
