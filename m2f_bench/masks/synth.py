"""Synthetic face masks drawn onto aligned crops from the 68 dlib landmarks.

A MaskTheFace-style synthesis (Anwar & Raychowdhury, "Masked Face Recognition for
Secure Authentication", arXiv:2008.11104), with our own geometry: the outline runs from
the cheeks over the nose bridge and down along the jaw line to below the chin, so it
follows the head's roll and yaw. A flat fabric texture (a photo of a real surgical mask,
or a procedural N95, KN95 or cloth fabric) is stretched between the top edge and the jaw
line, shaded like a curved surface lit by the scene under it, finished with the type's
seams, nose clip and ear loops, and blended in with an anti-aliased alpha. The ``hole``
is every pixel the alpha touches; every other pixel is the input's, bit for bit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from m2f_bench.errors import M2FError
from m2f_bench.masks import _textures
from m2f_bench.masks._geometry import MaskShape, ShapeParams, check_landmarks, outline
from m2f_bench.registry import Registry

#: The built-in mask types, in the order reports list them.
MASK_TYPES: tuple[str, ...] = (
    "surgical_white",
    "surgical_blue",
    "surgical_green",
    "surgical_black",
    "n95",
    "kn95",
    "cloth",
    "fitted",
)

#: Fixed-point bits for OpenCV drawing, so that outlines land between pixels.
_SHIFT = 4
#: Fabric coordinates and shading are computed on a grid this many samples per face unit
#: and interpolated: they are smooth, and per pixel they would cost more than the rest.
_COARSE = 32
#: Edge softness and contact-shadow spread, as Gaussian σ in face units (at least 0.45 px
#: and 1 px).
_FEATHER = 0.006
_SHADOW = 0.025


@dataclass(frozen=True)
class MaskedFace:
    """A crop with a synthetic mask.

    Attributes:
        image: The masked crop, uint8 H×W×3 RGB.
        hole: Bool H×W, the pixels the mask altered; all others equal the input crop.
        mask_type: The mask type drawn.
        coverage: Fraction of the crop inside the hole (``hole.mean()``).
    """

    image: np.ndarray
    hole: np.ndarray
    mask_type: str
    coverage: float


def mask_rng(image_id: str, mask_type: str, seed: int) -> np.random.Generator:
    """The random stream for one masked image, the same on every process and platform.

    Python's ``hash()`` is salted per process, so the stream is seeded from SHA-256.
    """
    key = f"{image_id}\x1f{mask_type}\x1f{seed}".encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:16], "little"))


class Canvas:
    """The window of the crop around one mask, where its layers are drawn.

    Layers are float32 weights in [0, 1] over the window; :meth:`shade` and :meth:`paint`
    apply them to the fabric.

    Attributes:
        x0: Left column of the window in the crop.
        y0: Top row of the window in the crop.
        width: Window width in pixels.
        height: Window height in pixels.
        shape: The mask being drawn.
        unit: Pixels per face unit, to size lines.
        colour: The fabric, planar RGB (3×H×W) in [0, 1], before shading and lighting.
        gain: Brightness factors (H×W) collected from seams and creases.
    """

    def __init__(self, x0: int, y0: int, width: int, height: int, shape: MaskShape) -> None:
        self.x0, self.y0, self.width, self.height = x0, y0, width, height
        self.shape = shape
        self.unit = shape.frame.h
        self.colour = np.zeros((3, height, width), np.float32)
        self.gain = np.ones((height, width), np.float32)

    def _fixed(self, points: np.ndarray) -> np.ndarray:
        local = np.asarray(points) - (self.x0, self.y0)
        return np.round(local * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)

    def _layer(self) -> np.ndarray:
        return np.zeros((self.height, self.width), np.uint8)

    @staticmethod
    def _weight(layer: np.ndarray) -> np.ndarray:
        return layer.astype(np.float32) * (1 / 255)

    def fill(self, points: np.ndarray) -> np.ndarray:
        """Anti-aliased coverage of a polygon given in crop pixels."""
        layer = self._layer()
        cv2.fillPoly(layer, [self._fixed(points)], 255, cv2.LINE_AA, _SHIFT)
        return self._weight(layer)

    def line(
        self,
        points: np.ndarray | list[np.ndarray],
        width: float,
        closed: bool = False,
        fade: bool = False,
    ) -> np.ndarray:
        """Anti-aliased polyline, or list of them.

        Args:
            points: N×2 crop pixels, or a list of such polylines.
            width: Line width in face units (at least one pixel).
            closed: Join the last point to the first.
            fade: Fade each polyline out towards its end, segment by segment.
        """
        layer = self._layer()
        lines = (
            [self._fixed(p) for p in points] if isinstance(points, list) else [self._fixed(points)]
        )
        thickness = max(1, round(width * self.unit))
        if not fade:
            cv2.polylines(layer, lines, closed, 255, thickness, cv2.LINE_AA, _SHIFT)
            return self._weight(layer)
        for polyline in lines:
            # Faintest segment first, so that each brighter one is drawn over the joint.
            for i in reversed(range(len(polyline) - 1)):
                value = round(255 * (1.0 - i / (len(polyline) - 1)) ** 0.7)
                segment = [polyline[i : i + 2]]
                cv2.polylines(layer, segment, False, value, thickness, cv2.LINE_AA, _SHIFT)
        return self._weight(layer)

    def ellipse(self, centre: np.ndarray, axes: tuple[float, float], angle: float) -> np.ndarray:
        """Anti-aliased filled ellipse; ``axes`` in pixels, ``angle`` in degrees."""
        layer = self._layer()
        c = tuple(int(v) for v in self._fixed(centre).ravel())
        a = tuple(max(1, round(v * (1 << _SHIFT))) for v in axes)
        cv2.ellipse(layer, c, a, angle, 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)
        return self._weight(layer)

    def band(self, inset: float, width: float) -> np.ndarray:
        """The strip between ``inset`` and ``inset + width`` face units inside the edge."""
        layer = self._layer()
        outer = self.shape.inset(inset) if inset > 0 else self.shape.outline
        cv2.fillPoly(layer, [self._fixed(outer)], 255, cv2.LINE_AA, _SHIFT)
        inner = self.shape.inset(inset + width)
        cv2.fillPoly(layer, [self._fixed(inner)], 0, cv2.LINE_AA, _SHIFT)
        return self._weight(layer)

    def shade(self, weight: np.ndarray, factor: float) -> None:
        """Darken (factor < 1) or lighten the fabric under ``weight``."""
        self.gain *= 1.0 + (factor - 1.0) * weight

    def paint(self, weight: np.ndarray, rgb: np.ndarray) -> None:
        """Cover the fabric under ``weight`` with a flat colour."""
        self.colour += weight * (np.asarray(rgb, np.float32)[:, None, None] - self.colour)

    def coarse_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Sample points whose values ``cv2.resize`` (linear) spreads back over the window."""
        cols = min(self.width, max(2, round(self.width * _COARSE / self.unit)))
        rows = min(self.height, max(2, round(self.height * _COARSE / self.unit)))
        xs = self.x0 + (np.arange(cols) + 0.5) * (self.width / cols) - 0.5
        ys = self.y0 + (np.arange(rows) + 0.5) * (self.height / rows) - 0.5
        return xs[None, :], ys[:, None]


