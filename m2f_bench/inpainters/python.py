"""Any importable class with an ``inpaint(images, holes)`` method, named in the protocol."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from m2f_bench.inpainters.base import INPAINTERS, Inpainter, PluginInpainter, construct
from m2f_bench.registry import load_target


@INPAINTERS.register("python")
class PythonInpainter(Inpainter):
    """A class named ``"module:Class"`` whose ``inpaint(images, holes)`` fills the holes.

    The class need not subclass :class:`Inpainter`; its output is validated and
    composited all the same.

    Args:
        target: ``"package.module:Class"``, importable from the current environment.
        args: Keyword arguments for the class's constructor.
    """

    name = "python"

    def __init__(self, target: str, args: Mapping[str, Any] | None = None) -> None:
        label = f"python inpainter {target!r}"
        self._plugin = PluginInpainter(construct(label, load_target(target), args or {}), label)

    def inpaint(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        return self._plugin.inpaint(images, holes)
