"""Synthetic masks drawn into whole photos: a ``masked-folder`` dataset from any faces.

A real-mask evaluation needs people photographed with and without masks. Where no such
set is at hand, this writes one from any identity dataset: for each person with at least
two photos, a seeded share of the photos (never all) get a synthetic mask drawn on the
face — aligned, masked as in the benchmark, and warped back into the photo through the
inverse of the alignment, only where the mask's hole is — and are saved as JPEG into
``<out>/<identity>/masked/``; the others are copied to ``<out>/<identity>/``. The
real-mask protocol then runs detection, alignment and mask finding on the masked photos
from scratch, as it would on real ones. Masks drawn this way are not real ones: the
results say how the pipeline behaves, not how real masks are recognised.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from m2f_bench._io import atomic_write_bytes, read_image
from m2f_bench.errors import M2FError
from m2f_bench.masks.synth import MASK_TYPES, apply_mask


def paint_mask(photo: np.ndarray, face, mask_type: str, image_id: str, seed: int) -> np.ndarray:
    """``photo`` with a synthetic mask drawn on the aligned ``face`` (an AlignedFace)."""
    masked = apply_mask(face.crop, face.landmarks, mask_type, image_id=image_id, seed=seed)
    inverse = cv2.invertAffineTransform(face.matrix)
    size = (photo.shape[1], photo.shape[0])
    drawn = cv2.warpAffine(masked.image, inverse, size, flags=cv2.INTER_LINEAR)
    where = cv2.warpAffine(masked.hole.astype(np.uint8), inverse, size, flags=cv2.INTER_NEAREST)
    out = photo.copy()
    out[where > 0] = drawn[where > 0]
    return out


@dataclass
class PaintSummary:
    people: int = 0
    masked: int = 0
    clean: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def paint_masked_folder(
    records,
    aligner,
    out_dir: str | Path,
    *,
    share: float = 0.5,
    seed: int = 0,
    mask_types: tuple[str, ...] | None = None,
    quality: int = 92,
    progress: bool = True,
) -> PaintSummary:
    """Write a ``masked-folder`` dataset into ``out_dir`` (see the module docstring).

    Args:
        records: Dataset records (image_id, identity, path).
        aligner: A FaceAligner.
        out_dir: The folder to write (``<identity>/`` and ``<identity>/masked/``).
        share: Share of each person's photos that get a mask (at least one, never all).
        seed: Which photos, which mask types, and the masks themselves.
        mask_types: Types dealt out (default: all).
        quality: JPEG quality of the masked photos.
    """
    from m2f_bench._progress import progress_bar

    if not 0 < share < 1:
        raise M2FError(f"share must be between 0 and 1, got {share}")
    types = tuple(mask_types or MASK_TYPES)
    by_person: dict[str, list] = {}
    for r in records:
        by_person.setdefault(r.identity, []).append(r)
    people = {k: v for k, v in sorted(by_person.items()) if len(v) >= 2}
    out_dir = Path(out_dir)
    summary = PaintSummary(people=len(people))
    bar = progress_bar(sum(map(len, people.values())), "paint masks", enabled=progress)
    for identity, photos in people.items():
        order = sorted(
            photos, key=lambda r: hashlib.sha256(f"{seed}:{r.image_id}".encode()).hexdigest()
        )
        n_masked = min(len(photos) - 1, max(1, round(share * len(photos))))
        for k, record in enumerate(order):
            folder = out_dir / identity
            try:
                if k >= n_masked:
                    data = Path(record.path).read_bytes()
                    atomic_write_bytes(folder / Path(record.path).name, data)
                    summary.clean += 1
                    continue
                photo = read_image(record.path)
                face = aligner.align(photo)
                mask_type = types[
                    int(hashlib.sha256(record.image_id.encode()).digest()[0]) % len(types)
                ]
                painted = paint_mask(photo, face, mask_type, record.image_id, seed)
                ok, data = cv2.imencode(
                    ".jpg", painted[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality]
                )
                if not ok:
                    raise M2FError("JPEG encoding failed")
                atomic_write_bytes(
                    folder / "masked" / f"{Path(record.path).stem}.jpg", data.tobytes()
                )
                summary.masked += 1
            except Exception as exc:  # one photo must not stop the others
                text = str(exc) if isinstance(exc, M2FError) else f"{type(exc).__name__}: {exc}"
                summary.failed.append((str(record.path), text))
            finally:
                bar.update(1)
    bar.close()
    return summary
