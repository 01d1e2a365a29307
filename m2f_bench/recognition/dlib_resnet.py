"""dlib's ResNet face descriptor: an identity embedding independent of the ArcFace family.

A 29-layer ResNet trained by Davis King on about 3 million faces with a metric loss
(``dlib_face_recognition_resnet_model_v1``; the author reports 99.38 % on LFW). dlib cuts
its own 150×150 chip from the 68 landmarks (``get_face_chip``, padding 0.25), so the
recognizer needs the landmarks of each crop, and no model home: the weights ship with
``face-recognition-models``.
"""

from __future__ import annotations

import os
import weakref
from concurrent.futures import ProcessPoolExecutor
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

    dlib's network runs on one core (the wheel has no BLAS), so batches are spread over
    worker processes, each with its own copy of the model; a descriptor does not depend
    on which process computed it, so ``workers`` is not part of :meth:`config`.

    Args:
        batch_size: Crops per dlib call (and per task sent to a worker).
        workers: Processes computing descriptors; ``None`` = the CPUs this process may
            use, ``1`` = in this process.
    """

    name = "dlib-resnet"
    embedding_dim = 128

    def __init__(self, *, batch_size: int = 32, workers: int | None = None) -> None:
        import face_recognition_models

        if batch_size < 1:
            raise M2FError(f"dlib-resnet batch_size must be ≥ 1, got {batch_size}")
        if workers is not None and workers < 1:
            raise M2FError(f"dlib-resnet workers must be ≥ 1 (or omitted), got {workers}")
        self.model_path = Path(face_recognition_models.face_recognition_model_location())
        self.batch_size = batch_size
        self.workers = workers if workers is not None else _usable_cpus()
        self._describe = _Describer(self.model_path)
        self._pool: ProcessPoolExecutor | None = None

    def config(self) -> dict[str, Any]:
        return {
            "model": self.model_path.name,
            "model_sha256": file_digest(self.model_path),
            "chip": f"dlib get_face_chip 150 px, padding {CHIP_PADDING}, 68 landmarks",
        }

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
        chunks = [
            (crops[i : i + self.batch_size], landmarks[i : i + self.batch_size])
            for i in range(0, len(crops), self.batch_size)
        ]
        if self.workers > 1 and len(chunks) > 1:
            results = list(self._executor().map(_describe_in_worker, chunks))
        else:
            results = [self._describe(*chunk) for chunk in chunks]
        out = np.concatenate(results) if results else np.empty((0, self.embedding_dim))
        return l2_normalise(out)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            # spawn: no worker inherits ONNX Runtime or torch thread pools from this process.
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(str(self.model_path),),
            )
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (they also stop when the recognizer is collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Describer:
    """dlib's model and the call that turns crops + 68 landmarks into descriptors."""

    def __init__(self, model_path: Path | str) -> None:
        import dlib

        self._dlib = dlib
        self._model = dlib.face_recognition_model_v1(str(model_path))

    def _shape(self, landmarks: np.ndarray):
        # dlib points are integers; landmarks from its predictor already are.
        dlib = self._dlib
        points = np.rint(landmarks).astype(int)
        (x1, y1), (x2, y2) = points.min(0), points.max(0)
        return dlib.full_object_detection(
            dlib.rectangle(int(x1), int(y1), int(x2), int(y2)),
            dlib.points([dlib.point(int(x), int(y)) for x, y in points]),
        )

    def __call__(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        faces = [self._dlib.full_object_detections([self._shape(lm)]) for lm in landmarks]
        descriptors = self._model.compute_face_descriptor(list(crops), faces, 0, CHIP_PADDING)
        return np.asarray([np.asarray(d[0]) for d in descriptors], dtype=np.float32)


_worker_describer: _Describer | None = None


def _init_worker(model_path: str) -> None:
    global _worker_describer
    _worker_describer = _Describer(model_path)


def _describe_in_worker(chunk: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    assert _worker_describer is not None, "worker not initialised"
    return _worker_describer(*chunk)
