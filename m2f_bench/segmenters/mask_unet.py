"""``mask-unet``: the trained mask segmenter (weights from ``m2f-bench train``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from m2f_bench.errors import M2FError
from m2f_bench.inpainters.base import parse_batch_size, parse_size, resize_image
from m2f_bench.segmenters import Segmenter


class MaskUNetSegmenter(Segmenter):
    """Small U-Net that finds face masks (trained on synthetic masks with real-photo
    augmentation; weights: file, model folder or training run).

    Args:
        weights: A ``.safetensors`` segmenter file, a model folder with ``card.yaml``, a
            training run folder or a checkpoint folder; default: the model whose card says
            ``segmenter: mask-unet``.
        device: ``cpu`` or ``cuda``.
        batch_size: Crops per forward pass.
        size: Side the crops are resized to (and the probabilities back from); default:
            the size in the weights' card, else as given.
        threshold, dilate, min_coverage: See :class:`~m2f_bench.segmenters.Segmenter`.
    """

    model_name = "mask-unet"

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        size: int | list[int] | None = 128,
        threshold: float = 0.5,
        dilate: int = 0,
        min_coverage: float = 0.03,
    ) -> None:
        import torch

        from m2f_bench.inpainters.cards import resolve_weights
        from m2f_bench.segmenters._net import load_segmenter_network

        super().__init__(threshold, dilate, min_coverage)
        where = f"segmenter {self.model_name!r}"
        if device not in ("cpu", "cuda"):
            raise M2FError(f"{where}: device must be cpu or cuda, got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise M2FError(f"{where}: CUDA is not available")
        self.batch_size = parse_batch_size(batch_size, where)
        self.size = parse_size(size, where, minimum=16)
        self.device = torch.device(device)
        path = resolve_weights(weights, self.model_name, "segmenter", "segmenter")
        self.weights_path = path
        self.network = load_segmenter_network(path, self.model_name)
        self.network.to(self.device, memory_format=torch.channels_last)

    @classmethod
    def check_files(cls, args: dict[str, Any], settings: Any = None) -> None:
        from m2f_bench.errors import ModelNotFoundError
        from m2f_bench.inpainters.cards import resolve_weights

        path = resolve_weights(args.get("weights"), cls.model_name, "segmenter", "segmenter")
        if not path.is_file():
            raise ModelNotFoundError(f"segmenter {cls.model_name!r}: weight file not found: {path}")

    def fingerprint(self) -> dict[str, Any]:
        from m2f_bench.inpainters.base import file_digest

        return super().fingerprint() | {
            "size": list(self.size) if self.size else None,
            "weights_sha256": file_digest(self.weights_path),
        }

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        import torch
        from torch.nn import functional as F

        height, width = images.shape[1:3]
        if self.size is not None and (height, width) != self.size:
            images = np.stack([resize_image(image, self.size) for image in images])
        h, w = images.shape[1:3]
        m = self.network.multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.batch_size):
                x = torch.from_numpy(images[i : i + self.batch_size]).permute(0, 3, 1, 2)
                x = x.float().div_(127.5).sub_(1.0).contiguous(memory_format=torch.channels_last)
                if pad_h or pad_w:
                    x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
                logits = self.network(x.to(self.device))[:, 0, :h, :w]
                out.append(torch.sigmoid(logits.float()).cpu().numpy())
        probs = np.concatenate(out)
        if probs.shape[1:] != (height, width):
            probs = np.stack([resize_image(p, (height, width)) for p in probs])
        return probs
