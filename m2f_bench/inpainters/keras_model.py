"""Keras inpainting models: ``.keras`` and legacy ``.h5`` files, and SavedModel folders.

The model's input conventions (value range, channel order, how the hole is given, fixed
size) are declared as arguments, so a model trained in Keras needs no wrapper code; the
original Mask2Face model, for one, takes only the masked crop, BGR in ``[0, 1]``, at
256×256.

Which framework reads which file, and why:

* ``.keras`` and ``.h5`` files are read by Keras 3 (the ``keras`` extra, about 45 MB
  installed) on whichever backend Keras is set to use. Both formats hold the layer graph
  and the weights, not backend code, so Keras 3 on the torch backend, which m2f-bench
  already depends on, reads files written with TensorFlow too: no 1.3 GB TensorFlow is
  needed for them. A user's ``KERAS_BACKEND`` (or ``keras.json``) is never overridden:
  only when neither names a backend, Keras is not imported yet and TensorFlow is not
  installed, so that Keras' own default (TensorFlow) cannot load, is ``KERAS_BACKEND``
  set to ``torch``.
* ``.h5`` files written by Keras 2 (``tf.keras`` before TensorFlow 2.16, ``tf_keras``)
  load, the layer arguments Keras 3 dropped (``groups=1``, training-only initializers)
  ignored; a Keras 2 ``.h5`` whose model nests another model (a pretrained encoder) does
  not, as Keras 3 numbers a nested model's calls differently: use its SavedModel export.
* A SavedModel folder holds TensorFlow graphs, which only TensorFlow runs: it is loaded
  with ``tf.saved_model.load`` and run through its serving signature, whatever the Keras
  backend (the ``tensorflow`` extra: a 270 MB wheel, 1.3 GB installed, which works
  beside torch in one process).

Files are loaded with ``compile=False`` (a training loss such as Mask2Face's
``ssim_loss`` is not needed to predict) and in Keras' safe mode, so a file cannot run
code of its own: a ``Lambda`` layer must be rewritten as a layer class. Safe mode holds
for legacy ``.h5`` files too only from Keras 3.11.3 on (CVE-2025-9905; the extras ask for
≥ 3.14, which also fixes CVE-2026-1462). A SavedModel is a TensorFlow program: load only
SavedModels you trust.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m2f_bench.errors import M2FError, ModelNotFoundError
from m2f_bench.inpainters.base import Inpainter, parse_batch_size, parse_size, run_at_size

log = logging.getLogger(__name__)

_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_HOLE_CHANNELS = ("none", "concat", "input")
_DEFAULT_BATCH = 8
KERAS_EXTRA = "pip install 'm2f-bench[keras]'"
TENSORFLOW_EXTRA = "pip install 'm2f-bench[tensorflow]'"

#: (name, shape) of each model input, shapes with ``None`` for free dimensions.
_Inputs = list[tuple[str, tuple[int | None, ...]]]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules holds None or no spec
        return False


def _configured_backend() -> str | None:
    """The backend named in ``keras.json``, where Keras reads it from."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        config = json.loads(Path(home, "keras.json").read_text())
    except (OSError, ValueError):
        return None
    return config.get("backend") if isinstance(config, dict) else None


def choose_backend() -> str | None:
    """Set ``KERAS_BACKEND=torch`` where Keras' own default could not load; else nothing.

    Must run before Keras is first imported. Keras writes ``"backend": "tensorflow"`` to
    ``keras.json`` on first import whatever backend is in use, so that value is not taken
    as the user's choice when TensorFlow is absent; any other value is.

    Returns:
        The backend set, or None when Keras' own choice was left alone.
    """
    if os.environ.get("KERAS_BACKEND") or "keras" in sys.modules or _installed("tensorflow"):
        return None
    if _configured_backend() not in (None, "tensorflow"):
        return None
    os.environ["KERAS_BACKEND"] = "torch"
    return "torch"


