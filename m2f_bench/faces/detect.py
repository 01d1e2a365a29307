"""Face detectors: SCRFD-500M (ONNX, box + five keypoints) and dlib's HOG fallback."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from m2f_bench.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    """One detected face.

    Attributes:
        box: ``x1, y1, x2, y2`` in image pixels.
        score: Detector confidence (SCRFD: probability; HOG: SVM margin).
        keypoints: Eye centres, nose tip, mouth corners (5×2), when the detector gives them.
        detector: Name of the detector that found it.
    """

    box: np.ndarray
    score: float
    keypoints: np.ndarray | None
    detector: str

    @property
    def centre(self) -> np.ndarray:
        return (self.box[:2] + self.box[2:4]) / 2.0


class FaceDetector(Protocol):
    """Finds faces in an RGB uint8 image."""

    name: str

    def detect(self, image: np.ndarray) -> list[Detection]: ...


DETECTORS: Registry[type] = Registry("face detector", "m2f_bench.detectors")


def central_face(detections: list[Detection], image_shape: tuple[int, ...]) -> Detection:
    """The detection whose box centre is nearest the image centre.

    Face datasets centre the subject; the others are bystanders.
    """
    centre = np.array([image_shape[1], image_shape[0]], dtype=np.float64) / 2.0
    return min(detections, key=lambda d: float(np.linalg.norm(d.centre - centre)))


def _ort_session_options(threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return options


def onnx_providers(device: str = "cpu") -> list[str]:
    """ONNX Runtime providers for ``device`` (``cuda`` falls back to CPU if unavailable)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@DETECTORS.register("scrfd")
class SCRFDDetector:
    """SCRFD (Guo et al., "Sample and Computation Redistribution for Efficient Face
    Detection", ICLR 2022), run through insightface's ``model_zoo`` decoder.

    Args:
        model_path: The ONNX file (e.g. ``scrfd_500m_kps.onnx``).
        input_size: Square network input; ``None`` picks the image's longer side rounded
            up to a multiple of 32, clamped to 128–640 (256 for LFW's 250-px photos).
        threshold: Minimum face probability.
        threads: ONNX Runtime intra-op threads (``None``: its default).
        device: ``cpu`` or ``cuda``.
    """

    name = "scrfd"

    def __init__(
        self,
        model_path: str | Path,
        *,
        input_size: int | None = None,
        threshold: float = 0.5,
        threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        import onnxruntime as ort
        from insightface.model_zoo.scrfd import SCRFD

        session = ort.InferenceSession(
            str(model_path),
            sess_options=_ort_session_options(threads),
            providers=onnx_providers(device),
        )
        self._model = SCRFD(model_file=str(model_path), session=session)
        self._model.prepare(ctx_id=-1, det_thresh=threshold)
        self.input_size = input_size
        self.threshold = threshold

    def _size_for(self, image: np.ndarray) -> int:
        if self.input_size is not None:
            return self.input_size
        longest = max(image.shape[:2])
        return int(min(640, max(128, math.ceil(longest / 32) * 32)))

    def detect(self, image: np.ndarray) -> list[Detection]:
        size = self._size_for(image)
        # insightface's SCRFD takes BGR (it swaps to RGB inside its blob).
        boxes, kps = self._model.detect(
            np.ascontiguousarray(image[:, :, ::-1]), input_size=(size, size)
        )
        return [
            Detection(
                box=boxes[i, :4].astype(np.float64),
                score=float(boxes[i, 4]),
                keypoints=kps[i].astype(np.float64),
                detector=self.name,
            )
            for i in range(len(boxes))
        ]


@DETECTORS.register("dlib-hog")
class DlibHOGDetector:
    """dlib's HOG + linear SVM frontal face detector; needs no model file.

    Args:
        upsample: Times the image is upsampled before detection (finds smaller faces).
        threshold: Minimum SVM score (dlib's default, 0: lower lets in false detections,
            which the centre rule may then prefer over the real face).
        max_side: Larger photos are downscaled to this longest side for detection (HOG's
            cost grows with the pixel count: an 8000×8000 photo would take minutes);
            boxes are mapped back to the photo's pixels.
    """

    name = "dlib-hog"

    def __init__(self, *, upsample: int = 1, threshold: float = 0.0, max_side: int = 1024) -> None:
        # Built on first use: as SCRFD's fallback it is rarely needed, and every prepare
        # worker would otherwise pay for it at start-up.
        self._built = None
        self.upsample = upsample
        self.threshold = threshold
        self.max_side = max_side

    def _detector(self):
        if self._built is None:
            import dlib

            self._built = dlib.get_frontal_face_detector()
        return self._built

    def detect(self, image: np.ndarray) -> list[Detection]:
        scale = min(1.0, self.max_side / max(image.shape[:2]))
        if scale < 1.0:
            size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        rects, scores, _ = self._detector().run(
            np.ascontiguousarray(image), self.upsample, self.threshold
        )
        return [
            Detection(
                box=np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64) / scale,
                score=float(s),
                keypoints=None,
                detector=self.name,
            )
            for r, s in zip(rects, scores, strict=True)
        ]
