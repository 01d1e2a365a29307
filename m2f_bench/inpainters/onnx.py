"""Any ONNX inpainting model that takes an image and a hole mask, run by ONNX Runtime.

The model's input/output conventions (tensor names, layout, value range, mask polarity,
fixed size) are declared as arguments, so an exported model needs no wrapper code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m2f_bench.errors import M2FError, ModelNotFoundError
from m2f_bench.faces.detect import onnx_providers
from m2f_bench.inpainters.base import Inpainter, run_at_size

log = logging.getLogger(__name__)

_FLOAT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}
_DEFAULT_BATCH = 8


class ONNXInpainter(Inpainter):
    """An ONNX model mapping (image, hole mask) to the inpainted image.

    The image goes in as RGB scaled to ``image_range`` and the output is read back with
    the same range and layout; the mask is ``mask_value`` inside the hole and
    ``1 - mask_value`` elsewhere, with one channel.

    Args:
        model: Path of the ``.onnx`` file.
        image_input: Name of the image input (default: the first input).
        mask_input: Name of the mask input (default: the other of the first two inputs).
        output: Name of the inpainted output (default: the first output).
        layout: ``nchw`` or ``nhwc``, for image, mask and output alike.
        image_range: The values black and white take, e.g. ``[0, 1]``, ``[-1, 1]``,
            ``[0, 255]``.
        mask_value: 1 if hole pixels are 1 in the mask, 0 if they are 0.
        size: ``[height, width]`` (or one side) the crops are resized to and back from
            (default: the model's fixed input size if it has one, else none).
        batch_size: Images per run (default: the model's fixed batch size if it has one,
            else 8).
        device: ``cpu`` or ``cuda`` (falls back to CPU when ONNX Runtime has no CUDA).
    """

    name = "onnx"

    def fingerprint(self) -> dict[str, Any]:
        from m2f_bench.inpainters.base import file_digest

        return {"model_sha256": file_digest(self.model_path)}

    @classmethod
    def check_files(cls, args: dict[str, Any], settings: Any) -> None:
        path = Path(str(args.get("model", ""))).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"inpainter {cls.name!r}: model file not found: {path}")

    def __init__(
        self,
        model: str,
        image_input: str | None = None,
        mask_input: str | None = None,
        output: str | None = None,
        layout: str = "nchw",
        image_range: Sequence[float] = (0.0, 1.0),
        mask_value: int = 1,
        size: int | Sequence[int] | None = None,
        batch_size: int | None = None,
        device: str = "cpu",
    ) -> None:
        import onnxruntime as ort

        where = f"inpainter {self.name!r}"
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"{where}: model file not found: {path}")
        if layout not in ("nchw", "nhwc"):
            raise M2FError(f"{where}: layout must be nchw or nhwc, got {layout!r}")
        if (
            not isinstance(image_range, list | tuple)
            or len(image_range) != 2
            or not (image_range[0] < image_range[1])
        ):
            raise M2FError(f"{where}: image_range must be [low, high], got {image_range!r}")
        if mask_value not in (0, 1):
            raise M2FError(f"{where}: mask_value must be 0 or 1, got {mask_value!r}")
        if device not in ("cpu", "cuda"):
            raise M2FError(f"{where}: device must be cpu or cuda, got {device!r}")

        self.model_path = path
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=onnx_providers(device)
            )
        except Exception as exc:  # ORT's errors share no base class but Exception
            raise M2FError(f"{where}: cannot load {path}: {exc}") from exc
        if device == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            log.warning("%s: ONNX Runtime has no CUDA here; running %s on the CPU", where, path)

        inputs = {arg.name: arg for arg in self.session.get_inputs()}
        order = list(inputs)
        image_input = image_input or next((n for n in order if n != mask_input), None)
        mask_input = mask_input or next((n for n in order if n != image_input), None)
        output = output or self.session.get_outputs()[0].name
        for role, name in (("image_input", image_input), ("mask_input", mask_input)):
            if name not in inputs:
                raise M2FError(
                    f"{where}: {role} {name!r} is not an input of {path.name} "
                    f"(inputs: {', '.join(order)})"
                )
        outputs = [arg.name for arg in self.session.get_outputs()]
        if output not in outputs:
            raise M2FError(
                f"{where}: output {output!r} is not an output of {path.name} "
                f"(outputs: {', '.join(outputs)})"
            )
        for name in (image_input, mask_input):
            if inputs[name].type not in _FLOAT_TYPES:
                raise M2FError(
                    f"{where}: input {name!r} is {inputs[name].type}; "
                    "only float inputs are supported"
                )

        shape = list(inputs[image_input].shape)
        channel_axis = 1 if layout == "nchw" else 3
        if len(shape) != 4 or (isinstance(shape[channel_axis], int) and shape[channel_axis] != 3):
            raise M2FError(
                f"{where}: image input {image_input!r} has shape {shape}, "
                f"not 3 channels in {layout} layout"
            )
        spatial = shape[2:4] if layout == "nchw" else shape[1:3]
        resize_to = tuple(spatial) if all(isinstance(s, int) for s in spatial) else None
        fixed_batch = shape[0] if isinstance(shape[0], int) else None
        if size is not None:
            resize_to = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        if batch_size is not None and batch_size < 1:
            raise M2FError(f"{where}: batch_size must be at least 1, got {batch_size}")
        if batch_size is not None and fixed_batch not in (None, batch_size):
            raise M2FError(
                f"{where}: batch_size {batch_size} but {path.name} takes batches of {fixed_batch}"
            )

        self.image_input, self.mask_input, self.output = image_input, mask_input, output
        self.layout = layout
        self.image_range = (float(image_range[0]), float(image_range[1]))
        self.mask_value = mask_value
        self.size = resize_to
        self.batch_size = batch_size or fixed_batch or _DEFAULT_BATCH
        self._pad_to_batch = fixed_batch is not None
        self._image_dtype = _FLOAT_TYPES[inputs[image_input].type]
        self._mask_dtype = _FLOAT_TYPES[inputs[mask_input].type]

    def inpaint(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        return run_at_size(images, holes, self.size, self.batch_size, self._run)

    def _run(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        count = len(images)
        if self._pad_to_batch and count < self.batch_size:
            # A model exported with a fixed batch takes no other: repeat the last image.
            images = np.concatenate([images, np.repeat(images[-1:], self.batch_size - count, 0)])
            holes = np.concatenate([holes, np.repeat(holes[-1:], self.batch_size - count, 0)])
        low, high = self.image_range
        x = images.astype(np.float32) * ((high - low) / 255.0) + low
        mask = (holes if self.mask_value == 1 else ~holes)[..., None].astype(np.float32)
        if self.layout == "nchw":
            x, mask = x.transpose(0, 3, 1, 2), mask.transpose(0, 3, 1, 2)
        feeds = {
            self.image_input: np.ascontiguousarray(x, dtype=self._image_dtype),
            self.mask_input: np.ascontiguousarray(mask, dtype=self._mask_dtype),
        }
        try:
            (y,) = self.session.run([self.output], feeds)
        except Exception as exc:  # ORT's errors share no base class but Exception
            raise M2FError(f"inpainter {self.name!r}: model run failed: {exc}") from exc
        y = np.asarray(y, dtype=np.float32)
        if self.layout == "nchw" and y.ndim == 4:
            y = y.transpose(0, 2, 3, 1)
        if y.shape != images.shape:
            raise M2FError(
                f"inpainter {self.name!r}: output {self.output!r} has shape "
                f"{y.shape} in {self.layout}, expected {images.shape} as NHWC"
            )
        y = (y - low) * (255.0 / (high - low))
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)[:count]