def import_keras() -> Any:
    """Keras 3, on the backend :func:`choose_backend` leaves or sets.

    Raises:
        M2FError: Keras 3 or its backend's framework is not installed.
    """
    choose_backend()
    try:
        import keras
    except ImportError as exc:
        if not _installed("keras"):
            raise M2FError(f"Keras is not installed: {KERAS_EXTRA}") from exc
        backend = os.environ.get("KERAS_BACKEND") or _configured_backend() or "tensorflow"
        raise M2FError(
            f"Keras cannot load its {backend!r} backend ({exc}); install it or set "
            "KERAS_BACKEND=torch"
        ) from exc
    if int(keras.__version__.split(".")[0]) < 3:
        raise M2FError(f"Keras {keras.__version__} is too old, Keras 3 is needed: {KERAS_EXTRA}")
    return keras


def _is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an error, cut short: Keras quotes whole layer configs."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


#: Layers whose Keras 2 configs hold arguments Keras 3 no longer takes.
_KERAS2_LAYERS = (
    "Conv1DTranspose",
    "Conv2DTranspose",
    "Conv3DTranspose",
    "DepthwiseConv1D",
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
)
_TRAINING_ONLY = ("_initializer", "_regularizer", "_constraint")


def _keras2_layers(keras: Any) -> dict[str, type]:
    """Layers that read what Keras 2 wrote into ``.h5`` files, for ``custom_objects``.

    Keras 2 saved ``groups: 1`` for transposed, depthwise and separable convolutions (and
    a kernel initializer, regularizer and constraint for separable ones), which Keras 3
    refuses (keras-team/keras#19441): Mask2Face's U-Net upsamples with Conv2DTranspose.
    One group is no grouping and the others only act in training, so these arguments are
    dropped when the Keras 3 layer does not take them; anything else still fails.
    """
    layers = {}
    for name in _KERAS2_LAYERS:
        base = getattr(keras.layers, name, None)
        if base is None:
            continue
        accepted = set(inspect.signature(base.__init__).parameters)

        def keep(key: str, value: Any, accepted: set[str] = accepted) -> bool:
            if key in accepted:
                return True
            return not ((key == "groups" and value == 1) or key.endswith(_TRAINING_ONLY))

        def from_config(
            cls: type, config: dict[str, Any], keep: Callable = keep, base: type = base
        ) -> Any:
            kept = {key: value for key, value in config.items() if keep(key, value)}
            return base.from_config.__func__(cls, kept)

        layers[name] = type(name, (base,), {"from_config": classmethod(from_config)})
    return layers


