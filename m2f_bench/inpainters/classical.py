"""Classical inpainters: the masked lower bound, OpenCV's two methods and biharmonic."""

from __future__ import annotations

import cv2
import numpy as np

from m2f_bench.errors import M2FError
from m2f_bench.inpainters.base import INPAINTERS, Inpainter


@INPAINTERS.register("masked")
class Masked(Inpainter):
    """No inpainting: the masked crop itself, the lower bound for every metric."""

    name = "masked"

    def inpaint(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        return images


class _OpenCV(Inpainter):
    _method: int

    def __init__(self, radius: float = 3) -> None:
        if isinstance(radius, bool) or not isinstance(radius, int | float) or radius <= 0:
            raise M2FError(f"inpainter {self.name!r}: radius must be a positive number")
        self.radius = float(radius)

    def inpaint(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        # cv2.inpaint treats the channels alike, so RGB needs no swap to BGR. The hole is
        # used as given: dilating it would overwrite known pixels the metrics compare.
        return np.stack(
            [
                cv2.inpaint(image, hole.view(np.uint8), self.radius, self._method)
                for image, hole in zip(images, holes, strict=True)
            ]
        )


@INPAINTERS.register("opencv-telea")
class OpenCVTelea(_OpenCV):
    """Telea's fast-marching method (2004), ``cv2.inpaint`` with ``INPAINT_TELEA``.

    Args:
        radius: Neighbourhood radius in pixels around each filled pixel.
    """

    name = "opencv-telea"
    _method = cv2.INPAINT_TELEA


@INPAINTERS.register("opencv-ns")
class OpenCVNavierStokes(_OpenCV):
    """Bertalmio et al.'s Navier–Stokes method (2001), ``cv2.inpaint`` with ``INPAINT_NS``.

    Args:
        radius: Neighbourhood radius in pixels around each filled pixel.
    """

    name = "opencv-ns"
    _method = cv2.INPAINT_NS


@INPAINTERS.register("biharmonic")
class Biharmonic(Inpainter):
    """Biharmonic inpainting (Damelin & Hoang 2018), scikit-image's ``inpaint_biharmonic``.

    Smooth fills that match the known pixels' values and gradients at the hole's edge.
    """

    name = "biharmonic"

    def inpaint(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        from skimage.restoration import inpaint_biharmonic  # 0.7 s to import

        out = np.empty_like(images)
        for i, (image, hole) in enumerate(zip(images, holes, strict=True)):
            if hole.all():
                raise M2FError(f"inpainter {self.name!r}: crop {i} is all hole, nothing to extend")
            # Not split_into_regions: the same result, and no faster on one lower-face hole
            # (a third slower on scattered blobs), as nearly all time goes to SuperLU.
            filled = inpaint_biharmonic(image, hole, channel_axis=-1)
            out[i] = np.clip(np.rint(filled * 255.0), 0, 255).astype(np.uint8)
        return out
