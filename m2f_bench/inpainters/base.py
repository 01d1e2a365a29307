"""The inpainter contract, its registry and the factory that builds one from a spec.

An inpainter fills the holes of a batch of masked face crops. Subclasses implement
:meth:`Inpainter.inpaint`; callers call the instance, which validates the batch, checks
what the subclass returned and composites it, so that every pixel outside the hole is the
input's, bit for bit, whatever the back-end does there.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from m2f_bench.errors import M2FError
from m2f_bench.registry import Registry, check_arguments

#: Inpainters by name; third parties add theirs through the ``m2f_bench.inpainters`` group.
INPAINTERS: Registry[Callable[..., Any]] = Registry("inpainter", "m2f_bench.inpainters")


def _describe(array: Any) -> str:
    if isinstance(array, np.ndarray):
        return f"{array.dtype} {tuple(array.shape)}"
    return type(array).__name__


class Inpainter(ABC):
    """Fills the holes of a batch of masked face crops.

    The images an inpainter receives are the masked crops: the synthetic mask is drawn
    inside the hole, so an inpainter must not rely on what the hole pixels contain.
    """

    #: Display name in reports and messages; :func:`build_inpainter` sets it from the spec.
    name: str = "inpainter"

    @abstractmethod
    def inpaint(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        """Fill the holes.

        Args:
            images: Masked crops, uint8 N×H×W×3 RGB; the caller's copy is not touched.
            holes: Bool N×H×W, true where a pixel must be filled.

        Returns:
            Uint8 N×H×W×3; only the pixels inside the hole are used.
        """

    def fingerprint(self) -> dict[str, Any]:
        """What the outputs depend on beyond the protocol's arguments: the content of the
        model files (a re-trained model at the same path must not reuse old outputs) and
        any default that is not spelt out in the spec. Part of the evaluation's cache keys
        and recorded in ``results.json``. Default: nothing."""
        return {}

    @classmethod
    def check_spec(cls, args: Mapping[str, Any]) -> None:
        """Check the values of a protocol entry's arguments (names are checked against the
        constructor already), without loading anything: ``validate`` calls it, so a bad
        value is found before a run rather than when the inpainter is built. Default:
        nothing to check.

        Raises:
            M2FError: A value the constructor would refuse.
        """
        return None

    @classmethod
    def check_files(cls, args: dict[str, Any], settings: Any) -> None:
        """Check that the files this spec needs exist, before any stage runs.

        Called by ``evaluate`` (and ``validate``) with the protocol's arguments; it must be
        cheap: look for files, do not load them.

        Raises:
            ModelNotFoundError: A weights or model file is missing.
        """
        return None

    def __call__(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        """Inpaint a batch and composite the result onto the input.

        Args:
            images: Masked crops, uint8 N×H×W×3 RGB.
            holes: Bool N×H×W, true where a pixel must be filled.

        Returns:
            Uint8 N×H×W×3: the inpainted pixels inside the hole, the input's elsewhere.

        Raises:
            M2FError: The batch is malformed, or the inpainter returned the wrong shape or
                dtype.
        """
        if not (
            isinstance(images, np.ndarray)
            and images.dtype == np.uint8
            and images.ndim == 4
            and images.shape[-1] == 3
        ):
            raise M2FError(
                f"inpainter {self.name!r}: images must be uint8 N×H×W×3, got {_describe(images)}"
            )
        if not (
            isinstance(holes, np.ndarray)
            and holes.dtype == np.bool_
            and holes.shape == images.shape[:3]
        ):
            raise M2FError(
                f"inpainter {self.name!r}: holes must be bool {images.shape[:3]} "
                f"to match the images, got {_describe(holes)}"
            )
        if len(images) == 0:
            return images.copy()
        # Copies, so a back-end that writes into its inputs cannot change what is
        # composited outside the hole.
        result = self.inpaint(images.copy(), holes.copy())
        if not (
            isinstance(result, np.ndarray)
            and result.dtype == np.uint8
            and result.shape == images.shape
        ):
            raise M2FError(
                f"inpainter {self.name!r} returned {_describe(result)}; "
                f"expected uint8 {images.shape}"
            )
        return np.where(holes[..., None], result, images)


class PluginInpainter(Inpainter):
    """Adapts an object with an ``inpaint(images, holes)`` method that is not an Inpainter.

    Args:
        plugin: The object doing the work.
        label: What to call it in messages.
    """

    def __init__(self, plugin: Any, label: str) -> None:
        if not callable(getattr(plugin, "inpaint", None)):
            raise M2FError(f"{label} has no inpaint(images, holes) method")
        self.plugin = plugin
        self.name = label

    def inpaint(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        return self.plugin.inpaint(images, holes)


def construct(label: str, factory: Callable[..., Any], arguments: Mapping[str, Any]) -> Any:
    """Call ``factory(**arguments)`` after checking the arguments against its signature.

    Raises:
        M2FError: An argument is unknown, or a required one is missing.
    """
    check_arguments(label, factory, arguments)
    return factory(**arguments)


def build_inpainter(spec: Mapping[str, Any]) -> Inpainter:
    """Build an inpainter from ``{"type": name, "name": display name, **arguments}``.

    Args:
        spec: As in a protocol file: ``type`` names a registered inpainter, the optional
            ``name`` is its display name (default: the type), every other key is an
            argument of its constructor.

    Raises:
        M2FError: The type is unknown (the message lists close matches), an argument is
            unknown or missing, or the entry does not make an inpainter.
    """
    arguments = dict(spec)
    type_name = arguments.pop("type", None)
    if not isinstance(type_name, str):
        raise M2FError(f"an inpainter needs 'type:' naming one of {', '.join(INPAINTERS)}")
    display = str(arguments.pop("name", type_name))
    label = f"inpainter {type_name!r}"
    made = construct(label, INPAINTERS.get(type_name), arguments)
    inpainter = made if isinstance(made, Inpainter) else PluginInpainter(made, label)
    inpainter.name = display
    return inpainter


def list_inpainters() -> list[tuple[str, str]]:
    """Every registered inpainter with the first line of its docstring, sorted by name.

    An entry that cannot be imported is listed with the reason instead of a summary.
    """
    listed = []
    for name in INPAINTERS.names():
        try:
            # ``__doc__`` of the entry itself: a class does not inherit its parent's.
            summary = inspect.cleandoc(INPAINTERS.get(name).__doc__ or "").partition("\n")[0]
        except M2FError as exc:
            summary = f"(cannot load: {exc})"
        listed.append((name, summary))
    return listed


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Any) -> str:
    """sha256 of a file's content, remembered per (path, size, mtime) within a process."""
    import os

    from m2f_bench._download import sha256_file

    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def parse_size(
    size: Any, where: str, *, multiple: int = 1, minimum: int = 1
) -> tuple[int, int] | None:
    """A ``size:`` argument (one side or ``[height, width]``) as (height, width), or None.

    Raises:
        M2FError: Not one or two integers ≥ ``minimum`` that are multiples of ``multiple``.
    """
    if size is None:
        return None
    sides = [size, size] if isinstance(size, int) else size
    if (
        not isinstance(sides, list | tuple)
        or len(sides) != 2
        or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= minimum and v % multiple == 0
            for v in sides
        )
    ):
        rule = f"multiples of {multiple}" if multiple > 1 else f"≥ {minimum}"
        raise M2FError(f"{where}: size must be one side or [height, width], {rule}; got {size!r}")
    return (sides[0], sides[1])


