"""The built-in mask types: surgical (four colours), N95, KN95, cloth and fitted.

Each style draws its random cut from a few ranges (face units, see ``_geometry``), picks
its fabric and adds the details that tell the type apart at a glance: the bound edges
and nose wire of a surgical mask, the moulded cup, nose clip, straps and valve of an
N95, the folded halves and heat-sealed seams of a KN95, the printed fabric of a cloth
mask, the centre seam of a fitted stretch-fabric one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from m2f_bench.masks import _textures
from m2f_bench.masks._geometry import MaskShape, ShapeParams
from m2f_bench.masks.synth import Canvas, MaskStyle


def _down(shape: MaskShape) -> np.ndarray:
    axis = shape.bottom - shape.top
    return axis / np.hypot(*axis)


def _nose_strip(canvas: Canvas, half_length: float, drop: float) -> np.ndarray:
    """The part of the top edge over the nose, lowered by ``drop`` face units."""
    shape = canvas.shape
    near = np.linalg.norm(shape.top_edge - shape.top, axis=1) < half_length * canvas.unit
    return shape.top_edge[near] + drop * canvas.unit * _down(shape)


@dataclass(frozen=True)
class Cut:
    """Ranges of a style's :class:`ShapeParams`, each drawn uniformly but ``top``.

    ``top`` runs from high (just under the eyes) to low (towards mid-nose) and is drawn
    skewed to high: most people wear a mask over the whole nose bridge.
    """

    top: tuple[float, float]
    cheek: tuple[float, float]
    sag: tuple[float, float]
    spread: tuple[float, float]
    chin: tuple[float, float]
    corner: tuple[float, float]
    smooth: int

    def draw(self, rng: np.random.Generator) -> ShapeParams:
        high, low = self.top
        return ShapeParams(
            top=high + (low - high) * float(rng.beta(1.2, 2.0)),
            cheek=rng.uniform(*self.cheek),
            sag=rng.uniform(*self.sag),
            spread=rng.uniform(*self.spread),
            chin=rng.uniform(*self.chin),
            corner=rng.uniform(*self.corner),
            smooth=self.smooth,
        )


class _CutStyle(MaskStyle):
    """A built-in style: its cut is a :class:`Cut`."""

    cut: Cut

    def shape(self, rng: np.random.Generator) -> ShapeParams:
        return self.cut.draw(rng)


def _pick(rng: np.random.Generator, colours: dict[tuple[float, float, float], float]) -> np.ndarray:
    """One of ``colours`` (RGB → weight) at random, its brightness jittered a little."""
    cumulative = np.cumsum(list(colours.values()))
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return np.array(list(colours)[index], np.float32) * rng.uniform(0.95, 1.03)


class SurgicalMask(_CutStyle):
    """A pleated three-ply surgical mask on ear loops, from photos of real ones.

    Args:
        colour: ``"white"``, ``"blue"``, ``"green"`` or ``"black"``.
    """

    def __init__(self, colour: str) -> None:
        self.colour = colour
        if colour == "black":
            # Dark fabric shows its folds by their sheen.
            self.gloss = (0.05, 0.1)

    def loop_colour(self, rng: np.random.Generator, fabric: np.ndarray) -> np.ndarray:
        if self.colour == "black":
            return np.full(3, rng.uniform(0.06, 0.14), np.float32)
        return super().loop_colour(rng, fabric)

    cut = Cut(
        top=(0.06, 0.2),
        cheek=(0.045, 0.07),
        sag=(0.0, 0.05),
        spread=(0.04, 0.09),
        chin=(0.05, 0.12),
        corner=(0.16, 0.3),
        smooth=1,
    )

    def texture(self, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
        return _textures.surgical(rng, self.colour, width, height)

    def finish(self, canvas: Canvas, points: np.ndarray, rng: np.random.Generator) -> None:
        # Bound edges: a pressed, lighter strip with a stitched line along its inside.
        canvas.shade(canvas.band(0.0, 0.04), 1.05)
        canvas.shade(canvas.band(0.04, 0.012), 0.9)
        wire = _nose_strip(canvas, 0.25, 0.035)
        canvas.shade(canvas.line(wire + 0.012 * canvas.unit * _down(canvas.shape), 0.03), 0.9)
        canvas.shade(canvas.line(wire, 0.03), 1.07)


class N95Mask(_CutStyle):
    """A moulded N95 cup: nose clip, head straps, sometimes an exhalation valve."""

    loop_reach = 0.3
    loop_width = 0.02
    straps = True
    roundness = 0.4

    cut = Cut(
        top=(0.06, 0.16),
        cheek=(0.05, 0.08),
        sag=(-0.03, 0.01),
        spread=(0.02, 0.05),
        chin=(0.04, 0.1),
        corner=(0.22, 0.34),
        smooth=2,
    )

    def texture(self, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
        base = _pick(
            rng,
            {
                (0.94, 0.94, 0.92): 6,
                (0.78, 0.8, 0.82): 1,
                (0.7, 0.82, 0.92): 1,
                (0.2, 0.2, 0.22): 1.5,
                (0.07, 0.07, 0.08): 1.5,
            },
        )
        return _textures.nonwoven(rng, base, width, height)

    def loop_colour(self, rng: np.random.Generator, fabric: np.ndarray) -> np.ndarray:
        return _pick(
            rng,
            {(0.85, 0.8, 0.45): 2, (0.35, 0.45, 0.7): 2, (0.9, 0.9, 0.88): 3, (0.7, 0.7, 0.72): 1},
        )

    def finish(self, canvas: Canvas, points: np.ndarray, rng: np.random.Generator) -> None:
        # The moulded rim: a dark crease with a highlight just inside it.
        canvas.shade(canvas.band(0.05, 0.012), 0.8)
        canvas.shade(canvas.band(0.062, 0.015), 1.06)
        clip = _nose_strip(canvas, 0.2, 0.04)
        clip_rgb = _pick(rng, {(0.75, 0.76, 0.78): 1, (0.97, 0.97, 0.96): 1})
        canvas.shade(canvas.line(clip + 0.015 * canvas.unit * _down(canvas.shape), 0.04), 0.85)
        canvas.paint(canvas.line(clip, 0.04), clip_rgb)
        if rng.random() < 0.5:
            self._valve(canvas, points, rng)

    def _valve(self, canvas: Canvas, points: np.ndarray, rng: np.random.Generator) -> None:
        side, jaw = (48, 3) if rng.random() < 0.5 else (54, 13)
        # Foreshortened like its side of the face.
        widths = [np.hypot(*(points[j] - points[33])) for j in (3, 13)]
        squash = np.clip(
            2 * np.hypot(*(points[jaw] - points[33])) / max(sum(widths), 1e-6), 0.35, 1.0
        )
        down = _down(canvas.shape)
        centre = points[33] + 0.55 * (points[side] - points[33]) + 0.12 * canvas.unit * down
        radius = 0.11 * canvas.unit
        angle = float(np.degrees(np.arctan2(down[0], -down[1])))
        body = canvas.ellipse(centre, (radius * squash, radius), angle)
        rim = canvas.ellipse(centre, (radius * squash * 1.15, radius * 1.15), angle)
        valve_rgb = _pick(rng, {(0.9, 0.9, 0.88): 2, (0.35, 0.35, 0.37): 2, (0.85, 0.4, 0.2): 1})
        canvas.shade(rim, 0.7)
        canvas.paint(body, valve_rgb)
        across = np.array([down[1], -down[0]]) * radius * squash * 0.6
        slits = [centre + k * radius * down + np.stack([-across, across]) for k in (-0.45, 0, 0.45)]
        canvas.shade(canvas.line(slits, 0.012), 0.6)


class KN95Mask(_CutStyle):
    """A flat-folded KN95: pointed at the nose, centre fold, heat-sealed edges."""

    roundness = 0.15

    cut = Cut(
        top=(0.05, 0.14),
        cheek=(0.045, 0.07),
        sag=(0.01, 0.05),
        spread=(0.03, 0.06),
        chin=(0.06, 0.13),
        corner=(0.18, 0.32),
        smooth=0,
    )

    def texture(self, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
        base = _pick(
            rng,
            {
                (0.95, 0.95, 0.95): 4,
                (0.1, 0.1, 0.11): 2,
                (0.08, 0.1, 0.2): 1,
                (0.3, 0.3, 0.32): 1,
                (0.6, 0.62, 0.65): 1,
                (0.95, 0.75, 0.8): 0.5,
                (0.7, 0.83, 0.95): 0.5,
            },
        )
        return _textures.nonwoven(rng, base, width, height)

    def loop_colour(self, rng: np.random.Generator, fabric: np.ndarray) -> np.ndarray:
        return np.clip(fabric.mean((0, 1)) * rng.uniform(0.9, 1.05), 0, 1).astype(np.float32)

    def side_shading(self, rng: np.random.Generator, across: np.ndarray) -> np.ndarray:
        # Two flat panels meeting at the fold: each lit evenly, one brighter than the other.
        tilt = rng.uniform(-0.12, 0.12)
        return np.where(across < 0, 1.0 + tilt, 1.0 - tilt)

    def finish(self, canvas: Canvas, points: np.ndarray, rng: np.random.Generator) -> None:
        shape = canvas.shape
        fold = np.stack([shape.top, shape.bottom])
        side = np.array([-_down(shape)[1], _down(shape)[0]]) * 0.012 * canvas.unit
        canvas.shade(canvas.line(fold, 0.012), 0.7)
        canvas.shade(canvas.line(fold + side, 0.012), 1.06)
        # The heat-sealed edge: a slightly darker strip ending in a pressed line.
        canvas.shade(canvas.band(0.0, 0.05), 0.95)
        canvas.shade(canvas.band(0.05, 0.01), 0.82)


class ClothMask(_CutStyle):
    """A soft fabric mask: stripes, checks, dots, camouflage or plain, in random colours."""

    loop_width = 0.03
    loop_reach = 0.18
    roundness = 0.35

    cut = Cut(
        top=(0.06, 0.2),
        cheek=(0.045, 0.07),
        sag=(-0.01, 0.04),
        spread=(0.05, 0.1),
        chin=(0.06, 0.14),
        corner=(0.16, 0.3),
        smooth=2,
    )

    def texture(self, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
        return _textures.cloth(rng, width, height)

    def loop_colour(self, rng: np.random.Generator, fabric: np.ndarray) -> np.ndarray:
        return fabric.mean((0, 1)).astype(np.float32)

    def finish(self, canvas: Canvas, points: np.ndarray, rng: np.random.Generator) -> None:
        canvas.shade(canvas.band(0.04, 0.012), 0.85)
        if rng.random() < 0.5:
            seam = np.stack([canvas.shape.top, canvas.shape.bottom])
            canvas.shade(canvas.line(seam, 0.015), 0.8)


class FittedMask(_CutStyle):
    """A shaped stretch-fabric mask (cotton jersey or neoprene), the black, navy or charcoal
    kind so common in photos: high on the nose, rounded, one seam down the middle, wide
    loops of the same fabric."""

    loop_width = 0.035
    loop_reach = 0.16
    roundness = 0.45
    wrap = 0.35
    creases = (0, 2)
    gloss = (0.04, 0.1)

    cut = Cut(
        top=(0.05, 0.15),
        cheek=(0.045, 0.06),
        sag=(0.0, 0.04),
        spread=(0.05, 0.1),
        chin=(0.07, 0.15),
        corner=(0.18, 0.3),
        smooth=3,
    )

    def texture(self, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
        return _textures.knit(rng, _pick(rng, _textures.DARK_RGB), width, height)

    def loop_colour(self, rng: np.random.Generator, fabric: np.ndarray) -> np.ndarray:
        return (fabric.mean((0, 1)) * rng.uniform(0.9, 1.1)).astype(np.float32)

    def finish(self, canvas: Canvas, points: np.ndarray, rng: np.random.Generator) -> None:
        shape = canvas.shape
        # The centre seam follows the profile: over the nose tip, then down to the chin.
        seam = np.stack([shape.top, points[30] + 0.02 * canvas.unit * _down(shape), shape.bottom])
        side = np.array([-_down(shape)[1], _down(shape)[0]]) * 0.01 * canvas.unit
        canvas.shade(canvas.line(seam, 0.012), 0.6)
        canvas.shade(canvas.line(seam + side, 0.012), 1.25)
        # A hemmed edge, turned in and a little darker.
        canvas.shade(canvas.band(0.0, 0.03), 0.85)


SURGICAL_WHITE = SurgicalMask("white")
SURGICAL_BLUE = SurgicalMask("blue")
SURGICAL_GREEN = SurgicalMask("green")
SURGICAL_BLACK = SurgicalMask("black")
N95 = N95Mask()
KN95 = KN95Mask()
CLOTH = ClothMask()
FITTED = FittedMask()
