"""Photo → aligned face: detect, pick the central face, align to the crop, landmark it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from m2f_bench.errors import ImageTooSmallError, M2FError, ModelNotFoundError, NoFaceError
from m2f_bench.faces.align import CropGeometry, transform_points
from m2f_bench.faces.detect import (
    DETECTORS,
    Detection,
    FaceDetector,
    central_face,
)
from m2f_bench.faces.landmarks import LandmarkPredictor, five_point
from m2f_bench.hub import model_path
from m2f_bench.settings import Settings

log = logging.getLogger(__name__)

#: Photos smaller than this on either side hold no usable face.
MIN_IMAGE_SIDE = 32
DetectorChoice = Literal["auto", "scrfd", "dlib-hog"]


@dataclass(frozen=True)
class AlignerConfig:
    """What an aligner is built from; picklable, so worker processes can build their own.

    Attributes:
        size: Crop side in pixels.
        scrfd_path: SCRFD ONNX file, or ``None`` to run without it.
        use_hog: Add dlib's HOG detector (after SCRFD, as its fallback).
        det_size: SCRFD input size (``None``: from the photo size).
        threads: ONNX Runtime threads per process.
        device: ``cpu`` or ``cuda``.
    """

    size: int = 128
    scrfd_path: Path | None = None
    use_hog: bool = True
    det_size: int | None = None
    threads: int | None = None
    device: str = "cpu"

    @classmethod
    def resolve(
        cls,
        settings: Settings,
        *,
        size: int = 128,
        detector: DetectorChoice = "auto",
        det_size: int | None = None,
        threads: int | None = None,
        device: str = "cpu",
    ) -> AlignerConfig:
        """Find the detector weights the choice needs.

        ``auto`` uses SCRFD-500M from the model home (downloading it when allowed) with
        dlib's HOG detector as the fallback for photos SCRFD finds nothing in; without the
        SCRFD file it runs on dlib's HOG detector alone. ``scrfd`` requires the file.

        Raises:
            ModelNotFoundError: ``scrfd`` was chosen and its file is missing.
        """
        if detector not in ("auto", "scrfd", "dlib-hog"):
            raise M2FError(f"unknown detector {detector!r}; choose auto, scrfd or dlib-hog")
        scrfd_path = None
        if detector != "dlib-hog":
            try:
                scrfd_path = model_path("scrfd_500m_kps.onnx", settings)
            except ModelNotFoundError as exc:
                if detector == "scrfd":
                    raise
                log.warning("%s; detecting faces with dlib's HOG detector instead", exc)
        return cls(
            size=size,
            scrfd_path=scrfd_path,
            use_hog=detector in ("auto", "dlib-hog"),
            det_size=det_size,
            threads=threads,
            device=device,
        )

    def build(self) -> FaceAligner:
        """Load the models and return the aligner."""
        detectors: list[FaceDetector] = []
        if self.scrfd_path is not None:
            scrfd = DETECTORS.get("scrfd")
            detectors.append(
                scrfd(
                    self.scrfd_path,
                    input_size=self.det_size,
                    threads=self.threads,
                    device=self.device,
                )
            )
        if self.use_hog:
            detectors.append(DETECTORS.get("dlib-hog")())
        return FaceAligner(detectors, CropGeometry(self.size))


@dataclass(frozen=True)
class AlignedFace:
    """A face aligned into the crop.

    Attributes:
        crop: RGB uint8 crop (size×size×3).
        landmarks: 68 landmarks in crop pixels.
        keypoints: The five keypoints used for alignment, in photo pixels.
        matrix: 2×3 similarity taking photo pixels to crop pixels.
        box: Detector box in photo pixels.
        det_score: Detector confidence.
        detector: Which detector found the face.
    """

    crop: np.ndarray
    landmarks: np.ndarray
    keypoints: np.ndarray
    matrix: np.ndarray
    box: np.ndarray
    det_score: float
    detector: str


class FaceAligner:
    """Detectors tried in order, then alignment and landmarks.

    Args:
        detectors: Tried in order until one finds a face (e.g. SCRFD, then dlib HOG).
        geometry: The crop to align into.
        landmarks: The 68-point predictor.
    """

    def __init__(
        self,
        detectors: list[FaceDetector],
        geometry: CropGeometry,
        landmarks: LandmarkPredictor | None = None,
    ) -> None:
        if not detectors:
            raise ValueError("at least one detector is needed")
        self.detectors = detectors
        self.geometry = geometry
        self.landmarks = landmarks or LandmarkPredictor()

    @classmethod
    def from_settings(cls, settings: Settings, **options) -> FaceAligner:
        """Build the standard aligner; ``options`` are those of :meth:`AlignerConfig.resolve`."""
        return AlignerConfig.resolve(settings, **options).build()

    @property
    def detector_names(self) -> list[str]:
        return [d.name for d in self.detectors]

    def _detect(self, image: np.ndarray) -> Detection:
        for detector in self.detectors:
            found = detector.detect(image)
            if found:
                return central_face(found, image.shape)
        raise NoFaceError(f"no face found by {' or '.join(self.detector_names)}")

    def align(self, image: np.ndarray) -> AlignedFace:
        """Align the central face of an RGB photo.

        Raises:
            NoFaceError: The photo is too small or no detector finds a face.
        """
        h, w = image.shape[:2]
        if min(h, w) < MIN_IMAGE_SIDE:
            raise ImageTooSmallError(f"image too small ({w}×{h} px, need ≥ {MIN_IMAGE_SIDE})")
        detection = self._detect(image)
        keypoints = detection.keypoints
        if keypoints is None:
            # dlib HOG gives a box only: take the keypoints from its 68 landmarks.
            keypoints = five_point(self.landmarks.predict(image, detection.box))
        matrix = self.geometry.alignment(keypoints)
        crop = self.geometry.warp(image, matrix)
        landmarks = self.landmarks.predict_in_crop(crop)
        return AlignedFace(
            crop=crop,
            landmarks=landmarks,
            keypoints=keypoints,
            matrix=matrix,
            box=detection.box,
            det_score=detection.score,
            detector=detection.detector,
        )


__all__ = ["AlignedFace", "AlignerConfig", "FaceAligner", "transform_points"]
