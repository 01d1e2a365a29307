"""Where an inpainter's hole comes from: the exact synthetic hole, or a segmenter's guess.

A protocol's inpainter entry may say ``hole: predicted`` (and optionally
``segmenter: NAME`` or ``segmenter: {type: NAME, ...}``): the inpainter then fills the
hole a segmenter finds in the masked crop instead of the exact one, as it would on a real
photo, and the report shows what not knowing the hole costs. A blind inpainter (one that
finds the mask itself, ``unet-gan-blind``) uses its own segmenter unless one is named.
Pixel metrics are still measured on the exact hole; ``hole_iou`` says how well the
predicted hole matched it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from m2f_bench.errors import M2FError

#: Protocol keys of an inpainter entry that belong to the hole, not to the inpainter.
HOLE_KEYS = ("hole", "segmenter")
HOLE_MODES = ("exact", "predicted")


@dataclass(frozen=True)
class HoleSource:
    """``mode`` is ``exact`` or ``predicted``; ``segmenter`` a segmenter spec or None (the
    inpainter's own, for a blind inpainter, else the default segmenter)."""

    mode: str = "exact"
    segmenter: dict[str, Any] | None = None

    @property
    def predicted(self) -> bool:
        return self.mode == "predicted"


def split_hole_args(spec: Mapping[str, Any], factory: Any = None) -> tuple[dict, HoleSource]:
    """Separate ``hole`` / ``segmenter`` from an inpainter spec and check them.

    Args:
        spec: The inpainter entry (``type``, ``name`` and arguments).
        factory: The registered inpainter, to know whether it is blind (it then defaults
            to ``hole: predicted``).

    Raises:
        M2FError: An unknown ``hole`` value, or ``segmenter`` without ``hole: predicted``.
    """
    rest = {k: v for k, v in spec.items() if k not in HOLE_KEYS}
    blind = bool(getattr(factory, "blind", False))
    mode = spec.get("hole", "predicted" if blind else "exact")
    if mode not in HOLE_MODES:
        raise M2FError(f"hole must be one of {', '.join(HOLE_MODES)}, got {mode!r}")
    segmenter = spec.get("segmenter")
    if segmenter is not None and mode != "predicted":
        raise M2FError("segmenter: is only used with hole: predicted")
    if isinstance(segmenter, str):
        segmenter = {"type": segmenter}
    elif segmenter is not None and not (
        isinstance(segmenter, Mapping) and isinstance(segmenter.get("type"), str)
    ):
        raise M2FError(f"segmenter must be a name or a mapping with type:, got {segmenter!r}")
    return rest, HoleSource(mode, dict(segmenter) if segmenter is not None else None)


def check_hole_source(source: HoleSource, factory: Any) -> None:
    """Check the segmenter's name and arguments (nothing is loaded).

    Raises:
        M2FError: Unknown segmenter or argument.
    """
    from m2f_bench.registry import check_arguments
    from m2f_bench.segmenters import DEFAULT_SEGMENTER, SEGMENTERS

    if not source.predicted:
        return
    if source.segmenter is None and getattr(factory, "blind", False):
        return
    spec = dict(source.segmenter or {"type": DEFAULT_SEGMENTER})
    name = spec.pop("type")
    check_arguments(f"segmenter {name!r}", SEGMENTERS.get(name), spec)


def check_hole_files(source: HoleSource, factory: Any, settings: Any) -> None:
    """Check that the segmenter's weights exist (raises ModelNotFoundError)."""
    from m2f_bench.segmenters import DEFAULT_SEGMENTER, SEGMENTERS

    if not source.predicted or (source.segmenter is None and getattr(factory, "blind", False)):
        return
    spec = dict(source.segmenter or {"type": DEFAULT_SEGMENTER})
    check = getattr(SEGMENTERS.get(spec.pop("type")), "check_files", None)
    if check is not None:
        check(spec, settings)


def hole_predictor(source: HoleSource, inpainter: Any, device: str = "cpu"):
    """``(predict, fingerprint)`` for ``hole: predicted`` — ``predict`` maps uint8
    N×H×W×3 crops to bool N×H×W holes, ``fingerprint`` is what those holes depend on
    (the segmenter's settings and weights) — or ``(None, {})`` for the exact hole."""
    if not source.predicted:
        return None, {}
    if source.segmenter is None and getattr(inpainter, "blind", False):
        return inpainter.predict_holes, {}  # part of the blind inpainter's own fingerprint
    from m2f_bench.segmenters import DEFAULT_SEGMENTER, build_segmenter

    spec = dict(source.segmenter or {"type": DEFAULT_SEGMENTER})
    if device != "cpu" and "device" not in spec:
        spec["device"] = device
    segmenter = build_segmenter(spec)
    return segmenter.holes, {"segmenter": segmenter.fingerprint()}