def parse_batch_size(batch_size: Any, where: str) -> int | None:
    """A ``batch_size:`` argument, or None.

    Raises:
        M2FError: Not an integer ≥ 1.
    """
    if batch_size is None:
        return None
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise M2FError(f"{where}: batch_size must be an integer ≥ 1, got {batch_size!r}")
    return batch_size


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An image (or float mask) resized to ``size`` = (height, width): area averaging when
    shrinking, bilinear when enlarging."""
    import cv2

    shrink = size[0] * size[1] < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(image, (size[1], size[0]), interpolation=interpolation)


def resize_batch(
    images: np.ndarray, holes: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Crops and holes at a model's working size. A model pixel that touches the hole is a
    hole pixel, so no part of the original hole is left to the model as known."""
    if images.shape[1:3] == tuple(size):
        return images, holes
    return (
        np.stack([resize_image(image, size) for image in images]),
        np.stack([resize_image(hole.astype(np.float32), size) > 0 for hole in holes]),
    )


def run_at_size(
    images: np.ndarray,
    holes: np.ndarray,
    size: tuple[int, int] | None,
    batch_size: int,
    run: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Resize to ``size`` (None: as they are), ``run`` batch by batch, resize back."""
    height, width = images.shape[1:3]
    if size is not None:
        images, holes = resize_batch(images, holes, size)
    out = np.concatenate(
        [
            run(images[i : i + batch_size], holes[i : i + batch_size])
            for i in range(0, len(images), batch_size)
        ]
    )
    if out.shape[1:3] != (height, width):
        out = np.stack([resize_image(image, (height, width)) for image in out])
    return out
