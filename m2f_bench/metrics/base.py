"""The pixel-metric contract: batch checks, the metric object, and aggregation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from m2f_bench.errors import M2FError


def check_batch(
    restored: np.ndarray, reference: np.ndarray, holes: np.ndarray | None = None
) -> None:
    """Check that a batch of crops (and holes) has the shapes and dtypes metrics expect.

    Args:
        restored: Restored crops, uint8 N×H×W×3 RGB.
        reference: Unmasked crops of the same faces, uint8 N×H×W×3 RGB.
        holes: Bool N×H×W, the pixels the mask covered; not checked when None.

    Raises:
        M2FError: A shape or dtype does not match, in one line.
    """
    for name, images in (("restored", restored), ("reference", reference)):
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            dtype = getattr(images, "dtype", type(images).__name__)
            raise M2FError(f"{name} crops must be a uint8 array, got {dtype}")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise M2FError(f"{name} crops must be N×H×W×3 RGB, got shape {images.shape}")
    if restored.shape != reference.shape:
        raise M2FError(
            f"restored and reference crops differ in shape: {restored.shape} vs {reference.shape}"
        )
    if holes is None:
        return
    if not isinstance(holes, np.ndarray) or holes.dtype != np.bool_:
        dtype = getattr(holes, "dtype", type(holes).__name__)
        raise M2FError(f"holes must be a bool array, got {dtype}")
    if holes.shape != restored.shape[:3]:
        raise M2FError(
            f"holes must be N×H×W = {restored.shape[:3]} like the crops, got {holes.shape}"
        )


@dataclass(frozen=True)
class PixelMetric:
    """A per-image fidelity metric between restored and reference crops.

    Attributes:
        name: Registry name, also the column name in result tables.
        higher_is_better: Whether a larger value means a better restoration.
        description: The exact definition and settings, one or two sentences, as the
            report prints it under "how every number was computed".
        compute: ``(restored, reference, holes) -> float64 (N,)`` on checked inputs.
    """

    name: str
    higher_is_better: bool
    description: str
    compute: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

    def __call__(
        self, restored: np.ndarray, reference: np.ndarray, holes: np.ndarray
    ) -> np.ndarray:
        """One value per image.

        Args:
            restored: Restored crops, uint8 N×H×W×3 RGB.
            reference: Unmasked crops, uint8 N×H×W×3 RGB.
            holes: Bool N×H×W, the pixels the mask covered.

        Returns:
            Float64 (N,); NaN where a hole metric has no hole pixel to measure.

        Raises:
            M2FError: Shapes or dtypes do not match.
        """
        check_batch(restored, reference, holes)
        return self.compute(restored, reference, holes)


def aggregate(values: np.ndarray) -> dict[str, float | int]:
    """Mean and spread of one metric over images.

    NaN values (an empty hole) are dropped. Infinite values (PSNR of a crop restored
    bit for bit) are left out of ``mean`` and ``std`` rather than capped at an arbitrary
    dB value, so that one exact crop cannot turn the mean into inf; ``n_inf`` counts them
    so a report can say so.

    Args:
        values: Per-image values of one metric.

    Returns:
        ``mean``, ``std`` (population, ddof 0) and ``n`` over the finite values, and
        ``n_inf``; mean and std are NaN when no value is finite.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    n_inf = int(np.isinf(values).sum())
    if finite.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0, "n_inf": n_inf}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "n": int(finite.size),
        "n_inf": n_inf,
    }
