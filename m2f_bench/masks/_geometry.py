"""Mask outlines from the 68 dlib landmarks, in a face frame that follows roll and yaw.

All lengths are in face units: the distance from landmark 27 (between the eyes) to
landmark 8 (the chin) is 1, so a shape looks the same at any crop size. The frame's axes
are the face's own: ``down`` runs from 27 to 8, so a rolled head rolls the mask, and the
jaw points carry the yaw: a turned head has a narrow far side, and so does the mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np

from m2f_bench.errors import M2FError

#: Lower eyelids, from the left eye's outer corner to the right eye's outer corner.
_EYE_FLOOR = [36, 41, 40, 39, 42, 47, 46, 45]
#: How much of the chin drop each jaw point 2…14 takes: all at the chin, none at 2 and 14.
_HANG = np.clip(1.0 - np.abs(np.arange(2, 15) - 8) / 6.0, 0.0, 1.0) ** 1.5


def check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """The landmarks as a 68×2 float64 array.

    Raises:
        M2FError: Wrong shape, non-finite values, or a degenerate face.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (68, 2):
        raise M2FError(f"expected 68×2 dlib landmarks, got an array of shape {points.shape}")
    if not np.isfinite(points).all():
        raise M2FError("landmarks contain NaN or infinite values")
    height = np.hypot(*(points[8] - points[27]))
    if height < 2.0:
        raise M2FError("landmarks are degenerate: eyes and chin less than 2 px apart")
    down = (points[8] - points[27]) / height
    across = points[:17] @ np.array([down[1], -down[0]])
    if np.ptp(across) < 0.25 * height:
        raise M2FError("landmarks are degenerate: the jaw line has collapsed to a line")
    return points


@dataclass(frozen=True)
class FaceFrame:
    """Face coordinates ``(across, down)``: origin at landmark 27, landmark 8 at (0, 1).

    Attributes:
        origin: Landmark 27 in crop pixels.
        right: Unit vector across the face, towards the image right.
        down: Unit vector from landmark 27 towards landmark 8.
        h: Crop pixels per face unit.
    """

    origin: np.ndarray
    right: np.ndarray
    down: np.ndarray
    h: float

    @classmethod
    def from_landmarks(cls, points: np.ndarray) -> FaceFrame:
        axis = points[8] - points[27]
        h = float(np.hypot(*axis))
        down = axis / h
        return cls(points[27], np.array([down[1], -down[0]]), down, h)

    @cached_property
    def _to_face(self) -> np.ndarray:
        return np.stack([self.right, self.down], axis=1) / self.h

    @cached_property
    def _to_crop(self) -> np.ndarray:
        return np.stack([self.right, self.down]) * self.h

    def to_face(self, points: np.ndarray) -> np.ndarray:
        """Crop pixels (…×2) to face units."""
        return (np.asarray(points) - self.origin) @ self._to_face

    def to_crop(self, coords: np.ndarray) -> np.ndarray:
        """Face units (…×2) to crop pixels."""
        return np.asarray(coords) @ self._to_crop + self.origin


@dataclass(frozen=True)
class ShapeParams:
    """The few numbers that tell one mask cut from another, in face units.

    Attributes:
        top: Height of the top edge on the nose ridge, down from landmark 27 (between the
            eyes): about 0.08 sits just under the eyes, covering the whole nose bridge;
            0.2 is mid-nose (landmark 29).
        cheek: Clearance between the lower eyelids and the top edge over the cheeks.
        sag: How far the top edge dips towards the corners below the line under the eyes;
            negative arches it up, as on a moulded cup.
        spread: How far the sides and jaw line stand off the face, wrapping round the
            cheeks (scaled down on the far side of a turned head).
        chin: How far the mask hangs below the chin.
        corner: Height of the top corners at the face's edge (down from landmark 27).
        smooth: Rounds of corner cutting; 0 keeps sharp corners.
    """

    top: float
    cheek: float
    sag: float
    spread: float
    chin: float
    corner: float
    smooth: int


