"""dlib's ResNet face descriptor: an identity embedding independent of the ArcFace family.

A 29-layer ResNet trained by Davis King on about 3 million faces with a metric loss
(``dlib_face_recognition_resnet_model_v1``; the author reports 99.38 % on LFW). dlib cuts
its own 150×150 chip from the 68 landmarks (``get_face_chip``, padding 0.25), so the
recognizer needs the landmarks of each crop, and no model home: the weights ship with
``face-recognition-models``.

By default the network runs in PyTorch (``_dlib_net``: dlib's own weights, read from its
file), about 15× faster than the dlib wheel, which has no BLAS (2 shared cores: 124–133
against 7.8–8.8 faces/s); dlib still cuts the chip. The two backends give the same
descriptors to within 1e-6 (largest difference on 384 LFW crops, 64 masked: 5e-7, far below
what changes a verification score), so the backend is not part of
:meth:`DlibResNet.config`: their embeddings share a cache key.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from m2f_bench.errors import M2FError
from m2f_bench.faces.align import CropGeometry
from m2f_bench.recognition.base import (
    Recognizer,
    check_batch,
    file_digest,
    l2_normalise,
    usable_cpus,
)

#: Context around the landmarks in dlib's chip, as the model was trained.
CHIP_PADDING = 0.25
#: Side of dlib's chip, the network's input.
CHIP_SIZE = 150
BACKENDS = ("torch", "dlib")


class DlibResNet(Recognizer):
    """dlib's 128-d face descriptor, computed from the crop and its 68 landmarks.

    Args:
        backend: ``torch``: the network in PyTorch, ``workers`` batches at a time, one
            thread each; ``dlib``: dlib's own implementation, one process per worker (the
            wheel runs its network on one core). Both give the same descriptors (to
            within 1e-6).
        batch_size: Crops per network call (and per task sent to a worker).
        workers: CPUs to use (threads or dlib processes); ``None`` = the CPUs this
            process may use. A descriptor does not depend on it, so it is not part of
            :meth:`config`.
    """

    name = "dlib-resnet"
    embedding_dim = 128

    def __init__(
        self, *, backend: str = "torch", batch_size: int = 32, workers: int | None = None
    ) -> None:
        import face_recognition_models

        self.check_spec({"backend": backend, "batch_size": batch_size, "workers": workers})
        self.model_path = Path(face_recognition_models.face_recognition_model_location())
        self.backend = backend
        self.batch_size = batch_size
        self.workers = workers if workers is not None else usable_cpus()
        self._pool: ProcessPoolExecutor | None = None
        if backend == "torch":
            self._describe: _Describer | _TorchDescriber = _TorchDescriber(
                self.model_path, file_digest(self.model_path)
            )
        else:
            self._describe = _Describer(self.model_path)

    @classmethod
    def check_spec(cls, args: Mapping[str, Any]) -> None:
        backend = args.get("backend", "torch")
        if backend not in BACKENDS:
            raise M2FError(f"dlib-resnet backend must be one of {BACKENDS}, got {backend!r}")
        batch_size = args.get("batch_size", 1)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise M2FError(f"dlib-resnet batch_size must be an integer ≥ 1, got {batch_size}")
        workers = args.get("workers")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise M2FError(f"dlib-resnet workers must be ≥ 1 (or omitted), got {workers}")

    def config(self) -> dict[str, Any]:
        # No backend: both compute the same descriptors (see the module docstring).
        return {
            "model": self.model_path.name,
            "model_sha256": file_digest(self.model_path),
            "chip": f"dlib get_face_chip {CHIP_SIZE} px, padding {CHIP_PADDING}, 68 landmarks",
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
        if isinstance(self._describe, _TorchDescriber):
            results = self._describe.run(chunks, self.workers)
        elif self.workers > 1 and len(chunks) > 1:
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
        """Stop the dlib worker processes (they also stop when the recognizer is collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _dlib_shape(dlib: Any, landmarks: np.ndarray) -> Any:
    """68 landmarks as a ``dlib.full_object_detection`` (dlib points are integers)."""
    points = np.rint(landmarks).astype(int)  # landmarks from dlib's predictor already are
    (x1, y1), (x2, y2) = points.min(0), points.max(0)
    return dlib.full_object_detection(
        dlib.rectangle(int(x1), int(y1), int(x2), int(y2)),
        dlib.points([dlib.point(int(x), int(y)) for x, y in points]),
    )


class _Describer:
    """dlib's model and the call that turns crops + 68 landmarks into descriptors."""

    def __init__(self, model_path: Path | str) -> None:
        import dlib

        self._dlib = dlib
        self._model = dlib.face_recognition_model_v1(str(model_path))

    def __call__(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        faces = [
            self._dlib.full_object_detections([_dlib_shape(self._dlib, lm)]) for lm in landmarks
        ]
        descriptors = self._model.compute_face_descriptor(list(crops), faces, 0, CHIP_PADDING)
        return np.asarray([np.asarray(d[0]) for d in descriptors], dtype=np.float32)


class _TorchDescriber:
    """dlib's chips, then dlib's network in PyTorch."""

    def __init__(self, model_path: Path, sha256: str) -> None:
        import dlib
        import torch

        from m2f_bench.recognition._dlib_net import load_module

        self._dlib = dlib
        self._torch = torch
        self._module = load_module(model_path, sha256)

    def chips(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """dlib's 150×150 RGB chips, exactly those ``compute_face_descriptor`` cuts."""
        dlib = self._dlib
        return np.stack(
            [
                dlib.get_face_chip(crop, _dlib_shape(dlib, lm), CHIP_SIZE, CHIP_PADDING)
                for crop, lm in zip(crops, landmarks, strict=True)
            ]
        )

    def __call__(self, crops: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        torch = self._torch
        # N×H×W×3 viewed as N×3×H×W: channels-last, the layout the module runs in.
        x = torch.from_numpy(self.chips(crops, landmarks)).permute(0, 3, 1, 2).float()
        with torch.inference_mode():
            return self._module(x).numpy()

    def run(self, chunks: list[tuple[np.ndarray, np.ndarray]], workers: int) -> list[np.ndarray]:
        """Descriptors of each chunk, ``workers`` chunks at a time, one thread each.

        Batches side by side rather than one batch on all threads: intra-op threads wait
        for the slowest at every layer, which on a shared machine is the one descheduled
        (2 busy cores: 27–84 faces/s with 2 intra-op threads, 200–315 with 2 batches on
        one thread each). Torch's thread count is process-wide: it is 1 while the batches
        run (torch work on other threads meanwhile runs on one thread too) and restored
        afterwards; concurrent calls are serialised so that they cannot leave it at 1.
        """
        torch = self._torch
        if workers <= 1 or len(chunks) <= 1:
            return [self(*chunk) for chunk in chunks]
        with _THREADS_LOCK:
            previous = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(min(workers, len(chunks))) as pool:
                    return list(pool.map(lambda chunk: self(*chunk), chunks))
            finally:
                torch.set_num_threads(previous)


#: Serialises :meth:`_TorchDescriber.run`'s change of torch's process-wide thread count.
_THREADS_LOCK = threading.Lock()


_worker_describer: _Describer | None = None


def _init_worker(model_path: str) -> None:
    global _worker_describer
    _worker_describer = _Describer(model_path)


def _describe_in_worker(chunk: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    assert _worker_describer is not None, "worker not initialised"
    return _worker_describer(*chunk)