def _smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


class MaskStyle:
    """How one mask type is cut, coloured and finished; subclasses fill in the parts.

    A new type is an instance registered in :data:`MASK_STYLES`, or exposed through the
    ``m2f_bench.mask_types`` entry-point group; ``styles.py`` holds the built-in ones.

    Attributes:
        loop_reach: How far ear loops reach past the mask corners, in face units.
        loop_width: Width of the loops, in face units.
        straps: Head straps instead of ear loops.
        roundness: Strength of the cylindrical darkening towards the sides.
        wrap: Extra darkening where the fabric turns round the cheeks, at the sides.
        creases: Least and most number of soft creases in the fabric.
        gloss: Range of the specular highlight over the nose ridge, added to the colour
            (it is what shows a dark mask's shape).
    """

    loop_reach = 0.22
    loop_width = 0.015
    straps = False
    roundness = 0.3
    wrap = 0.25
    creases: tuple[int, int] = (1, 3)
    gloss: tuple[float, float] = (0.02, 0.05)

    def shape(self, rng: np.random.Generator) -> ShapeParams:
        """This mask's cut."""
        raise NotImplementedError

    def texture(self, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
        """The flat fabric, float32 ``height × width × 3`` RGB in [0, 1]."""
        raise NotImplementedError

    def loop_colour(self, rng: np.random.Generator, fabric: np.ndarray) -> np.ndarray:
        """RGB of the ear loops or straps."""
        return np.full(3, rng.uniform(0.85, 0.97), np.float32)

    def side_shading(self, rng: np.random.Generator, across: np.ndarray) -> np.ndarray | float:
        """Extra brightness by position across the mask (-1 left edge … 1 right edge)."""
        return 1.0

    def finish(self, canvas: Canvas, points: np.ndarray, rng: np.random.Generator) -> None:
        """Draw seams, clips and valves with ``canvas.shade`` and ``canvas.paint``."""


def _fabric(
    texture: np.ndarray, across: np.ndarray, down: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The texture looked up at each pixel's fabric coordinates, planar RGB."""
    rows, cols = texture.shape[:2]
    # A random window of the texture, maybe mirrored, so that no two masks repeat exactly.
    u0, u1 = rng.uniform(0, 0.06) * cols, cols * (1 - rng.uniform(0, 0.06))
    v0, v1 = rng.uniform(0, 0.08) * rows, rows * (1 - rng.uniform(0, 0.08))
    if rng.random() < 0.5:
        u0, u1 = u1, u0
    # The fabric wraps round the face like a cylinder seen from the front: a pixel's
    # ``across`` is the sine of the angle round it, so patterns crowd towards the sides.
    curved = np.arcsin(np.clip(across, -0.995, 0.995)) * (2 / np.pi)
    map_x = (u0 + 0.5 * (u1 - u0)) + (0.5 * (u1 - u0)) * curved
    map_y = v0 + (v1 - v0) * down
    looked_up = cv2.remap(
        np.ascontiguousarray(texture, np.float32),
        map_x,
        map_y,
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    return np.ascontiguousarray(looked_up.transpose(2, 0, 1))


def _shading(
    xs: np.ndarray,
    ys: np.ndarray,
    across: np.ndarray,
    down: np.ndarray,
    shape: MaskShape,
    points: np.ndarray,
    style: MaskStyle,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Brightness of the curved mask, and where it shines.

    Args:
        xs: Pixel columns (broadcast with ``ys``).
        ys: Pixel rows.
        across: Fabric coordinate across the mask there (-1 … 1).
        down: Fabric coordinate down the mask there (0 … 1).
        shape: The mask's outline.
        points: 68×2 landmarks in crop pixels.
        style: The mask style.
        rng: The mask's random stream.

    Returns:
        The brightness factor — darker towards and round the cheeks, under the jaw and
        along creases, lighter along the nose ridge — and the sheen: where the fabric
        stands out most and catches the light, along the ridge and over the nose tip.
    """
    unit = shape.frame.h
    light = rng.uniform(-0.3, 0.3)
    side = np.abs(across)
    shade = 1.0 - style.roundness * np.minimum(np.abs(across - light), 1.3) ** 2
    shade *= 1.0 - style.wrap * _smoothstep(0.65, 1.05, side)
    shade = shade * style.side_shading(rng, across)
    # The part below the jaw line turns away, under the chin and out of the light.
    shade *= 1.0 - rng.uniform(0.15, 0.3) * _smoothstep(0.6, 1.1, down)
    # A contact shadow where the fabric meets the skin along its top edge.
    shade *= 1.0 - rng.uniform(0.08, 0.18) * (1.0 - _smoothstep(0.0, 0.07, down))

    # Soft creases that run from the ear loops towards the middle, bending with the face.
    gain = np.ones_like(shade)
    for _ in range(int(rng.integers(style.creases[0], style.creases[1] + 1))):
        level, bend = rng.uniform(0.25, 0.85), rng.uniform(-0.2, 0.2)
        width, depth = rng.uniform(0.025, 0.05), rng.uniform(0.06, 0.16)
        sign = (-1.0, 1.0, 0.0)[rng.integers(3)]
        reach = _smoothstep(0.1, 0.7, sign * across) if sign else _smoothstep(0.2, 0.8, side)
        offset = (down - level - bend * across * across) / width
        fold = np.exp(-(offset**2)) - 0.5 * np.exp(-((offset + 1.2) ** 2))
        gain *= 1.0 - depth * reach * fold
    shade *= gain

    # The nose ridge: a lit strip from the top edge down to the nose tip, and a spot on it.
    tip_across, tip_down = shape.fabric_coords(points[30, 0], points[30, 1])
    ridge_width = rng.uniform(0.12, 0.22)
    tip_reach = float(np.clip(tip_down, 0.1, 0.6)) + 0.1
    ridge = np.exp(
        -(((across - tip_across * _smoothstep(0.0, tip_reach, down)) / ridge_width) ** 2)
    )
    ridge *= _smoothstep(-0.02, 0.05, down) * (1.0 - _smoothstep(tip_reach, tip_reach + 0.3, down))
    nose = points[30]
    spread = 2 * (0.3 * unit) ** 2
    spot = np.exp(-((xs - nose[0]) ** 2) / spread) * np.exp(-((ys - nose[1]) ** 2) / spread)
    sheen = np.maximum(ridge, spot)
    return shade * (1.0 + rng.uniform(0.04, 0.1) * sheen), sheen


def _scene_light(window: np.ndarray, under: np.ndarray) -> np.ndarray:
    """The scene's low-frequency lighting across the mask, relative to its mean.

    Measured on the skin the mask covers only (a normalized convolution), so the
    background beside the jaw does not bleed in; a 4×4 grid keeps the mouth and beard
    from printing through.
    """
    luma = cv2.cvtColor(window, cv2.COLOR_RGB2GRAY).astype(np.float32)
    covered = luma * under
    weighted = cv2.resize(covered, (4, 4), interpolation=cv2.INTER_AREA)
    weight = cv2.resize(under, (4, 4), interpolation=cv2.INTER_AREA)
    mean = max(float(covered.sum()) / max(float(under.sum()), 1e-6), 1.0)
    grid = np.where(weight > 0.05, weighted / np.maximum(weight, 1e-6), mean) / mean
    ratio = cv2.resize(grid.astype(np.float32), under.shape[::-1], interpolation=cv2.INTER_LINEAR)
    return np.sqrt(np.clip(ratio, 0.5, 1.6))


def render(
    style: MaskStyle, crop: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one mask of ``style`` onto ``crop``: the masked crop and its hole."""
    points = check_landmarks(landmarks)
    rows, cols = crop.shape[:2]
    shape = outline(points, style.shape(rng), style.loop_reach, style.straps)

    # Everything is drawn in the window around the mask and its loops, not the whole crop.
    extent = np.concatenate([shape.outline, *shape.loops])
    feather = max(0.45, _FEATHER * shape.frame.h)
    shadow_sigma = max(1.0, _SHADOW * shape.frame.h)
    pad = 2 + style.loop_width * shape.frame.h + 3 * max(feather, shadow_sigma)
    (left, top), (right, bottom) = extent.min(0) - pad, extent.max(0) + pad + 1
    x0, y0 = min(max(int(left), 0), cols), min(max(int(top), 0), rows)
    x1, y1 = min(max(int(right), 0), cols), min(max(int(bottom), 0), rows)
    image, hole = crop.copy(), np.zeros((rows, cols), bool)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return image, hole
    canvas = Canvas(int(x0), int(y0), int(x1 - x0), int(y1 - y0), shape)
    window = np.ascontiguousarray(crop[y0:y1, x0:x1])

    # Soft edges: the anti-aliased polygon, feathered by a fraction of a pixel more.
    body = cv2.GaussianBlur(canvas.fill(shape.outline), (0, 0), feather)
    # Fabric coordinates and shading are smooth: computed on a coarse grid and spread over
    # the window by one linear resize.
    xs, ys = canvas.coarse_grid()
    across, down = shape.fabric_coords(xs, ys)
    shade, sheen = _shading(xs, ys, across, down, shape, points, style, rng)
    # Drawn before the fabric, whose draws vary with the texture source: the hole must not.
    shadow_strength = rng.uniform(0.25, 0.5)
    fields = np.dstack([across, down, shade, sheen]).astype(np.float32)
    fields = cv2.resize(fields, (canvas.width, canvas.height), interpolation=cv2.INTER_LINEAR)
    across, down, shade, sheen = cv2.split(fields)

    fabric = style.texture(rng, *_textures.texture_size(rows))
    canvas.colour = _fabric(fabric, across, down, rng)
    style.finish(canvas, points, rng)
    # A dark fabric shows its shape by its sheen more than by its shading.
    colour = canvas.colour * (shade * canvas.gain) + rng.uniform(*style.gloss) * sheen
    # The mask's contact shadow on the skin beside and below it (lit from above, so not
    # above its top edge).
    shadow = np.clip(cv2.GaussianBlur(body, (0, 0), shadow_sigma) - body, 0.0, 1.0)
    shadow *= shadow_strength * _smoothstep(0.3, 0.7, down)

    alpha = body
    if shape.loops:
        loops = canvas.line(list(shape.loops), style.loop_width, fade=style.straps)
        loop_rgb = style.loop_colour(rng, fabric)[:, None, None]
        # The loops lie over the mask where they are tied on.
        alpha = body + loops - body * loops
        colour = (colour * (body * (1 - loops)) + loop_rgb * loops) / np.maximum(alpha, 1e-6)

    ox, oy = (rng.random(2) * max(rows, cols)).astype(int)
    grain = _textures.noise_field(max(rows, cols))[oy : oy + canvas.height, ox : ox + canvas.width]
    light = _scene_light(window, body) * (1.0 + rng.uniform(0.015, 0.035) * grain)
    colour = np.clip(colour * light, 0.0, 1.0)

    # Quantize the alpha and the shadow first, so that the hole is exactly where any of
    # either remains; where both are zero the blend below gives back the input exactly.
    level = np.round(alpha * 255)
    dark = np.round(shadow * (1 - level / 255) * 255)
    a, s = level * (1 / 255), dark * (1 / 255)
    under = window.transpose(2, 0, 1).astype(np.float32)
    skin = under * (1 - s)
    blended = np.round(skin + a * (colour * 255 - skin)).astype(np.uint8)
    image[y0:y1, x0:x1] = cv2.merge(list(blended))
    hole[y0:y1, x0:x1] = (level > 0) | (dark > 0)
    return image, hole


#: Mask styles by type name; third parties add theirs through ``m2f_bench.mask_types``.
MASK_STYLES: Registry[MaskStyle] = Registry("mask type", "m2f_bench.mask_types")
for _name in MASK_TYPES:
    MASK_STYLES.register_lazy(_name, f"m2f_bench.masks.styles:{_name.upper()}")


def apply_mask(
    crop: np.ndarray, landmarks: np.ndarray, mask_type: str, *, image_id: str, seed: int = 0
) -> MaskedFace:
    """Draw a synthetic mask on an aligned face crop.

    Args:
        crop: uint8 H×W×3 RGB face crop.
        landmarks: 68×2 dlib landmarks in crop pixels.
        mask_type: A name registered in :data:`MASK_STYLES`.
        image_id: Identifies the image; with ``mask_type`` and ``seed`` it fixes every
            random choice, so the same arguments give bit-identical output.
        seed: Varies the masks of a whole run.

    Raises:
        UnknownNameError: No such mask type.
        M2FError: The crop or the landmarks are malformed.
    """
    style = MASK_STYLES.get(mask_type)
    crop = np.asarray(crop)
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise M2FError(f"expected a uint8 H×W×3 RGB crop, got {crop.dtype} {crop.shape}")
    image, hole = render(style, crop, landmarks, mask_rng(image_id, mask_type, seed))
    return MaskedFace(image=image, hole=hole, mask_type=mask_type, coverage=float(hole.mean()))
