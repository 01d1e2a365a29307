"""dlib's ResNet face descriptor: an identity embedding independent of the ArcFace family.

A 29-layer ResNet trained by Davis King on about 3 million faces with a metric loss
(``dlib_face_recognition_resnet_model_v1``; the author reports 99.38 % on LFW). dlib cuts
its own 150×150 chip from the 68 landmarks (``get_face_chip``, padding 0.25), so the
recognizer needs the landmarks of each crop, and no model home: the weights ship with
``face-recognition-models``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from m2f_bench.errors import M2FError
from m2f_bench.faces.align import CropGeometry
from m2f_bench.recognition.base import Recognizer, check_batch, file_digest, l2_normalise

#: Context around the landmarks in dlib's chip, as the model was trained.
CHIP_PADDING = 0.25


class DlibResNet(Recognizer):
    """dlib's 128-d face descriptor, computed from the crop and its 68 landmarks.

    Args:
        batch_size: Crops per dlib call.
    """

    name = "dlib-resnet"
    embedding_dim = 128

    def __init__(self, *, batch_size: int = 64) -> None:
        import dlib
        import face_recognition_models

        if batch_size < 1:
            raise M2FError(f"dlib-resnet batch_size must be ≥ 1, got {batch_size}")
        self._dlib = dlib
        self.model_path = Path(face_recognition_models.face_recognition_model_location())
        self._model = dlib.face_recognition_model_v1(str(self.model_path))
        self.batch_size = batch_size

    def config(self) -> dict[str, Any]:
        return {
            "model": self.model_path.name,
            "model_sha256": file_digest(self.model_path),
            "chip": f"dlib get_face_chip 150 px, padding {CHIP_PADDING}, 68 landmarks",
        }

    def _shape(self, landmarks: np.ndarray):
        # dlib points are integers; landmarks from its predictor already are.
        points = np.rint(landmarks).astype(int)
        (x1, y1), (x2, y2) = points.min(0), points.max(0)
        return self._dlib.full_object_detection(
            self._dlib.rectangle(int(x1), int(y1), int(x2), int(y2)),
            self._dlib.points([self._dlib.point(int(x), int(y)) for x, y in points]),
        )

    def embed(
        self,
        crops: np.ndarray,
        geometry: CropGeometry,
        landmarks: np.ndarray | None = None,
    ) -> np.ndarray:
        crops = check_batch(crops, geometry)
        if landmarks is None:
            raise M2FError("dlib-resnet needs the 68 landmarks of each crop (landmarks=N×68×2)")
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.shape != (len(crops), 68, 2):
            raise ValueError(
                f"expected landmarks of shape {(len(crops), 68, 2)}, got {landmarks.shape}"
            )
        out = np.empty((len(crops), self.embedding_dim), np.float32)
        for start in range(0, len(crops), self.batch_size):
            stop = min(start + self.batch_size, len(crops))
            images = list(crops[start:stop])
            faces = [
                self._dlib.full_object_detections([self._shape(lm)]) for lm in landmarks[start:stop]
            ]
            descriptors = self._model.compute_face_descriptor(images, faces, 0, CHIP_PADDING)
            out[start:stop] = [np.asarray(d[0]) for d in descriptors]
        return l2_normalise(out)
