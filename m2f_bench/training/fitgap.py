"""How much of a learned inpainter's fit carries over to people it never saw.

The same inpainter restores masked crops of its own training faces and of the held-out
validation identities (both from a ``prepare`` folder, masks drawn as training's validation
draws them: seeded, the same every time, no augmentation), and the pixel metrics of
``evaluate`` score both. A model that scores far higher on its training faces than on the
held-out people is limited by how many faces it learned from, not by its capacity or by how
long it trained.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from m2f_bench.errors import M2FError
from m2f_bench.inpainters import INPAINTERS
from m2f_bench.inpainters.base import Inpainter, build_inpainter
from m2f_bench.metrics.pixel import psnr, psnr_hole, ssim


@dataclass(frozen=True)
class FitRow:
    """Mean metrics of one model on one split's masked crops."""

    model: str
    split: str
    images: int
    psnr: float
    psnr_hole: float
    ssim: float


def learned_inpainter(model: str) -> Inpainter:
    """The inpainter ``model`` names: a registered name (with its defaults: any inpainter,
    e.g. a classical one for comparison), or a weights file / model / run folder.

    Raises:
        M2FError: Nothing loadable there, or a generator of no registered inpainter.
    """
    if model in INPAINTERS:
        return build_inpainter({"type": model})
    from m2f_bench.inpainters._nets import read_generator
    from m2f_bench.inpainters.cards import read_card, resolve_weights

    path = Path(model).expanduser()
    if not path.exists():
        raise M2FError(f"{model}: no such inpainter, weights file or folder")
    if (path / "card.yaml").is_file():
        name = read_card(path).get("inpainter")
    else:
        name = read_generator(resolve_weights(path, "unet-gan"))[0].get("inpainter")
    if name not in INPAINTERS:
        raise M2FError(f"{model}: not the weights of a registered inpainter (found {name!r})")
    return build_inpainter({"type": name, "weights": str(path)})


def fit_gap(
    models: Sequence[str],
    data: str | Path,
    *,
    limit: int = 512,
    seed: int = 0,
    train_split: str = "train",
    val_split: str = "val",
) -> Iterator[FitRow]:
    """Score each model on ``limit`` masked crops of each split, training split first.

    Args:
        models: Registered inpainter names, weights files, model folders or run folders.
        data: A ``prepare`` folder holding both splits.
        limit: Crops per split (the first ones, in manifest order, as validation takes them).
        seed: The mask draws' seed (the training configs' ``seed:``; the same draws as
            their validation).
        train_split: The manifest's split the models trained on.
        val_split: Its held-out identities.

    Raises:
        M2FError: A model or split cannot be loaded.
    """
    from m2f_bench.training.config import DataSpec
    from m2f_bench.training.data import PreparedSplit, ValidationSet

    if train_split == val_split:
        raise M2FError(f"the training and held-out splits are both {train_split!r}")
    spec = DataSpec(root=Path(data), val_limit=limit)
    # Everything loads before the first row, so a bad argument stops before any output.
    splits = {
        name: ValidationSet.build(PreparedSplit(data, name), spec, seed)
        for name in (train_split, val_split)
    }
    inpainters = [learned_inpainter(model) for model in models]
    for model, inpainter in zip(models, inpainters, strict=True):
        for name, crops in splits.items():
            restored = inpainter(crops.masked, crops.holes)
            values = {
                "psnr": psnr(restored, crops.targets),
                "psnr_hole": psnr_hole(restored, crops.targets, crops.holes),
                "ssim": ssim(restored, crops.targets),
            }
            # An exactly restored crop has PSNR +inf; means leave it out, as reports do.
            means = {k: float(np.mean(v[np.isfinite(v)])) for k, v in values.items()}
            yield FitRow(model, name, len(restored), **means)
