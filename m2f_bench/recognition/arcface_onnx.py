"""ArcFace-family recognizers in ONNX (Deng et al., "ArcFace: Additive Angular Margin Loss
for Deep Face Recognition", CVPR 2019), run through ONNX Runtime.

The network sees a chip taken from the aligned crop by a fixed warp
(:meth:`CropGeometry.chip`, no second detection): by default the 112×112 ArcFace chip, or
for a model with another static input size a window of the same template centred on it
(a 112×96 model sees columns 8–104). By default the embedding is the L2-normalised sum
of the outputs for the chip and its mirror image, as in insightface's verification
evaluation: it is symmetric by construction, and is what the LFW figure in the shared
README was measured with. Chip size and window, input layout, channel order,
normalisation and the use of the mirror image are options, all recorded in
:meth:`ArcFaceONNX.config`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from m2f_bench.errors import M2FError, ModelNotFoundError
from m2f_bench.faces.align import CHIP_SIZE, ChipSpec, CropGeometry, check_window
from m2f_bench.faces.detect import _ort_session_options, onnx_providers
from m2f_bench.hub import model_available, model_path
from m2f_bench.recognition.base import Recognizer, check_batch, file_digest, l2_normalise
from m2f_bench.settings import Settings

log = logging.getLogger(__name__)

#: insightface's ResNet-50 trained on WebFace600K, from its ``buffalo_l`` pack.
BUFFALO_L_MODEL = "w600k_r50.onnx"
MOBILEFACENET_MODEL = "mobilefacenet_arcface.onnx"


#: One value for every channel, or one per channel in the order the model takes them.
Channels = float | tuple[float, float, float]

MIRRORS = ("sum", "concat", "none")
LAYOUTS = ("nchw", "nhwc")
COLORS = ("rgb", "bgr")


@dataclass(frozen=True)
class InputNorm:
    """How a model wants its input: ``(pixel − mean) / std`` in the given channel order."""

    mean: Channels
    std: Channels
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


_announced: set[str] = set()


def _announce(line: str) -> None:
    """Say once per process which default model is used."""
    if line not in _announced:
        _announced.add(line)
        print(line, file=sys.stderr, flush=True)


def default_model(settings: Settings) -> Path:
    """insightface's buffalo_l ResNet-50 if present, else MobileFaceNet if present, else
    buffalo_l downloaded (only then: with a model at hand nothing is fetched).

    Raises:
        ModelNotFoundError: Neither model is available.
    """
    found = _find_buffalo_l(settings)
    if found is None and model_available(MOBILEFACENET_MODEL, settings):
        # A model is at hand: no download is tried for the other one.
        _announce(
            f"arcface-onnx: using {MOBILEFACENET_MODEL} from {settings.model_home} "
            f"(no {BUFFALO_L_MODEL} there)"
        )
        return model_path(MOBILEFACENET_MODEL, settings)
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
        _announce(f"arcface-onnx: using {found}")
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


def _err(message: str) -> M2FError:
    return M2FError(f"arcface-onnx {message}")


def _choice(option: str, value: Any, choices: Sequence[str]) -> str | None:
    if value is not None and value not in choices:
        raise _err(f"{option} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _channels(option: str, value: Any) -> Channels | None:
    if value is None:
        return None
    if _is_number(value):
        return float(value)
    if isinstance(value, Sequence) and len(value) == 3 and all(map(_is_number, value)):
        return (float(value[0]), float(value[1]), float(value[2]))
    raise _err(f"{option} must be a number or 3 numbers (the model's channel order), got {value!r}")


def _chip_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = [value, value] if _is_number(value) else value
    if (
        isinstance(pair, Sequence)
        and len(pair) == 2
        and all(_is_number(v) and v == int(v) and v > 0 for v in pair)
    ):
        return (int(pair[0]), int(pair[1]))
    raise _err(f"chip_size must be a side or [height, width] in pixels, got {value!r}")


def _chip_window(value: Any) -> tuple[float, float, float, float] | None:
    if value is None:
        return None
    if not (isinstance(value, Sequence) and len(value) == 4 and all(map(_is_number, value))):
        raise _err(f"chip_window must be [left, top, right, bottom] in template px, got {value!r}")
    window = (float(value[0]), float(value[1]), float(value[2]), float(value[3]))
    try:
        check_window(window)
    except ValueError as exc:
        raise _err(str(exc)) from None
    return window


def _chip_spec(size: tuple[int, int], window: tuple[float, float, float, float]) -> ChipSpec:
    try:
        return ChipSpec(size, window)
    except ValueError as exc:
        raise _err(str(exc)) from None


@dataclass(frozen=True)
class _Options:
    """The options of a protocol entry, checked as far as possible without the model."""

    chip_size: tuple[int, int] | None = None
    chip_window: tuple[float, float, float, float] | None = None
    layout: str | None = None
    color: str | None = None
    input_mean: Channels | None = None
    input_std: Channels | None = None
    mirror: str = "sum"
    batch_size: int = 32
    device: str = "cpu"

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> _Options:
        """Checked options from protocol arguments (other keys are ignored).

        Raises:
            M2FError: An option has a wrong value, or two contradict each other.
        """
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in args.items() if k in names and v is not None}
        device = _choice("device", values.get("device", "cpu"), ("cpu", "cuda"))
        batch_size = values.get("batch_size", 32)
        if not (_is_number(batch_size) and batch_size == int(batch_size) and batch_size >= 1):
            raise _err(f"batch_size must be ≥ 1, got {batch_size!r}")
        std = _channels("input_std", values.get("input_std"))
        if std is not None and not min(np.atleast_1d(std)) > 0:
            raise _err(f"input_std must be > 0, got {list(np.atleast_1d(std))}")
        options = cls(
            chip_size=_chip_size(values.get("chip_size")),
            chip_window=_chip_window(values.get("chip_window")),
            layout=_choice("layout", values.get("layout"), LAYOUTS),
            color=_choice("color", values.get("color"), COLORS),
            input_mean=_channels("input_mean", values.get("input_mean")),
            input_std=std,
            mirror=_choice("mirror", values.get("mirror", "sum"), MIRRORS),
            batch_size=int(batch_size),
            device=device,
        )
        if options.chip_size and options.chip_window:
            _chip_spec(options.chip_size, options.chip_window)  # same aspect ratio
        return options


def _static(dim: Any) -> int | None:
    """A fixed ONNX dimension, or ``None`` for a symbolic or unknown one."""
    return dim if isinstance(dim, int) and dim > 0 else None


def input_geometry(shape: Sequence[Any], options: _Options, model: str) -> tuple[str, ChipSpec]:
    """Layout and chip for a model input of ``shape``, from what it fixes and the options.

    Raises:
        M2FError: The input is not a batch of 3-channel images, or an option contradicts
            the shape.
    """
    shape = list(shape)
    dims = [_static(d) for d in shape]
    if len(dims) != 4:
        raise _err(f"needs a 4-d image input (N×3×H×W or N×H×W×3); {model} takes {shape}")
    channels = {"nchw": dims[1], "nhwc": dims[3]}
    three = [name for name in LAYOUTS if channels[name] == 3]
    if options.layout is not None:
        if channels[options.layout] not in (3, None):
            raise _err(f"layout {options.layout} does not fit {model}'s input {shape}")
        layout = options.layout
    elif len(three) == 1:
        layout = three[0]
    elif three or channels == {"nchw": None, "nhwc": None}:
        layout = "nchw"  # the shape cannot tell: the common ONNX export
    elif None in channels.values():
        raise _err(f"cannot tell the layout of {model}'s input {shape}: set layout")
    else:
        raise _err(f"{model} takes {shape}: not a batch of 3-channel images")
    fixed = (dims[2], dims[3]) if layout == "nchw" else (dims[1], dims[2])

    if options.chip_size is not None:
        size, source = options.chip_size, "chip_size"
    elif None not in fixed:
        size, source = (fixed[0], fixed[1]), "input"
    elif options.chip_window is not None:
        left, top, right, bottom = options.chip_window
        if (right - left) % 1 or (bottom - top) % 1:
            raise _err(f"{model} has a free input size: give chip_size for this chip_window")
        size, source = (int(bottom - top), int(right - left)), "chip_window"
    else:
        size, source = (CHIP_SIZE, CHIP_SIZE), "default"
    if any(want is not None and got != want for got, want in zip(size, fixed, strict=True)):
        expected = "×".join(str(d or "?") for d in fixed)
        raise _err(
            f"chip {size[0]}×{size[1]} ({source}) does not fit {model}'s input {shape} "
            f"({expected}, height×width); set chip_size to match"
        )
    if options.chip_window is None:
        return layout, ChipSpec.centred(*size)
    return layout, _chip_spec(size, options.chip_window)


def _as_json(value: Channels) -> float | list[float]:
    return list(value) if isinstance(value, tuple) else value


class ArcFaceONNX(Recognizer):
    """An ArcFace-family ONNX model: aligned chip in, identity embedding out.

    Every option left out is read from the model where it can be (input layout and chip
    size from a static input shape; normalisation from a preset or insightface's graph
    rule), else it takes today's ArcFace convention (NCHW, 112×112, RGB).

    Args:
        model: File name in the model home, or a path; ``None`` picks insightface's
            ``w600k_r50.onnx`` (buffalo_l) where available, else ``mobilefacenet_arcface.onnx``.
        chip_size: Network input side, or ``[height, width]`` in pixels (``None``: the
            model's static input size, else 112×112).
        chip_window: ``[left, top, right, bottom]`` of the ArcFace 112×112 template, in its
            pixels, that the chip shows; it may reach into the crop's margin (x −24…136,
            y −16…144) and must have the chip's aspect ratio (``None``: centred, the
            longer side spanning 112, e.g. ``[8, 0, 104, 112]`` for 112×96).
        layout: ``nchw`` or ``nhwc`` (``None``: from the input shape, NCHW when it cannot
            tell).
        input_mean: Subtracted from pixel values, one number or one per channel in the
            model's channel order (``None``: the model's preset or insightface's rule).
        input_std: Divides the centred values (``None``: as ``input_mean``).
        color: Channel order the model takes, ``rgb`` or ``bgr`` (``None``: as ``input_mean``).
        mirror: ``sum`` (of the outputs for the chip and its mirror image), ``concat``
            (of the two: twice the model's output size) or ``none`` (the chip alone).
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
        chip_size: int | Sequence[int] | None = None,
        chip_window: Sequence[float] | None = None,
        layout: str | None = None,
        input_mean: float | Sequence[float] | None = None,
        input_std: float | Sequence[float] | None = None,
        color: str | None = None,
        mirror: str = "sum",
        batch_size: int = 32,
        device: str = "cpu",
        threads: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        import onnxruntime as ort

        options = _Options.parse(
            {
                "chip_size": chip_size,
                "chip_window": chip_window,
                "layout": layout,
                "input_mean": input_mean,
                "input_std": input_std,
                "color": color,
                "mirror": mirror,
                "batch_size": batch_size,
                "device": device,
            }
        )
        self.mirror = options.mirror
        self.model_path = resolve_model(model, settings or Settings.resolve())
        base = PRESETS.get(self.model_path.name) or graph_input_norm(self.model_path)
        self.norm = InputNorm(
            mean=base.mean if options.input_mean is None else options.input_mean,
            std=base.std if options.input_std is None else options.input_std,
            color=base.color if options.color is None else options.color,
        )

        self._session = ort.InferenceSession(
            str(self.model_path),
            sess_options=_ort_session_options(threads),
            providers=onnx_providers(device),
        )
        if device == "cuda" and "CUDAExecutionProvider" not in self._session.get_providers():
            log.warning("CUDA is not available to onnxruntime; arcface-onnx runs on the CPU")
        model_input = self._session.get_inputs()[0]
        self.layout, self.chip = input_geometry(model_input.shape, options, self.model_path.name)
        self._input_name = model_input.name
        # Some exports fix the batch dimension; feed exactly that many, padding the last call.
        self._fixed_batch = _static(model_input.shape[0])
        self.batch_size = self._fixed_batch or options.batch_size
        probe = self._run(np.zeros((1, *self.chip.size, 3), np.uint8))
        self.embedding_dim = probe.shape[1] * (2 if self.mirror == "concat" else 1)

    @classmethod
    def check_files(cls, args: Mapping[str, Any], settings: Settings) -> None:
        model = args.get("model")
        if model is None:
            if _find_buffalo_l(settings) is None and not model_available(
                MOBILEFACENET_MODEL, settings
            ):
                default_model(settings)  # raises the one-line "no ArcFace model" message
            return
        path = Path(str(model)).expanduser()
        if path.name == str(model):
            if path.name == BUFFALO_L_MODEL and _find_buffalo_l(settings):
                return
            if not model_available(path.name, settings):
                model_path(path.name, settings, download=False)  # raises with where to put it
        elif not path.is_file():
            raise ModelNotFoundError(f"recognizer model file not found: {path}")

    @classmethod
    def check_spec(cls, args: Mapping[str, Any]) -> None:
        _Options.parse(args)

    def config(self) -> dict[str, Any]:
        return {
            "model": self.model_path.name,
            "model_sha256": file_digest(self.model_path),
            "chip_size": list(self.chip.size),
            "chip_window": list(self.chip.window),
            "layout": self.layout,
            "input_mean": _as_json(self.norm.mean),
            "input_std": _as_json(self.norm.std),
            "color": self.norm.color,
            "mirror": self.mirror,
        }

    def blob(self, chips: np.ndarray) -> np.ndarray:
        """The network input for RGB uint8 chips: channel order, normalisation, layout."""
        x = chips[..., ::-1] if self.norm.color == "bgr" else chips
        mean = np.asarray(self.norm.mean, np.float32)
        std = np.asarray(self.norm.std, np.float32)
        x = (x.astype(np.float32) - mean) / std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.layout == "nchw" else x)

    def _run(self, chips: np.ndarray) -> np.ndarray:
        blob = self.blob(chips)
        n = len(blob)
        if self._fixed_batch and n < self._fixed_batch:
            blob = np.concatenate(
                [blob, np.zeros((self._fixed_batch - n, *blob.shape[1:]), blob.dtype)]
            )
        out = self._session.run(None, {self._input_name: blob})[0][:n]
        return out.reshape(n, -1)  # N×D, also from exports that keep N×D×1×1

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings (float32 N×D, unit rows) of RGB uint8 chips of this model's size."""
        chips = np.asarray(chips)
        height, width = self.chip.size
        if chips.ndim != 4 or chips.shape[1:] != (height, width, 3) or chips.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 chips N×{height}×{width}×3, got {chips.dtype} {chips.shape}"
            )
        out = np.empty((len(chips), self.embedding_dim), np.float32)
        for start in range(0, len(chips), self.batch_size):
            chunk = chips[start : start + self.batch_size]
            rows = slice(start, start + len(chunk))
            if self.mirror == "none":
                out[rows] = self._run(chunk)
            elif self.mirror == "sum":
                out[rows] = self._run(chunk) + self._run(chunk[:, :, ::-1])
            else:
                out[rows] = np.concatenate([self._run(chunk), self._run(chunk[:, :, ::-1])], 1)
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
        return self.embed_chips(geometry.chip(crops, self.chip))