@dataclass(frozen=True)
class MaskShape:
    """Where a mask lies on one face.

    Attributes:
        frame: The face frame of the landmarks.
        outline: Closed polygon in crop pixels (N×2), clockwise on screen.
        top: Top of the centre line, on the nose bridge, in crop pixels.
        bottom: Bottom of the centre line, below the chin, in crop pixels.
        top_edge: The top edge from the left corner to the right one, in crop pixels.
        loops: Ear loops or straps, each a polyline in crop pixels.
        top_curve: The top edge in face units, ``across`` increasing.
        bottom_curve: The jaw line in face units, ``across`` increasing.
        centre_line: Top and bottom of the centre line in face units (2×2).
        half_widths: Left and right extent from the centre line, in face units.
    """

    frame: FaceFrame
    outline: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    top_edge: np.ndarray
    loops: tuple[np.ndarray, ...]
    top_curve: np.ndarray
    bottom_curve: np.ndarray
    centre_line: np.ndarray
    half_widths: tuple[float, float]

    def fabric_coords(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where crop pixels fall on the flat fabric.

        The fabric is stretched between the top edge and the jaw line, so pleats and prints
        fan out from the ear loops and curve under the chin as on a worn mask.

        Args:
            xs: Pixel columns (broadcastable with ``ys``).
            ys: Pixel rows.

        Returns:
            ``across``: -1 at the left edge, 0 on the centre line, 1 at the right edge;
            ``down``: 0 on the top edge, 1 on the jaw line (beyond them outside).
        """
        f = self.frame
        dx, dy = (xs - f.origin[0]) / f.h, (ys - f.origin[1]) / f.h
        r = dx * f.right[0] + dy * f.right[1]
        d = dx * f.down[0] + dy * f.down[1]
        top = np.interp(r, self.top_curve[:, 0], self.top_curve[:, 1])
        bottom = np.interp(r, self.bottom_curve[:, 0], self.bottom_curve[:, 1])
        down = (d - top) / np.maximum(bottom - top, 0.05)
        (t_r, t_d), (b_r, b_d) = self.centre_line
        across = r - (t_r + np.clip((d - t_d) / (b_d - t_d), 0.0, 1.0) * (b_r - t_r))
        across /= np.where(across < 0, self.half_widths[0], self.half_widths[1])
        return across.astype(np.float32), down.astype(np.float32)

    def inset(self, distance: float) -> np.ndarray:
        """The outline moved ``distance`` face units inwards, in crop pixels."""
        return self.outline + self._inward * (distance * self.frame.h)

    @cached_property
    def _inward(self) -> np.ndarray:
        """Inward offset of each outline vertex, per unit distance from the edges."""
        edges = np.concatenate([self.outline[1:], self.outline[:1]]) - self.outline
        # Turning an edge by +90° points inside because the outline runs clockwise on screen.
        normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
        normals /= np.maximum(np.hypot(*normals.T), 1e-9)[:, None]
        vertex = normals + np.concatenate([normals[-1:], normals[:-1]])
        vertex /= np.maximum(np.hypot(*vertex.T), 1e-9)[:, None]
        # Mitred: a corner vertex moves further, so that both its edges move by the distance.
        cosine = np.maximum((vertex * normals).sum(1), 0.5)[:, None]
        return vertex / cosine


@cache
def _bernstein(n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    return np.stack([(1 - t) ** 2, 2 * (1 - t) * t, t**2], axis=1)


def _bezier(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int) -> np.ndarray:
    """``n`` points along the quadratic Bézier curve from p0 to p2 pulled towards p1."""
    return _bernstein(n) @ np.stack([p0, p1, p2])


def _chaikin(points: np.ndarray, rounds: int) -> np.ndarray:
    """Corner cutting on a closed polygon: rounds corners the way soft fabric does."""
    for _ in range(rounds):
        nxt = np.concatenate([points[1:], points[:1]])
        points = np.stack([0.75 * points + 0.25 * nxt, 0.25 * points + 0.75 * nxt], 1)
        points = points.reshape(-1, 2)
    return points


def _increasing(curve: np.ndarray) -> np.ndarray:
    """The curve with ``across`` made non-decreasing, as ``np.interp`` needs."""
    return np.stack([np.maximum.accumulate(curve[:, 0]), curve[:, 1]], axis=1)


def _unit(vectors: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Rows of ``vectors`` scaled to length 1; ``fallback`` rows where one has no length.

    Landmarks of a turned or badly fitted face can coincide (a jaw point on the nose tip),
    and a zero-length direction must not become NaN.
    """
    length = np.hypot(vectors[:, 0], vectors[:, 1])[:, None]
    ok = length > 1e-6
    return np.where(
        ok, vectors / np.where(ok, length, 1.0), np.broadcast_to(fallback, vectors.shape)
    )


def _edge_at(points: np.ndarray, down: float) -> float:
    """``across`` of a polyline running down the face's edge, at height ``down``."""
    return float(np.interp(down, np.maximum.accumulate(points[:, 1]), points[:, 0]))


def side_widths(face: np.ndarray) -> tuple[float, float]:
    """Relative width of the left and right half of the face (1 each on a frontal face).

    A turned head shows its far side foreshortened: the cheek contour moves towards the
    nose tip. The width is measured from the nose tip to the contour at cheek height.
    """
    nose = face[30, 0]
    left = nose - face[1:4, 0].mean()
    right = face[13:16, 0].mean() - nose
    mean = max(0.5 * (abs(left) + abs(right)), 1e-3)
    return float(np.clip(left / mean, 0.15, 1.5)), float(np.clip(right / mean, 0.15, 1.5))


@dataclass(frozen=True)
class _FaceGeometry:
    """What every mask type of one face shares: computed once per landmark set."""

    frame: FaceFrame
    face: np.ndarray
    narrow: tuple[float, float]
    nose: np.ndarray
    jaw_out: np.ndarray
    eyes: np.ndarray


_LAST: list[tuple[bytes, _FaceGeometry]] = []


def _face_geometry(points: np.ndarray) -> _FaceGeometry:
    key = points.tobytes()
    if _LAST and _LAST[0][0] == key:  # the next mask type of the same face
        return _LAST[0][1]
    frame = FaceFrame.from_landmarks(points)
    face = frame.to_face(points)
    jaw = face[2:15]
    tangent = np.gradient(jaw, axis=0)
    centre = np.array([face[30, 0], 0.5 * (face[30, 1] + face[8, 1])])
    radial = _unit(jaw - centre, np.array([0.0, 1.0]))
    normal = _unit(np.stack([-tangent[:, 1], tangent[:, 0]], axis=1), radial)
    eyes = face[_EYE_FLOOR]
    geometry = _FaceGeometry(
        frame=frame,
        face=face,
        narrow=side_widths(face),
        nose=face[31:36, 0],
        jaw_out=_unit(normal + radial, radial),
        eyes=eyes[np.argsort(eyes[:, 0])],
    )
    _LAST[:] = [(key, geometry)]
    return geometry


def outline(
    points: np.ndarray, params: ShapeParams, loop_reach: float, straps: bool = False
) -> MaskShape:
    """The mask's outline, centre line and loops on one face.

    Args:
        points: 68×2 landmarks in crop pixels.
        params: The cut of this mask.
        loop_reach: How far ear loops or straps reach out past the corners (0: none).
        straps: Head straps (two a side, as on an N95) instead of ear loops.

    Raises:
        M2FError: The landmarks give no usable outline (it would be degenerate).
    """
    g = _face_geometry(points)
    frame, face, narrow, nose = g.frame, g.face, g.narrow, g.nose

    top = np.array([_edge_at(face[27:31], params.top), params.top])
    bottom = face[8] + (0.0, params.chin)

    # The jaw line 2…14, standing off the face along its outward normal and, near the
    # chin, hanging below it; on a turned head the far side stands off less.
    jaw = face[2:15].copy()
    out = g.jaw_out
    side = np.where(np.arange(13) < 6, narrow[0], narrow[1])
    jaw += (params.spread * (_HANG + (1 - _HANG) * side))[:, None] * out
    jaw[:, 1] += params.chin * _HANG
    # However far the head turns, the mask covers the nose: its sides stay outside it.
    jaw[:4, 0] = np.minimum(jaw[:4, 0], nose.min() - 0.04)
    jaw[-4:, 0] = np.maximum(jaw[-4:, 0], nose.max() + 0.04)

    # The top corners sit on the face's edge, wrapped a little round the cheeks.
    left = np.array([_edge_at(face[0:5], params.corner), params.corner])
    right = np.array([_edge_at(face[16:11:-1], params.corner), params.corner])
    left[0] = min(left[0] - params.spread * narrow[0], nose.min() - 0.06)
    right[0] = max(right[0] + params.spread * narrow[1], nose.max() + 0.06)

    # The top edge runs from the nose bridge under the eyes and drops to the corners; the
    # sag pulls it down over the cheeks.
    eyes = g.eyes
    under_left = np.array([face[36:42, 0].mean(), face[40:42, 1].max() + params.cheek])
    under_right = np.array([face[42:48, 0].mean(), face[46:48, 1].max() + params.cheek])
    dip = np.array([0.0, params.sag])

    def through(start: np.ndarray, via: np.ndarray, end: np.ndarray) -> np.ndarray:
        # The quadratic Bézier that passes through ``via`` half-way.
        return _bezier(start, 2 * via - 0.5 * (start + end), end, 9)

    top_edge = np.concatenate(
        [through(left, under_left + dip, top), through(top, under_right + dip, right)[1:]]
    )
    poly = _chaikin(np.concatenate([top_edge, jaw[::-1]]), params.smooth)

    # Never over the eyes: points under the lower eyelids stay below the clearance line,
    # which keeps at least 3.5 px for the soft edge at small crop sizes.
    clearance = max(params.cheek, 3.5 / frame.h)
    for curve in (poly, top_edge):
        floor = np.interp(curve[:, 0], eyes[:, 0], eyes[:, 1] + clearance, -np.inf, -np.inf)
        curve[:, 1] = np.maximum(curve[:, 1], floor)
    top[1] = max(top[1], float(np.interp(top[0], eyes[:, 0], eyes[:, 1] + clearance)))

    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    if not (np.isfinite(poly).all() and area > 0.02):
        raise M2FError(f"the landmarks give a degenerate mask outline (area {area:.3g})")

    loops: list[np.ndarray] = []
    sides = ((left, jaw[1], -1.0), (right, jaw[11], 1.0)) if loop_reach > 0 else ()
    for upper, lower, sign in sides:
        # What shows of a loop shrinks with the foreshortened side of a turned head.
        reach = sign * loop_reach * min(abs(upper[0] - top[0]) / 0.6, 1.2)
        if straps:
            # Head straps run back above and below the ear, not round it.
            bend, end = np.array([0.6 * reach, -0.08]), np.array([reach, -0.2])
            loops.append(_bezier(upper, upper + bend, upper + end, 4))
            bend, end = np.array([0.6 * reach, 0.0]), np.array([reach, 0.05])
            loops.append(_bezier(lower, lower + bend, lower + end, 4))
        else:
            ear = 0.5 * (upper + lower) + (reach, -0.1)
            loops.append(_bezier(upper, ear, lower, 12))

    to_crop = frame.to_crop
    return MaskShape(
        frame=frame,
        outline=to_crop(poly),
        top=to_crop(top),
        bottom=to_crop(bottom),
        top_edge=to_crop(top_edge),
        loops=tuple(to_crop(loop) for loop in loops),
        top_curve=_increasing(top_edge),
        bottom_curve=_increasing(jaw),
        centre_line=np.stack([top, bottom]),
        half_widths=(max(top[0] - poly[:, 0].min(), 0.05), max(poly[:, 0].max() - top[0], 0.05)),
    )
