"""ArcFace-class recognizers in ONNX (Deng et al., "ArcFace: Additive Angular Margin Loss
for Deep Face Recognition", CVPR 2019), run through ONNX Runtime.

The network sees the 112×112 ArcFace chip taken from the aligned crop by the fixed warp
:meth:`CropGeometry.chip` (no second detection). The embedding is the L2-normalised
sum of the outputs for the chip and its mirror image, as in insightface's verification
evaluation: it is symmetric by construction, and is what the LFW figure in the shared
README was measured with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from m2f_bench.errors import M2FError, ModelNotFoundError
from m2f_bench.faces.align import CHIP_SIZE, CropGeometry
from m2f_bench.faces.detect import _ort_session_options, onnx_providers
from m2f_bench.hub import model_available, model_path
from m2f_bench.recognition.base import Recognizer, check_batch, file_digest, l2_normalise
from m2f_bench.settings import Settings

log = logging.getLogger(__name__)

#: insightface's ResNet-50 trained on WebFace600K, from its ``buffalo_l`` pack.
BUFFALO_L_MODEL = "w600k_r50.onnx"
MOBILEFACENET_MODEL = "mobilefacenet_arcface.onnx"


@dataclass(frozen=True)
class InputNorm:
    """How a model wants its input: ``(pixel − mean) / std`` in the given channel order."""

    mean: float
    std: float
    color: str = "rgb"


#: Input conventions of known models, by file name.
PRESETS: dict[str, InputNorm] = {
    # foamliu/MobileFaceNet (shared/README.md).
    MOBILEFACENET_MODEL: InputNorm(127.5, 128.0, "rgb"),
    # insightface's ArcFaceONNX rule (see graph_input_norm) gives 127.5/127.5 for this
    # graph; it feeds RGB (cv2.dnn.blobFromImages(swapRB=True) on its BGR images).
    BUFFALO_L_MODEL: InputNorm(127.5, 127.5, "rgb"),
}


def graph_input_norm(path: Path) -> InputNorm:
    """insightface's rule for models without a preset (``model_zoo/arcface_onnx.py``).

    Graphs converted from MXNet normalise inside the network (a ``Sub`` and a ``Mul``
    among the first 8 nodes) and take raw pixels; the others take ``(x − 127.5) / 127.5``.
    """
    import onnx

    names = [node.name for node in onnx.load(str(path), load_external_data=False).graph.node[:8]]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return InputNorm(0.0, 1.0) if has_sub and has_mul else InputNorm(127.5, 127.5)


def insightface_buffalo_l_dir() -> Path:
    """Where insightface keeps its ``buffalo_l`` pack."""
    return Path("~/.insightface/models/buffalo_l").expanduser()


def _find_buffalo_l(settings: Settings) -> Path | None:
    for path in (
        settings.model_home / BUFFALO_L_MODEL,
        insightface_buffalo_l_dir() / BUFFALO_L_MODEL,
    ):
        if path.is_file():
            return path
    return None


def default_model(settings: Settings) -> Path:
    """insightface's buffalo_l ResNet-50 if present (or downloadable), else MobileFaceNet.

    Raises:
        ModelNotFoundError: Neither model is available.
    """
    found = _find_buffalo_l(settings)
    if found is None and not settings.offline:
        try:
            from insightface.utils.storage import ensure_available

            ensure_available("models", "buffalo_l")
        except Exception as exc:  # any failure just means: use the fallback model
            log.info(
                "cannot download insightface buffalo_l (%s); using %s", exc, MOBILEFACENET_MODEL
            )
        found = _find_buffalo_l(settings)
    if found is not None:
        return found
    if not model_available(MOBILEFACENET_MODEL, settings):
        raise ModelNotFoundError(
            f"no ArcFace model: put {MOBILEFACENET_MODEL} or insightface's {BUFFALO_L_MODEL} "
            f"(buffalo_l) in {settings.model_home}, or set --model-home / M2F_MODEL_HOME"
        )
    return model_path(MOBILEFACENET_MODEL, settings)


def resolve_model(model: str | Path | None, settings: Settings) -> Path:
    """The weights file for ``model``: a file name in the model home, or a path.

    Raises:
        ModelNotFoundError: The file is missing (with where to put it).
    """
    if model is None:
        return default_model(settings)
    path = Path(model).expanduser()
    if path.name == str(model):  # a bare file name: look in the model home
        if path.name == BUFFALO_L_MODEL and (found := _find_buffalo_l(settings)):
            return found
        return model_path(path.name, settings)
    if not path.is_file():
        raise ModelNotFoundError(f"recognizer model file not found: {path}")
    return path


class ArcFaceONNX(Recognizer):
    """An ArcFace-class ONNX model (input N×3×112×112) with flip-sum embeddings.

    Args:
        model: File name in the model home, or a path; ``None`` picks insightface's
            ``w600k_r50.onnx`` (buffalo_l) where available, else ``mobilefacenet_arcface.onnx``.
        input_mean: Subtracted from pixel values (``None``: the model's preset or
            insightface's rule).
        input_std: Divides the centred values (``None``: as ``input_mean``).
        color: Channel order the model takes, ``rgb`` or ``bgr`` (``None``: as ``input_mean``).
        batch_size: Chips per ONNX Runtime call.
        device: ``cpu`` or ``cuda`` (CUDA when onnxruntime-gpu provides it).
        threads: ONNX Runtime intra-op threads (``None``: its default).
        settings: Where the model home is.
    """

    name = "arcface-onnx"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        input_mean: float | None = None,
        input_std: float | None = None,
        color: str | None = None,
        batch_size: int = 32,
        device: str = "cpu",
        threads: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        import onnxruntime as ort

        if device not in ("cpu", "cuda"):
            raise M2FError(f"arcface-onnx device must be cpu or cuda, got {device!r}")
        if batch_size < 1:
            raise M2FError(f"arcface-onnx batch_size must be ≥ 1, got {batch_size}")
        self.model_path = resolve_model(model, settings or Settings.resolve())
        base = PRESETS.get(self.model_path.name) or graph_input_norm(self.model_path)
        self.norm = InputNorm(
            mean=base.mean if input_mean is None else float(input_mean),
            std=base.std if input_std is None else float(input_std),
            color=base.color if color is None else color,
        )
        if self.norm.color not in ("rgb", "bgr"):
            raise M2FError(f"arcface-onnx color must be rgb or bgr, got {self.norm.color!r}")
        if not self.norm.std > 0:
            raise M2FError(f"arcface-onnx input_std must be > 0, got {self.norm.std}")

        self._session = ort.InferenceSession(
            str(self.model_path),
            sess_options=_ort_session_options(threads),
            providers=onnx_providers(device),
        )
        if device == "cuda" and "CUDAExecutionProvider" not in self._session.get_providers():
            log.warning("CUDA is not available to onnxruntime; arcface-onnx runs on the CPU")
        model_input = self._session.get_inputs()[0]
        if list(model_input.shape[1:]) != [3, CHIP_SIZE, CHIP_SIZE]:
            raise M2FError(
                f"{self.model_path.name} takes input {model_input.shape}, "
                f"not ArcFace chips (N×3×{CHIP_SIZE}×{CHIP_SIZE})"
            )
        self._input_name = model_input.name
        # Some exports fix the batch dimension; feed exactly that many, padding the last call.
        self._fixed_batch = model_input.shape[0] if isinstance(model_input.shape[0], int) else None
        self.batch_size = self._fixed_batch or batch_size
        self.embedding_dim = int(
            self._run(np.zeros((1, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)).shape[1]
        )

    def config(self) -> dict[str, Any]:
        return {
            "model": self.model_path.name,
            "model_sha256": file_digest(self.model_path),
            "input_mean": self.norm.mean,
            "input_std": self.norm.std,
            "color": self.norm.color,
            "flip_sum": True,
        }

    def blob(self, chips: np.ndarray) -> np.ndarray:
        """The network input for RGB uint8 chips: channel order, normalisation, NCHW float32."""
        x = chips[..., ::-1] if self.norm.color == "bgr" else chips
        x = (x.astype(np.float32) - np.float32(self.norm.mean)) / np.float32(self.norm.std)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def _run(self, chips: np.ndarray) -> np.ndarray:
        blob = self.blob(chips)
        n = len(blob)
        if self._fixed_batch and n < self._fixed_batch:
            blob = np.concatenate(
                [blob, np.zeros((self._fixed_batch - n, *blob.shape[1:]), blob.dtype)]
            )
        return self._session.run(None, {self._input_name: blob})[0][:n]

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Flip-sum embeddings (float32 N×D, unit rows) of RGB uint8 112×112 chips (N×112×112×3)."""
        chips = np.asarray(chips)
        if (
            chips.ndim != 4
            or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3)
            or chips.dtype != np.uint8
        ):
            raise ValueError(f"expected uint8 chips N×112×112×3, got {chips.dtype} {chips.shape}")
        out = np.empty((len(chips), self.embedding_dim), np.float32)
        for start in range(0, len(chips), self.batch_size):
            chunk = chips[start : start + self.batch_size]
            out[start : start + len(chunk)] = self._run(chunk) + self._run(chunk[:, :, ::-1])
        return l2_normalise(out)

    def embed(
        self,
        crops: np.ndarray,
        geometry: CropGeometry,
        landmarks: np.ndarray | None = None,
    ) -> np.ndarray:
        crops = check_batch(crops, geometry)
        if len(crops) == 0:
            return np.empty((0, self.embedding_dim), np.float32)
        return self.embed_chips(geometry.chip(crops))
