"""Any importable :class:`Recognizer` subclass, named in the protocol."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from m2f_bench.errors import M2FError
from m2f_bench.recognition.base import (
    RECOGNIZERS,
    Recognizer,
    construct_recognizer,
    l2_normalise,
)
from m2f_bench.registry import check_arguments, load_target
from m2f_bench.settings import Settings

if TYPE_CHECKING:
    from m2f_bench.faces.align import CropGeometry


def recognizer_class(target: Any) -> type[Recognizer]:
    """The class named by ``"package.module:Class"``.

    Raises:
        M2FError: The target cannot be imported, or is not a Recognizer subclass.
    """
    if not isinstance(target, str):
        raise M2FError(f"python recognizer target must be a 'module:Class' string, got {target!r}")
    cls = load_target(target)
    if not (isinstance(cls, type) and issubclass(cls, Recognizer)):
        raise M2FError(
            f"python recognizer target {target!r} is a {type(cls).__name__}, "
            "not a subclass of m2f_bench.recognition.Recognizer"
        )
    return cls


def _target_args(args: Any) -> Mapping[str, Any]:
    if args is None:
        return {}
    if not isinstance(args, Mapping):
        raise M2FError(f"python recognizer args must map argument names to values, got {args!r}")
    return args


@RECOGNIZERS.register("python")
class PythonRecognizer(Recognizer):
    """A :class:`Recognizer` subclass named ``"module:Class"``, built with ``args``.

    Its constructor gets ``settings`` when it takes that parameter. The embeddings it
    returns are checked for shape and L2-normalised; its :meth:`config` is recorded
    under the target's name.

    Args:
        target: ``"package.module:Class"``, importable from the current environment.
        args: Keyword arguments for the class's constructor.
        settings: Where the model home is, for classes that look up weights.
    """

    name = "python"

    def __init__(
        self,
        target: str,
        args: Mapping[str, Any] | None = None,
        *,
        settings: Settings | None = None,
    ) -> None:
        self.target = target
        self.label = f"python recognizer {target!r}"
        self.recognizer = construct_recognizer(
            self.label, recognizer_class(target), _target_args(args), settings or Settings.resolve()
        )
        self.embedding_dim = int(self.recognizer.embedding_dim)

    @classmethod
    def check_spec(cls, args: Mapping[str, Any]) -> None:
        target_cls = recognizer_class(args.get("target"))
        target_args = _target_args(args.get("args"))
        check_arguments(
            f"python recognizer {args['target']!r}", target_cls, target_args, supplied=("settings",)
        )
        target_cls.check_spec(target_args)

    def config(self) -> dict[str, Any]:
        return {"target": self.target, "config": self.recognizer.config()}

    def embed(
        self,
        crops: np.ndarray,
        geometry: CropGeometry,
        landmarks: np.ndarray | None = None,
    ) -> np.ndarray:
        out = self.recognizer.embed(crops, geometry, landmarks)
        expected = (len(crops), self.embedding_dim)
        if not isinstance(out, np.ndarray) or out.shape != expected:
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise M2FError(f"{self.label} returned {got}; expected embeddings {expected}")
        return l2_normalise(out)
