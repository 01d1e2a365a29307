"""The recognizer contract, its registry, and the identity similarity of embeddings."""

from __future__ import annotations

import hashlib
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from m2f_bench.errors import M2FError
from m2f_bench.registry import Registry, check_arguments

if TYPE_CHECKING:
    from m2f_bench.faces.align import CropGeometry
    from m2f_bench.settings import Settings


class Recognizer(ABC):
    """Maps aligned face crops to identity embeddings.

    Attributes:
        name: The registry name.
        embedding_dim: Length of an embedding.
    """

    name: str
    embedding_dim: int

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Everything that changes the embeddings (JSON-serialisable), for caches and reports."""

    @abstractmethod
    def embed(
        self,
        crops: np.ndarray,
        geometry: CropGeometry,
        landmarks: np.ndarray | None = None,
    ) -> np.ndarray:
        """Embeddings of aligned crops.

        Args:
            crops: RGB uint8 crops (N×S×S×3) aligned with ``geometry``.
            geometry: The crop the faces were aligned into.
            landmarks: 68 landmarks per crop in crop pixels (N×68×2), for recognizers
                that need them.

        Returns:
            float32 N×D, each row of unit L2 norm.
        """

    @classmethod
    def check_files(cls, args: Mapping[str, Any], settings: Settings) -> None:
        """Check that the model files this spec needs exist (cheap: nothing is loaded).

        Raises:
            ModelNotFoundError: A model file is missing.
        """
        return None

    @classmethod
    def check_spec(cls, args: Mapping[str, Any]) -> None:
        """Check a protocol's arguments beyond the signature, without building anything.

        ``m2f-bench validate`` calls this after matching ``args`` against the constructor;
        override it to reject bad values early. It must not open model files.

        Raises:
            M2FError: An argument's value is wrong.
        """
        return None  # by default the signature check is all there is

    @property
    def key(self) -> str:
        """Short stable id of :meth:`config`: equal keys mean interchangeable embeddings."""
        blob = json.dumps(self.config(), sort_keys=True, default=str).encode()
        return f"{self.name}-{hashlib.sha256(blob).hexdigest()[:12]}"


#: Recognizers by name; third parties add theirs through the ``m2f_bench.recognizers`` group.
RECOGNIZERS: Registry[type[Recognizer]] = Registry("recognizer", "m2f_bench.recognizers")


def construct_recognizer(
    label: str, factory: Any, args: Mapping[str, Any], settings: Settings
) -> Recognizer:
    """``factory(**args)``, arguments checked first, ``settings`` added where it is taken.

    Raises:
        M2FError: An argument is unknown or missing, or ``factory`` did not make a
            :class:`Recognizer`.
    """
    args = dict(args)
    check_arguments(label, factory, args, supplied=("settings",))
    try:
        takes_settings = "settings" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_settings = False
    if takes_settings:
        args["settings"] = settings
    made = factory(**args)
    if not isinstance(made, Recognizer):
        raise M2FError(
            f"{label} made a {type(made).__name__}, not a Recognizer "
            "(subclass m2f_bench.recognition.Recognizer)"
        )
    return made


def build_recognizer(spec: Mapping[str, Any], settings: Settings) -> Recognizer:
    """Build a recognizer from ``{"type": name, **args}``.

    ``settings`` is passed to recognizers whose constructor takes it (to find weights).

    Raises:
        M2FError: No ``type``, arguments the recognizer does not take, or an entry that
            does not make a :class:`Recognizer`.
        UnknownNameError: No recognizer of that name (the message lists close matches).
    """
    args = dict(spec)
    name = args.pop("type", None)
    if not isinstance(name, str):
        raise M2FError(f"a recognizer spec needs a 'type' naming one of {RECOGNIZERS.names()}")
    return construct_recognizer(f"recognizer {name!r}", RECOGNIZERS.get(name), args, settings)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, np.finfo(np.float32).tiny)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of L2-normalised embeddings (N×D, N×D → N)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"embeddings differ in shape: {a.shape} vs {b.shape}")
    return np.einsum("...d,...d->...", a, b)


@cache
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    from m2f_bench._download import sha256_file

    return sha256_file(path)


def file_digest(path: Path) -> str:
    """sha256 of a weights file, computed once per file version per process."""
    stat = path.stat()
    return _file_digest(path.resolve(), stat.st_size, stat.st_mtime_ns)


def check_batch(crops: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """``crops`` as a contiguous uint8 N×S×S×3 array matching ``geometry``."""
    crops = np.asarray(crops)
    size = geometry.size
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3) or crops.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 crops of shape N×{size}×{size}×3, got {crops.dtype} {crops.shape}"
        )
    return np.ascontiguousarray(crops)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity on Linux)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
