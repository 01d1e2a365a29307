"""Export a trained generator to ONNX, checked against PyTorch before it is kept.

The ONNX model takes ``image`` (N×3×H×W RGB in [-1, 1]) and ``mask`` (N×1×H×W, 1 = hole)
and returns ``output`` (N×3×H×W in [-1, 1]), with a free batch size: the conventions the
``onnx`` inpainter reads as ``layout: nchw``, ``image_range: [-1, 1]``, ``mask_value: 1``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from m2f_bench.errors import M2FError
from m2f_bench.inpainters import INPAINTERS
from m2f_bench.inpainters._nets import load_network, read_generator, resolve_weights

#: Largest |ONNX − PyTorch| accepted on the check batch.
TOLERANCE = 1e-4


def export_onnx(model: str, out: str | Path, *, size: int = 128, opset: int = 17) -> float:
    """Write the generator meant by ``model`` as ONNX and check it with ONNX Runtime.

    Args:
        model: An inpainter name (``unet-gan``: its model card), a ``.safetensors`` file,
            a model folder or a training run folder.
        out: The ``.onnx`` file to write.
        size: Side of the crops the model is traced and checked at.
        opset: ONNX opset.

    Returns:
        The largest absolute difference between ONNX Runtime and PyTorch on the check batch.

    Raises:
        M2FError: The outputs differ by more than :data:`TOLERANCE` (nothing is kept).
    """
    import onnxruntime as ort

    from m2f_bench._io import atomic_write_bytes

    weights = resolve_weights(None if model in INPAINTERS else model, model)
    name = read_generator(weights)[0]["inpainter"]
    network = load_network(weights, name, INPAINTERS.get(name).skips).float().eval()
    if size % network.multiple:
        raise M2FError(f"--size must be a multiple of {network.multiple}, got {size}")
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.uniform(-1, 1, (2, 3, size, size)).astype(np.float32))
    mask = torch.from_numpy((rng.random((2, 1, size, size)) < 0.3).astype(np.float32))
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    trace_to_onnx(network, image, mask, tmp, opset=opset)
    try:
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        (got,) = session.run(["output"], {"image": image.numpy(), "mask": mask.numpy()})
        with torch.inference_mode():
            expected = network(image, mask).numpy()
        error = float(np.abs(got - expected).max())
        if not error <= TOLERANCE:
            raise M2FError(f"ONNX output differs from PyTorch by {error:.2e} (> {TOLERANCE})")
        atomic_write_bytes(out, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
    return error


def trace_to_onnx(
    network: torch.nn.Module, image: torch.Tensor, mask: torch.Tensor, path: Path, opset: int = 17
) -> None:
    """Trace a generator into an ONNX file with a free batch size (no check)."""
    with warnings.catch_warnings():
        # The TorchScript exporter needs no onnxscript; its deprecation notice is noise here.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            network,
            (image, mask),
            str(path),
            input_names=["image", "mask"],
            output_names=["output"],
            dynamic_axes={k: {0: "batch"} for k in ("image", "mask", "output")},
            opset_version=opset,
            dynamo=False,
        )
