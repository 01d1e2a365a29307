"""Mask fabrics in texture space: photos of real surgical masks and procedural fabrics.

Textures are float32 RGB in [0, 1], ``height × width`` of the flat mask before it is
warped onto the face; their scale follows the crop so that a pattern looks the same at
any crop size.
"""

from __future__ import annotations

import colorsys
import importlib.resources
from functools import lru_cache

import cv2
import numpy as np

#: Inner fabric of each photo (x0, y0, x1, y1 as fractions), inside the bound edges and
#: below the nose wire and printed logo, so that only pleated fabric is kept.
_PHOTO_FABRIC = {
    "white": (0.05, 0.30, 0.93, 0.88),
    "blue": (0.05, 0.12, 0.95, 0.90),
    "green": (0.04, 0.15, 0.94, 0.90),
}
#: Typical colour of each surgical mask family, for the procedural fallback.
_SURGICAL_RGB = {
    "white": (0.93, 0.94, 0.95),
    "blue": (0.45, 0.72, 0.88),
    "green": (0.36, 0.66, 0.58),
    "black": (0.1, 0.1, 0.11),
}


def texture_size(crop_size: int) -> tuple[int, int]:
    """Width and height of a flat mask texture for a crop of this size (≈ the mask's size)."""
    return max(24, round(0.6 * crop_size)), max(18, round(0.45 * crop_size))


@lru_cache(maxsize=32)
def _photo(colour: str, width: int, height: int) -> np.ndarray | None:
    """The pleated fabric of insightface's photo of a flat surgical mask, or None."""
    try:
        path = importlib.resources.files("insightface") / "data" / "images" / f"mask_{colour}.jpg"
        data = np.frombuffer(path.read_bytes(), np.uint8)
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        return None
    rows, cols = image.shape[:2]
    x0, y0, x1, y1 = _PHOTO_FABRIC[colour]
    fabric = image[round(y0 * rows) : round(y1 * rows), round(x0 * cols) : round(x1 * cols)]
    fabric = cv2.resize(fabric, (width, height), interpolation=cv2.INTER_AREA)
    texture = cv2.cvtColor(fabric, cv2.COLOR_BGR2RGB).astype(np.float32) * (1 / 255)
    texture.setflags(write=False)
    return texture


@lru_cache(maxsize=8)
def noise_field(size: int) -> np.ndarray:
    """A fixed 2·size square of unit Gaussian noise; callers take random windows of it."""
    field = np.random.default_rng(0x6D3266).standard_normal((2 * size, 2 * size))
    field = field.astype(np.float32)
    field.setflags(write=False)
    return field


@lru_cache(maxsize=32)
def _smooth_field(width: int, height: int, cells: int) -> np.ndarray:
    """A fixed field of smooth noise twice the texture's size, made once per process."""
    rows = max(2, round(cells * height / width))
    grid = np.random.default_rng(cells).standard_normal((2 * rows, 2 * cells), dtype=np.float32)
    field = cv2.resize(grid, (2 * width, 2 * height), interpolation=cv2.INTER_CUBIC)
    field.setflags(write=False)
    return field


def smooth_noise(rng: np.random.Generator, width: int, height: int, cells: int) -> np.ndarray:
    """Zero-mean, roughly unit noise with about ``cells`` blobs across the width.

    A random window of a cached field: as random as fresh noise for a mask, and cheaper.
    """
    x, y = (rng.random(2) * (width, height)).astype(int)
    return _smooth_field(width, height, cells)[y : y + height, x : x + width]


def colour_matrix(hue_deg: float, saturation: float, gain: float) -> np.ndarray:
    """3×3 matrix that rotates hue about the grey axis, scales saturation and brightness."""
    grey = np.full((3, 3), 1.0 / 3.0)
    axis = np.ones(3) / np.sqrt(3.0)
    angle = np.deg2rad(hue_deg)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.cos(angle) * np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * grey
    return (gain * (grey + saturation * (rotation - grey))).astype(np.float32)


def random_colour(rng: np.random.Generator, value: tuple[float, float] = (0.15, 0.9)) -> np.ndarray:
    """A random fabric colour: any hue, muted to moderate saturation."""
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.15, 0.7), rng.uniform(*value))
    return np.array(rgb, dtype=np.float32)


