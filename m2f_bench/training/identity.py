"""Identity loss: cosine distance between ArcFace embeddings of the output and the target.

The recognizer is an ArcFace-family ONNX model (by default the shared MobileFaceNet) run
as a frozen PyTorch module (:mod:`m2f_bench.training.onnx_torch`), so gradients reach the
generator. Each crop is cut to the recognizer's 112×112 chip by the same fixed warp the
benchmark uses (:meth:`CropGeometry.chip_matrix`, bicubic) and normalised as
:class:`~m2f_bench.recognition.arcface_onnx.ArcFaceONNX` normalises it; the loss uses
the chip alone (the benchmark's embedding adds the mirror image's).

A model trained with this term is judged with a second, independent recognizer too
(dlib-resnet in ``protocols/lfw-masked.yaml``): a gain seen only by the network the
generator was trained against is not a gain in identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from m2f_bench.errors import M2FError
from m2f_bench.faces.align import CHIP_SIZE, CropGeometry
from m2f_bench.training.onnx_torch import OnnxModule


def chip_grid(crop_size: int) -> torch.Tensor:
    """``grid_sample`` grid (1×112×112×2) taking a crop to its ArcFace chip.

    For chip pixel ``q`` the crop point is ``M⁻¹ q`` (``M`` the crop→chip matrix, pixel
    centres at integers, OpenCV's convention), normalised for ``align_corners=False``.
    """
    matrix = np.vstack([CropGeometry(crop_size).chip_matrix, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(matrix)[:2]
    q = np.arange(CHIP_SIZE, dtype=np.float64)
    qx, qy = np.meshgrid(q, q)
    points = np.stack([qx, qy, np.ones_like(qx)], axis=-1) @ inverse.T  # 112×112×2 (x, y)
    grid = (2 * points + 1) / crop_size - 1
    return torch.from_numpy(grid[None].astype(np.float32))


class IdentityLoss(torch.nn.Module):
    """``1 − cos(e(output), e(target))`` averaged over the batch.

    Args:
        model: Path of the ArcFace ONNX model.
        mean: Subtracted from 0–255 pixel values before the network (one value, or one
            per channel in the model's channel order).
        std: Divides the centred values (likewise).
        color: ``rgb`` or ``bgr``: the channel order the model takes (crops are RGB).
    """

    def __init__(
        self,
        model: str | Path,
        mean: float | Sequence[float],
        std: float | Sequence[float],
        color: str = "rgb",
    ) -> None:
        super().__init__()
        self.network = OnnxModule(model)
        self._grids: dict[tuple[int, torch.device], torch.Tensor] = {}
        for name, value in (("mean", mean), ("std", std)):
            tensor = torch.as_tensor(np.atleast_1d(value), dtype=torch.float32)
            self.register_buffer(name, tensor.reshape(1, -1, 1, 1), persistent=False)
        self.bgr = color == "bgr"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings of crops in [-1, 1] (N×3×H×W)."""
        size = images.shape[-1]
        if images.shape[-2] != size:
            raise ValueError(f"identity loss: expected square crops, got {tuple(images.shape)}")
        key = (size, images.device)
        if key not in self._grids:
            self._grids[key] = chip_grid(size).to(images.device)
        grid = self._grids[key].to(images.dtype).expand(images.shape[0], -1, -1, -1)
        # Clamped as the benchmark's uint8 chip is: bicubic overshoots at sharp edges.
        chips = F.grid_sample(images, grid, mode="bicubic", align_corners=False).clamp(-1, 1)
        pixels = (chips + 1) * 127.5
        if self.bgr:
            pixels = pixels.flip(1)
        return F.normalize(self.network((pixels - self.mean) / self.std).flatten(1), dim=1)

    def similarity(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cosine similarity per image; the target side carries no gradient."""
        with torch.no_grad():
            reference = self.embed(target)
        return (self.embed(output) * reference).sum(dim=1)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1 - self.similarity(output, target).mean()


def build_identity_loss(model: str) -> IdentityLoss:
    """The identity loss for ``model`` (a file in the model home or a path).

    Normalisation follows the recognizer: the preset for a known model, else insightface's
    rule read from the graph (as ``arcface-onnx`` does).
    """
    from m2f_bench.recognition.arcface_onnx import PRESETS, graph_input_norm, resolve_model
    from m2f_bench.settings import Settings

    path = resolve_model(model, Settings.resolve())
    try:
        norm = PRESETS.get(path.name) or graph_input_norm(path)
    except Exception as exc:  # an unreadable graph is one line
        raise M2FError(f"cannot read ONNX model {path}: {type(exc).__name__}: {exc}") from None
    return IdentityLoss(path, norm.mean, norm.std, norm.color)
