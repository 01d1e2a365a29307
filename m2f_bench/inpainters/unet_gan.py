"""``unet-gan``: the Mask2Face inpainter, a U-Net generator trained with a PatchGAN.

This module imports no torch, so listing the registry stays light; the network
(:mod:`m2f_bench.inpainters._nets`) is imported when an inpainter is built or trained.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from m2f_bench.errors import M2FError
from m2f_bench.inpainters.base import Inpainter, parse_batch_size, parse_size, run_at_size


class UNetGANInpainter(Inpainter):
    """Mask2Face U-Net GAN (trained with ``m2f-bench train``; weights: file, card or run).

    The U-Net's skips carry the known pixels around the hole to the output at full detail,
    which is what lets the filled region match the face around it.

    Args:
        weights: A ``.safetensors`` generator file, a model folder with ``card.yaml``, a
            training run folder (its latest checkpoint) or a checkpoint folder; by default
            the model whose card names this inpainter.
        device: ``cpu`` or ``cuda``.
        batch_size: Crops per forward pass.
        size: Side (or ``[height, width]``) the crops are resized to and back from, e.g.
            the crop size the model was trained at (128 for the shipped models) when a
            protocol works at 256 px: the crop window is the same at every size, so a
            downscaled crop is what the model saw in training. Default: as given.
        flip_tta: Horizontal-flip test-time augmentation: the output is the mean of the
            crop's and the mirrored crop's (mirrored back) outputs, at twice the compute.
    """

    name = "unet-gan"
    #: The registered name, also stored in (and checked against) the weight files.
    model_name: ClassVar[str] = "unet-gan"
    #: Whether the decoder sees the encoder features of its resolution.
    skips: ClassVar[bool] = True

    def __init__(
        self,
        weights: str | None = None,
        device: str = "cpu",
        batch_size: int = 32,
        size: int | list[int] | None = None,
        flip_tta: bool = False,
        *,
        network_name: str | None = None,
    ) -> None:
        import torch

        from m2f_bench.inpainters._nets import load_network
        from m2f_bench.inpainters.cards import resolve_weights

        where = f"inpainter {self.model_name!r}"
        type(self).check_spec(
            {"device": device, "batch_size": batch_size, "size": size, "flip_tta": flip_tta}
        )
        if device == "cuda" and not torch.cuda.is_available():
            raise M2FError(f"{where}: CUDA is not available")
        batch_size = parse_batch_size(batch_size, where)
        self.size = parse_size(size, where, minimum=16)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.flip_tta = flip_tta
        # A blind model loads its generator as the unet-gan network it is.
        self.weights_path = resolve_weights(weights, network_name or self.model_name)
        self.network = load_network(self.weights_path, network_name or self.model_name, self.skips)
        self.network.to(self.device, memory_format=torch.channels_last)

    def fingerprint(self) -> dict[str, Any]:
        from m2f_bench.inpainters.base import file_digest

        facts = {"weights_sha256": file_digest(self.weights_path)}
        return facts | ({"flip_tta": True} if self.flip_tta else {})

    @classmethod
    def check_spec(cls, args: Mapping[str, Any]) -> None:
        """Device, batch size, size, flip_tta and the type of ``weights:`` (see
        :meth:`Inpainter.check_spec`); whether CUDA is there is checked when it runs."""
        from m2f_bench.inpainters.cards import weights_path

        where = f"inpainter {cls.model_name!r}"
        device = args.get("device", "cpu")
        if device not in ("cpu", "cuda"):
            raise M2FError(f"{where}: device must be cpu or cuda, got {device!r}")
        parse_batch_size(args.get("batch_size"), where)
        parse_size(args.get("size"), where, minimum=16)
        flip_tta = args.get("flip_tta", False)
        if not isinstance(flip_tta, bool):
            raise M2FError(f"{where}: flip_tta must be true or false, got {flip_tta!r}")
        if args.get("weights") is not None:
            weights_path(args["weights"], where)

    @classmethod
    def check_files(cls, args: dict[str, Any], settings: Any) -> None:
        from m2f_bench.inpainters.cards import resolve_weights

        path = resolve_weights(args.get("weights"), cls.model_name)
        if not path.is_file():
            from m2f_bench.errors import ModelNotFoundError

            raise ModelNotFoundError(f"inpainter {cls.model_name!r}: weight file not found: {path}")

    @classmethod
    def build_network(cls, **arch_args: Any):
        """A freshly initialised generator of this architecture (for training)."""
        from m2f_bench.inpainters._nets import EncoderDecoderGenerator

        return EncoderDecoderGenerator(cls.skips, **arch_args)

    def inpaint(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        return run_at_size(images, holes, self.size, self.batch_size, self._forward)

    def _forward(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        import torch
        from torch.nn import functional as F

        from m2f_bench.inpainters._nets import to_tensors, to_uint8

        # One batch: run_at_size has cut the crops into batches already.
        height, width = images.shape[1:3]
        m = self.network.multiple
        pad_h, pad_w = (-height) % m, (-width) % m
        with torch.inference_mode():
            image, hole = to_tensors(images, holes)
            if pad_h or pad_w:
                # Padded pixels are known context mirrored from the border.
                image = F.pad(image, (0, pad_w, 0, pad_h), mode="reflect")
                hole = F.pad(hole, (0, pad_w, 0, pad_h))
            image, hole = image.to(self.device), hole.to(self.device)
            out = self.network(image, hole)
            if self.flip_tta:
                mirrored = self.network(image.flip(-1), hole.flip(-1)).flip(-1)
                out = (out + mirrored) / 2
            return to_uint8(out[:, :, :height, :width].cpu())
