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
from m2f_bench.inpainters._nets import load_network, read_generator
from m2f_bench.inpainters.cards import resolve_weights

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

    out = Path(out)
    if out.is_dir():
        raise M2FError(f"{out} is a folder: give the .onnx file to write")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise M2FError(f"cannot create {out.parent}: {exc.strerror or exc}") from None
    if is_blind(model):
        return export_blind_onnx(model, out, size=size, opset=opset)
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


def is_blind(model: str) -> bool:
    """Whether ``model`` names the blind model (by name or by a model folder's card)."""
    if model == "unet-gan-blind":
        return True
    card = Path(model) / "card.yaml"
    if card.is_file():
        from m2f_bench.inpainters.cards import read_card

        return read_card(Path(model)).get("inpainter") == "unet-gan-blind"
    return False


class BlindUnmasker(torch.nn.Module):
    """Segmenter and generator as one graph: a masked crop in, the restored crop out.

    Outputs: ``output`` (N×3×H×W in [-1, 1], composited into the hole), ``hole`` (N×1×H×W,
    the binary hole that was filled) and ``hole_probability`` (the segmenter's sigmoid),
    with the same threshold, minimum coverage and dilation as the PyTorch inpainter.
    """

    def __init__(self, segmenter, generator, threshold: float, dilate: int, min_coverage: float):
        super().__init__()
        self.segmenter, self.generator = segmenter, generator
        self.threshold, self.dilate, self.min_coverage = threshold, dilate, min_coverage

    def forward(self, image: torch.Tensor):
        from torch.nn import functional as F

        probability = torch.sigmoid(self.segmenter(image))
        hole = (probability > self.threshold).float()
        found = (hole.mean(dim=(1, 2, 3), keepdim=True) >= self.min_coverage).float()
        hole = hole * found
        if self.dilate:
            k = 2 * self.dilate + 1
            hole = F.max_pool2d(hole, k, stride=1, padding=self.dilate)
        output = self.generator(image, hole)
        return hole * output + (1 - hole) * image, hole, probability


def _check_faces(size: int) -> np.ndarray:
    """scikit-image's astronaut, aligned with dlib's HOG detector (no model file needed),
    with a synthetic mask and bare: uint8 2×size×size×3."""
    from skimage import data

    from m2f_bench.faces.pipeline import AlignerConfig
    from m2f_bench.masks import apply_mask

    face = AlignerConfig(size=size, scrfd_path=None, use_hog=True).build().align(data.astronaut())
    masked = apply_mask(face.crop, face.landmarks, "surgical_blue", image_id="astronaut")
    return np.stack([masked.image, face.crop])


def export_blind_onnx(model: str, out: str | Path, *, size: int = 128, opset: int = 17) -> float:
    """Export ``unet-gan-blind`` (segmenter + generator) as one ONNX graph, checked against
    PyTorch: the hole probability within :data:`TOLERANCE`, the binary hole equal, and the
    output within :data:`TOLERANCE` where the holes agree.

    Returns:
        The largest absolute difference of the outputs.
    """
    import onnxruntime as ort

    from m2f_bench._io import atomic_write_bytes
    from m2f_bench.inpainters.unet_gan_blind import BlindUNetGANInpainter

    blind = BlindUNetGANInpainter(None if model == "unet-gan-blind" else model)
    seg = blind.segmenter
    module = BlindUnmasker(
        seg.network.float().eval(),
        blind.network.float().eval(),
        seg.threshold,
        seg.dilate,
        seg.min_coverage,
    ).eval()
    multiple = max(seg.network.multiple, blind.network.multiple)
    if size % multiple:
        raise M2FError(f"--size must be a multiple of {multiple}, got {size}")
    # A real face wearing a synthetic mask, and the bare face: both paths of the graph.
    image = torch.from_numpy(_check_faces(size)).permute(0, 3, 1, 2).float() / 127.5 - 1
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module,
                (image,),
                str(tmp),
                input_names=["image"],
                output_names=["output", "hole", "hole_probability"],
                dynamic_axes={
                    k: {0: "batch"} for k in ("image", "output", "hole", "hole_probability")
                },
                opset_version=opset,
                dynamo=False,
            )
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got, got_hole, got_p = session.run(None, {"image": image.numpy()})
        with torch.inference_mode():
            expected, hole, p = (t.numpy() for t in module(image))
        p_error = float(np.abs(got_p - p).max())
        if not hole[0].any():
            raise M2FError("the check face's mask was not found; cannot check the export")
        same = got_hole == hole
        error = float(np.abs(got - expected)[np.broadcast_to(same, got.shape)].max())
        if not (p_error <= TOLERANCE and error <= TOLERANCE and same.mean() > 0.999):
            raise M2FError(
                f"ONNX differs from PyTorch: hole probability by {p_error:.2e}, output by "
                f"{error:.2e}, holes agree on {100 * same.mean():.3f} % of pixels"
            )
        atomic_write_bytes(out, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
    return error