def _tint(intensity: np.ndarray, rgb: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """``intensity`` (H×W) times an RGB colour, as H×W×3.

    Built channel by channel: numpy broadcasting over a trailing axis of 3 is slow.
    """
    return cv2.merge([intensity * np.float32(c) for c in rgb])


def surgical(rng: np.random.Generator, colour: str, width: int, height: int) -> np.ndarray:
    """Pleated surgical fabric of one colour family, hue and brightness jittered."""
    # Black masks are dyed white ones: the white photo's pleats, darkened.
    texture = _photo("white" if colour == "black" else colour, width, height)
    if texture is None:
        texture = _procedural_pleats(rng, _SURGICAL_RGB[colour], width, height)
    elif colour == "black":
        # Squared contrast: on dark fabric the pleats would otherwise vanish.
        texture = np.float32(0.11) * (texture * np.float32(1 / 0.93)) ** 2
    if colour == "black":
        matrix = colour_matrix(rng.uniform(-30, 30), rng.uniform(0.0, 3.0), rng.uniform(0.8, 1.6))
    elif colour == "white":
        # White masks vary in brightness and a faint tint, not in hue.
        matrix = colour_matrix(rng.uniform(-40, 40), rng.uniform(0.0, 2.0), rng.uniform(0.88, 1.0))
    else:
        matrix = colour_matrix(
            rng.uniform(-10, 10), rng.uniform(0.8, 1.25), rng.uniform(0.88, 1.05)
        )
    return cv2.transform(texture, matrix)


def _procedural_pleats(
    rng: np.random.Generator, rgb: tuple[float, float, float], width: int, height: int
) -> np.ndarray:
    rows = np.arange(height, dtype=np.float32)[:, None] / height
    shade = np.ones((height, 1), np.float32)
    for centre in (0.35, 0.55, 0.75):
        # Each pleat: a dark fold line with light fabric falling away below it.
        below = rows - centre
        shade += np.where(below > 0, 0.06 * np.exp(-below / 0.05), 0.0).astype(np.float32)
        shade -= (0.18 * np.exp(-((below / 0.008) ** 2))).astype(np.float32)
    return _tint(_mottle(rng, width, height) * shade, rgb)


def _mottle(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """The soft, cloudy unevenness of nonwoven fabric, around 1."""
    return 1.0 + 0.035 * smooth_noise(rng, width, height, 12)


def nonwoven(
    rng: np.random.Generator, rgb: tuple[float, float, float] | np.ndarray, width: int, height: int
) -> np.ndarray:
    """Plain nonwoven fabric: a base colour with soft mottling and fine fibres."""
    fibres = 0.03 * smooth_noise(rng, width, height, 30)
    return _tint(_mottle(rng, width, height) + fibres, rgb)


def knit(
    rng: np.random.Generator, rgb: tuple[float, float, float] | np.ndarray, width: int, height: int
) -> np.ndarray:
    """Stretch jersey or neoprene of a fitted mask: a fine rib running down, soft mottling."""
    xx = np.arange(width, dtype=np.float32)[None, :] / width
    rib = 0.025 * np.sin(2 * np.pi * xx * rng.uniform(45, 70) + rng.uniform(0, 2 * np.pi))
    fibres = 0.04 * smooth_noise(rng, width, height, 40)
    return _tint(_mottle(rng, width, height) + fibres + rib, rgb)


#: Dark fabrics, by weight: black dominates, as in photos of people wearing masks.
DARK_RGB = {(0.06, 0.06, 0.07): 5, (0.08, 0.1, 0.2): 2.5, (0.22, 0.22, 0.24): 2.5}


def cloth(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A printed or woven cloth: stripes, checks, dots, camouflage or plain, with weave."""
    kind = ("stripes", "checks", "dots", "camouflage", "plain")[rng.integers(5)]
    # Pattern coordinates in units of the texture width, as a row and a column.
    xx = np.arange(width, dtype=np.float32)[None, :] / width
    yy = np.arange(height, dtype=np.float32)[:, None] / width
    # A third of cloth masks are dark: black, navy or charcoal, patterned or plain.
    dark = rng.random() < 0.35
    base = random_colour(rng, (0.05, 0.25)) if dark else random_colour(rng)
    if kind == "stripes":
        angle = np.deg2rad((0.0, 90.0, 45.0, -45.0)[rng.integers(4)] + rng.uniform(-5, 5))
        phase = (xx * np.sin(angle) + yy * np.cos(angle)) * rng.uniform(5, 14)
        palette = np.stack([base, random_colour(rng), random_colour(rng)][: rng.integers(2, 4)])
        index = np.floor(phase % len(palette)).astype(np.intp)
        channels = [np.take(palette[:, c], index) for c in range(3)]
    elif kind == "checks":
        period = rng.uniform(6, 12)
        bands = (((xx * period) % 1 < 0.5) + ((yy * period) % 1 < 0.5).astype(np.float32)) / 2
        second = random_colour(rng, (0.6, 0.95))
        channels = [base[c] + (second[c] - base[c]) * bands for c in range(3)]
    elif kind == "dots":
        period = rng.uniform(7, 14)
        column = np.floor(xx * period)
        fx = (xx * period) % 1 - 0.5
        fy = (yy * period + 0.5 * (column % 2)) % 1 - 0.5
        inside = (fx * fx + fy * fy < rng.uniform(0.18, 0.32) ** 2).astype(np.float32)
        dot = random_colour(rng, (0.6, 0.95))
        channels = [base[c] + (dot[c] - base[c]) * inside for c in range(3)]
    elif kind == "camouflage":
        # Camouflage keeps to one family of hues, as printed camouflage does.
        hue = rng.random()
        palette = np.array(
            [
                colorsys.hsv_to_rgb(
                    (hue + rng.uniform(-0.08, 0.08)) % 1,
                    rng.uniform(0.2, 0.6),
                    rng.uniform(0.2, 0.7),
                )
                for _ in range(4)
            ],
            np.float32,
        )
        index = np.argmax(np.stack([smooth_noise(rng, width, height, 9) for _ in range(4)]), 0)
        channels = [np.take(palette[:, c], index) for c in range(3)]
    else:
        channels = [np.full((height, width), base[c], np.float32) for c in range(3)]
    # A fine weave, so that the cloth does not look printed on paper.
    period = max(2.0, width / 40.0)
    weave = 1.0 + 0.05 * np.sin(np.pi * xx * width / period) * np.sin(np.pi * yy * width / period)
    return cv2.merge([(channel * weave).astype(np.float32) for channel in channels])