class KerasInpainter(Inpainter):
    """A Keras model (``.keras``, ``.h5`` or SavedModel) mapping a masked crop to a face.

    The image goes in as channels-last RGB (or BGR) scaled to ``image_range`` and the
    output is read back with the same range and channel order. How the model learns where
    the hole is, is ``hole_channel``: ``none`` (the masked crop alone, as Mask2Face's
    original model), ``concat`` (a fourth channel after the three colour channels) or
    ``input`` (a separate one-channel input); the hole channel is ``mask_value`` inside
    the hole and ``1 - mask_value`` elsewhere.

    Args:
        model: Path of a ``.keras`` or ``.h5`` file, or of a SavedModel folder.
        hole_channel: ``none``, ``concat`` or ``input`` (default: from the model's inputs:
            two inputs mean ``input``, one with four channels ``concat``, three ``none``).
        image_input: Name of the image input, for ``input`` (default: the one with three
            channels, else the first).
        mask_input: Name of the hole input, for ``input`` (default: the other one).
        output: Name of the inpainted output (default: the first output).
        image_range: The values black and white take, e.g. ``[0, 1]``, ``[-1, 1]``,
            ``[0, 255]``.
        channel_order: ``rgb``, or ``bgr`` for a model trained on OpenCV-read images.
        mask_value: 1 if hole pixels are 1 in the hole channel, 0 if they are 0.
        size: ``[height, width]`` (or one side) the crops are resized to and back from
            (default: the model's fixed input size if it has one, else none).
        batch_size: Images per run (default: the model's fixed batch size if it has one,
            else 8).
    """

    name = "keras"

    @classmethod
    def check_files(cls, args: dict[str, Any], settings: Any) -> None:
        path = Path(str(args.get("model", ""))).expanduser()
        if not (path.is_file() or _is_saved_model(path)):
            raise ModelNotFoundError(
                f"inpainter {cls.name!r}: model file or SavedModel folder not found: {path}"
            )

    def __init__(
        self,
        model: str,
        hole_channel: str | None = None,
        image_input: str | None = None,
        mask_input: str | None = None,
        output: str | None = None,
        image_range: Sequence[float] = (0.0, 1.0),
        channel_order: str = "rgb",
        mask_value: int = 1,
        size: int | Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> None:
        where = f"inpainter {self.name!r}"
        path = Path(model).expanduser()
        if path.is_dir() and not _is_saved_model(path):
            raise M2FError(f"{where}: {path} is a folder but not a SavedModel (no saved_model.pb)")
        if not (path.is_file() or path.is_dir()):
            raise ModelNotFoundError(f"{where}: model file not found: {path}")
        if path.is_file() and path.suffix.lower() not in _KERAS_SUFFIXES:
            raise M2FError(
                f"{where}: {path.name} is not a .keras or .h5 file or a SavedModel folder"
            )
        if hole_channel is not None and hole_channel not in _HOLE_CHANNELS:
            raise M2FError(
                f"{where}: hole_channel must be one of {', '.join(_HOLE_CHANNELS)}, "
                f"got {hole_channel!r}"
            )
        if (
            not isinstance(image_range, list | tuple)
            or len(image_range) != 2
            or not (image_range[0] < image_range[1])
        ):
            raise M2FError(f"{where}: image_range must be [low, high], got {image_range!r}")
        if channel_order not in ("rgb", "bgr"):
            raise M2FError(f"{where}: channel_order must be rgb or bgr, got {channel_order!r}")
        if mask_value not in (0, 1):
            raise M2FError(f"{where}: mask_value must be 0 or 1, got {mask_value!r}")
        batch_size = parse_batch_size(batch_size, where)
        size = parse_size(size, where)

        if path.is_dir():
            inputs, outputs, self._predict = _load_saved_model(path, where)
        else:
            inputs, outputs, self._predict = _load_keras_file(path, where)

        names = [name for name, _ in inputs]
        if hole_channel is None:
            hole_channel = (
                "input" if len(inputs) == 2 else "concat" if _channels(inputs[0]) == 4 else "none"
            )
        if hole_channel == "input":
            if len(inputs) != 2:
                raise M2FError(
                    f"{where}: hole_channel 'input' needs two inputs, {path.name} has "
                    f"{_describe(inputs)}"
                )
            three = [name for name, shape in inputs if shape[-1] == 3]
            image_input = image_input or (three[0] if len(three) == 1 else None)
            image_input = image_input or next(n for n in names if n != mask_input)
            mask_input = mask_input or next((n for n in names if n != image_input), None)
            for role, name in (("image_input", image_input), ("mask_input", mask_input)):
                if name not in names:
                    raise M2FError(
                        f"{where}: {role} {name!r} is not an input of {path.name} "
                        f"(inputs: {', '.join(names)})"
                    )
        elif len(inputs) != 1:
            raise M2FError(
                f"{where}: hole_channel {hole_channel!r} needs one input, {path.name} has "
                f"{_describe(inputs)}"
            )
        else:
            image_input, mask_input = names[0], None

        shapes = dict(inputs)
        image_channels = 4 if hole_channel == "concat" else 3
        image_shape = shapes[image_input]
        if len(image_shape) != 4 or image_shape[-1] != image_channels:
            raise M2FError(
                f"{where}: image input {image_input!r} has shape {_shape(image_shape)}; "
                f"hole_channel {hole_channel!r} needs N×H×W×{image_channels} (channels last)"
            )
        if mask_input is not None and (
            len(shapes[mask_input]) != 4 or shapes[mask_input][-1] not in (1, None)
        ):
            raise M2FError(
                f"{where}: hole input {mask_input!r} has shape {_shape(shapes[mask_input])}, "
                "expected N×H×W×1"
            )
        if output is not None and output not in outputs:
            raise M2FError(
                f"{where}: output {output!r} is not an output of {path.name} "
                f"(outputs: {', '.join(outputs)})"
            )

        spatial = image_shape[1:3]
        fixed_size = tuple(spatial) if all(isinstance(s, int) for s in spatial) else None
        fixed_batch = image_shape[0]
        resize_to = fixed_size
        if size is not None:
            resize_to = size
            if fixed_size is not None and resize_to != fixed_size:
                raise M2FError(
                    f"{where}: size {list(resize_to)} but {path.name} takes "
                    f"{fixed_size[0]}×{fixed_size[1]} inputs"
                )
        if batch_size is not None and fixed_batch not in (None, batch_size):
            raise M2FError(
                f"{where}: batch_size {batch_size} but {path.name} takes batches of {fixed_batch}"
            )

        self.hole_channel = hole_channel
        self.image_input, self.mask_input = image_input, mask_input
        self.output = output or outputs[0]
        self.image_range = (float(image_range[0]), float(image_range[1]))
        self.channel_order = channel_order
        self.mask_value = mask_value
        self.size = resize_to
        self.batch_size = batch_size or fixed_batch or _DEFAULT_BATCH
        self._pad_to_batch = fixed_batch is not None

    def inpaint(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        return run_at_size(images, holes, self.size, self.batch_size, self._run)

    def model_inputs(self, images: np.ndarray, holes: np.ndarray) -> dict[str, np.ndarray]:
        """The model's inputs for uint8 crops and their holes, by input name."""
        low, high = self.image_range
        x = images.astype(np.float32) * ((high - low) / 255.0) + low
        if self.channel_order == "bgr":
            x = x[..., ::-1]
        hole = (holes if self.mask_value == 1 else ~holes)[..., None].astype(np.float32)
        if self.hole_channel == "concat":
            return {self.image_input: np.concatenate([x, hole], axis=-1)}
        feeds = {self.image_input: np.ascontiguousarray(x)}
        if self.mask_input is not None:
            feeds[self.mask_input] = hole
        return feeds

    def _run(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        count = len(images)
        if self._pad_to_batch and count < self.batch_size:
            # A model built for a fixed batch takes no other: repeat the last image.
            images = np.concatenate([images, np.repeat(images[-1:], self.batch_size - count, 0)])
            holes = np.concatenate([holes, np.repeat(holes[-1:], self.batch_size - count, 0)])
        try:
            y = self._predict(self.model_inputs(images, holes), self.output)
        except M2FError:
            raise
        except Exception as exc:  # the backends' errors share no base class but Exception
            raise M2FError(
                f"inpainter {self.name!r}: model run failed: {_first_line(exc)}"
            ) from exc
        y = np.asarray(y, dtype=np.float32)
        if y.shape != images.shape:
            raise M2FError(
                f"inpainter {self.name!r}: output {self.output!r} has shape "
                f"{y.shape}, expected {images.shape} (N×H×W×3)"
            )
        if self.channel_order == "bgr":
            y = y[..., ::-1]
        low, high = self.image_range
        y = (y - low) * (255.0 / (high - low))
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)[:count]


_Predict = Callable[[dict[str, np.ndarray], str], Any]


def _load_keras_file(path: Path, where: str) -> tuple[_Inputs, list[str], _Predict]:
    try:
        keras = import_keras()
    except M2FError as exc:
        raise M2FError(f"{where}: {exc}") from exc
    legacy = _keras2_layers(keras) if path.suffix.lower() != ".keras" else None
    try:
        model = keras.models.load_model(path, compile=False, custom_objects=legacy)
    except Exception as exc:  # Keras raises ValueError, OSError, TypeError... by format
        reason: BaseException = exc
        # "Error when deserializing class ... using config={...}" wraps the actual reason.
        while str(reason).startswith("Error when deserializing") and (
            reason.__cause__ or reason.__context__
        ):
            reason = reason.__cause__ or reason.__context__
        hint = ""
        if legacy and "Functional model configuration" in str(exc):
            # Keras 2 numbered the calls of a nested model from 1, Keras 3 from 0.
            hint = " (Keras 3 cannot rebuild a model nested in a Keras 2 .h5: use its SavedModel)"
        raise M2FError(
            f"{where}: cannot load {path} as a Keras model{hint}: {_first_line(reason)}"
        ) from exc
    if not hasattr(model, "inputs") or not getattr(model, "outputs", None):
        raise M2FError(f"{where}: {path.name} holds a model with no defined inputs")
    log.info(
        "%s: %s runs on Keras %s (%s)", where, path, keras.__version__, keras.backend.backend()
    )
    inputs = [(tensor.name, tuple(tensor.shape)) for tensor in model.inputs]
    # A Sequential model has neither the input structure nor output names of a functional one.
    try:
        structure = model.input
    except (AttributeError, ValueError):  # which one depends on the Keras version
        structure = model.inputs[0]
    outputs = list(getattr(model, "output_names", None) or [model.layers[-1].name])

    def predict(feeds: dict[str, np.ndarray], output: str) -> Any:
        # Fed as the model was built (one tensor, a list or a dict), which Keras checks.
        y = model.predict_on_batch(keras.tree.map_structure(lambda t: feeds[t.name], structure))
        if isinstance(y, Mapping):  # outputs built as a dict, keyed by their own names
            return _pick(y, output, where) if len(y) > 1 else next(iter(y.values()))
        if isinstance(y, list | tuple):
            return y[outputs.index(output)]
        return y

    return inputs, outputs, predict


def _load_saved_model(path: Path, where: str) -> tuple[_Inputs, list[str], _Predict]:
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise M2FError(
            f"{where}: a SavedModel folder needs TensorFlow: {TENSORFLOW_EXTRA}"
        ) from exc
    # TensorFlow reserves nearly all of a GPU's memory on first use by default, which would
    # starve the torch models (learned inpainters, recognizers) of the same run.
    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):  # already initialised: too late, leave it
            tf.config.experimental.set_memory_growth(gpu, True)
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TensorFlow's errors share no base class but Exception
        raise M2FError(f"{where}: cannot load SavedModel {path}: {_first_line(exc)}") from exc
    signatures = dict(loaded.signatures)
    if not signatures:
        raise M2FError(f"{where}: SavedModel {path} has no serving signature")
    function = signatures.get("serving_default") or next(iter(signatures.values()))
    specs = function.structured_input_signature[1]
    if not specs:
        raise M2FError(f"{where}: the serving signature of {path} takes no named inputs")
    for name, spec in specs.items():
        if not spec.dtype.is_floating:
            raise M2FError(
                f"{where}: input {name!r} is {spec.dtype.name}; only float inputs are supported"
            )
    inputs = [(name, tuple(spec.shape.as_list())) for name, spec in specs.items()]
    outputs = list(function.structured_outputs)
    log.info("%s: %s runs on TensorFlow %s", where, path, tf.__version__)

    def predict(feeds: dict[str, np.ndarray], output: str) -> Any:
        tensors = {name: tf.constant(x, dtype=specs[name].dtype) for name, x in feeds.items()}
        return _pick(function(**tensors), output, where).numpy()

    return inputs, outputs, predict


def _pick(outputs: Mapping[str, Any], output: str, where: str) -> Any:
    if output not in outputs:
        raise M2FError(
            f"{where}: the model returned no output {output!r} (outputs: {', '.join(outputs)})"
        )
    return outputs[output]


def _channels(item: tuple[str, tuple[int | None, ...]]) -> int | None:
    return item[1][-1] if item[1] else None


def _shape(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


def _describe(inputs: _Inputs) -> str:
    return ", ".join(f"{name} {_shape(shape)}" for name, shape in inputs)
