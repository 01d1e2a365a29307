"""A tiny dataset built from face photos that ship inside the dependencies.

No download and no model home: scikit-image's ``astronaut`` (Eileen Collins),
insightface's ``t1.jpg`` group photo (each of its six faces cut out as its own image)
and insightface's ``Tom_Hanks_54745.png`` chip (padded so a detector sees some
background). Every image shows a different person, so there are no verification pairs;
it is for pixel metrics and identity similarity on any fresh machine, offline.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Self

import cv2
import numpy as np

from m2f_bench._io import read_image, write_png
from m2f_bench.data.base import FaceDataset, FaceRecord, Pair
from m2f_bench.settings import Settings, cache_dir


def _insightface_image(name: str) -> Path:
    import insightface

    return Path(insightface.__file__).parent / "data" / "images" / name


def _group_faces(photo: np.ndarray) -> list[np.ndarray]:
    """Each face of a group photo as a square cut-out, left to right."""
    import dlib

    rects = dlib.get_frontal_face_detector()(photo, 1)
    h, w = photo.shape[:2]
    cuts = []
    for r in sorted(rects, key=lambda r: r.left()):
        cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
        half = 1.2 * max(r.width(), r.height())
        x1, y1 = int(max(0, cx - half)), int(max(0, cy - half))
        x2, y2 = int(min(w, cx + half)), int(min(h, cy + half))
        cuts.append(np.ascontiguousarray(photo[y1:y2, x1:x2]))
    return cuts


@cache
def _materialise(root: Path) -> list[tuple[str, Path]]:
    from skimage import data

    images: list[tuple[str, np.ndarray]] = [("astronaut", data.astronaut())]
    for i, face in enumerate(_group_faces(read_image(_insightface_image("t1.jpg"))), 1):
        images.append((f"t1_face{i}", face))
    chip = read_image(_insightface_image("Tom_Hanks_54745.png"))
    images.append(("Tom_Hanks", cv2.copyMakeBorder(chip, 56, 56, 56, 56, cv2.BORDER_REFLECT)))
    out = []
    for name, image in images:
        path = root / f"{name}.png"
        if not path.is_file():
            write_png(path, image)
        out.append((name, path))
    return out


class DemoFaces(FaceDataset):
    """Faces that ship with scikit-image and insightface; one image per person.

    Args:
        root: Where the images are written on first use.
    """

    name = "demo"
    default_dirname = "demo"
    has_splits = False

    def __init__(self, root: Path | str, **_: Any) -> None:
        self.root = Path(root)

    @classmethod
    def open(cls, settings: Settings, root: Path | None = None, **options: Any) -> Self:
        """The demo set lives in the user cache: the data home may be read-only."""
        return cls(root or cache_dir() / "demo", **options)

    def records(self) -> list[FaceRecord]:
        return [
            FaceRecord(image_id=name, identity=name, path=path, fold=1, split="test")
            for name, path in _materialise(self.root.resolve())
        ]

    def pairs(self) -> list[Pair]:
        return []
