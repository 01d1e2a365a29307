"""``m2f-bench unmask``: take the masks off the faces in real photos.

For every face SCRFD finds in a photo (any size, EXIF rotation applied, grey or colour,
PNG alpha composited on white): align it into a 128-px crop, let a segmenter find the
mask, fill that hole with an inpainter, and paste the restored crop back into the photo
through the inverse of the alignment warp, blended with a feathered alpha that is the
(dilated, blurred) hole faded out towards the crop border. Faces where no mask is found
are left untouched. Pixels that no pasted hole reaches stay the input's, bit for bit.

Per photo three files are written atomically: the result, a before|after side-by-side
and a JSON record of the faces (box, keypoints, score, mask found, hole coverage) and
timings. A photo whose JSON exists (for the same model) is skipped, so an interrupted
folder run resumes where it stopped; a bad file gets its one-line reason and the batch
goes on.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from m2f_bench._io import atomic_write_bytes, atomic_write_json, read_image
from m2f_bench.errors import BadImageError, M2FError
from m2f_bench.segmenters import mask_found

log = logging.getLogger(__name__)

#: Photos above this many pixels are refused (decoding alone would take seconds and GBs).
MAX_PIXELS = 60_000_000
#: Faces whose detector box has a shorter side than this (photo pixels) are not restored.
MIN_FACE = 32
#: Side of the aligned crop the models work on.
CROP_SIZE = 128
#: Torch's thread count is process-wide: one photo at a time changes it.
_THREADS = threading.Lock()


@dataclass
class FaceRecord:
    """One detected face of a photo and what was done with it."""

    box: list[float]
    keypoints: list[list[float]]
    score: float
    status: str  # "restored", "no mask", "too small"
    mask_found: bool = False
    hole_coverage: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "box": [round(v, 1) for v in self.box],
            "keypoints": [[round(x, 1), round(y, 1)] for x, y in self.keypoints],
            "score": round(self.score, 4),
            "status": self.status,
            "mask_found": self.mask_found,
            "hole_coverage": round(self.hole_coverage, 4),
        }


@dataclass
class PhotoResult:
    """The restored photo, its faces, and milliseconds per stage."""

    image: np.ndarray
    faces: list[FaceRecord]
    timings_ms: dict[str, float] = field(default_factory=dict)


def iter_photos(
    inputs: Iterable[str | Path], exclude: Path | None = None
) -> Iterator[tuple[Path, Path]]:
    """(file, path relative to its input) for each input file and every file under each
    input folder (recursively, hidden files and anything under ``exclude`` — the output
    folder — skipped, sorted). A missing input is yielded as is, so it gets its own error
    line."""
    exclude = exclude.resolve() if exclude is not None else None
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            for path in sorted(item.rglob("*")):
                rel = path.relative_to(item)
                if exclude is not None and path.resolve().is_relative_to(exclude):
                    continue
                if path.is_file() and not any(p.startswith(".") for p in rel.parts):
                    yield path, rel
        else:
            yield item, Path(item.name)


def output_names(photos: list[tuple[Path, Path]]) -> list[Path]:
    """Where each photo's outputs go, relative to the output folder, without suffix.

    The photo's relative path without its extension (``sub/x``); where two photos would
    share it (``x.jpg`` and ``x.png``, or two file arguments ``a/x.jpg`` and ``b/x.jpg``)
    the extension is kept (``x.jpg``), then a counter is added (``x.jpg-2``).
    """
    stems = [rel.parent / rel.stem for _, rel in photos]
    counts: dict[Path, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    names, taken = [], set()
    for (_, rel), stem in zip(photos, stems, strict=True):
        name = stem if counts[stem] == 1 else rel
        candidate, k = name, 1
        while candidate in taken:
            k += 1
            candidate = name.with_name(f"{name.name}-{k}")
        taken.add(candidate)
        names.append(candidate)
    return names


def _source_fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _check_pixels(path: Path) -> None:
    """Refuse a photo over :data:`MAX_PIXELS` from its header, before decoding it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
    except Exception:  # not an image, corrupt ...: read_image says which, in one line
        return
    if width * height > MAX_PIXELS:
        raise BadImageError(
            f"photo too large ({width}×{height} px = {width * height / 1e6:.0f} MP; the "
            f"limit is {MAX_PIXELS / 1e6:.0f} MP): downscale it first"
        )


def is_grey(image: np.ndarray) -> bool:
    """Whether an RGB photo is greyscale (its channels equal within JPEG noise)."""
    small = image[:: max(1, image.shape[0] // 64), :: max(1, image.shape[1] // 64)]
    small = small.astype(np.int16)
    spread = np.abs(small[..., 0] - small[..., 1]) + np.abs(small[..., 1] - small[..., 2])
    return float(np.mean(spread)) < 2.0


class Unmasker:
    """Detector, segmenter and inpainter, loaded once for many photos.

    Args:
        settings: Where the SCRFD model file is.
        model: Inpainter name (default ``unet-gan-blind``) or an inpainter spec mapping.
        segmenter: Segmenter spec for an inpainter that is not blind (default
            ``mask-unet``); a blind inpainter uses its own unless one is given.
        device: ``cpu`` or ``cuda``.
        min_face: Shortest detector-box side (photo pixels) of a face worth restoring.
        det_size: SCRFD input side (default 640: faces down to ~16 px in a 1280-px photo).
        threshold: SCRFD face probability.
        feather: Blur (crop pixels) of the paste-back alpha at the hole's edge.
        threads: CPU threads for the detector and the networks. One by default: a photo
            holds a handful of faces, and on this project's 2-core VM two threads made
            each small forward pass erratic (0.3–0.6 s instead of 10 ms) while one kept
            it steady.
    """

    def __init__(
        self,
        settings: Any,
        model: str | dict[str, Any] = "unet-gan-blind",
        segmenter: str | dict[str, Any] | None = None,
        *,
        device: str = "cpu",
        min_face: int = MIN_FACE,
        det_size: int = 640,
        threshold: float = 0.5,
        feather: float = 2.0,
        threads: int | None = 1,
    ) -> None:
        from m2f_bench.evaluation.holes import hole_predictor, split_hole_args
        from m2f_bench.evaluation.runner import _device_arg
        from m2f_bench.faces.align import CropGeometry
        from m2f_bench.faces.detect import SCRFDDetector
        from m2f_bench.hub import model_path
        from m2f_bench.inpainters import INPAINTERS, build_inpainter
        from m2f_bench.inpainters.base import file_digest

        spec = {"type": model} if isinstance(model, str) else dict(model)
        spec.update({"hole": "predicted"} | ({"segmenter": segmenter} if segmenter else {}))
        factory = INPAINTERS.get(spec["type"])
        spec |= _device_arg(factory, spec, device)  # only to inpainters that take a device
        spec, source = split_hole_args(spec, factory)
        self.model = spec
        self.segmenter = source.segmenter
        self.inpainter = build_inpainter(spec)
        self.predict_holes, hole_model = hole_predictor(source, self.inpainter, device)
        self.fingerprint = self.inpainter.fingerprint() | hole_model
        scrfd = model_path("scrfd_500m_kps.onnx", settings)
        self.detector = SCRFDDetector(
            scrfd, input_size=det_size, threshold=threshold, threads=threads, device=device
        )
        self.threads = threads
        self.detector_settings = {
            "scrfd_sha256": file_digest(scrfd),
            "det_size": det_size,
            "threshold": threshold,
        }
        self.geometry = CropGeometry(CROP_SIZE)
        self.min_face = min_face
        self.feather = feather
        self._border = self._border_alpha(CROP_SIZE)

    @staticmethod
    def _border_alpha(size: int) -> np.ndarray:
        """1 inside the crop, fading to 0 over its outer 6 % (no seam at the crop edge)."""
        ramp = np.clip(np.minimum(np.arange(size), np.arange(size)[::-1]) / (0.06 * size), 0, 1)
        return np.minimum.outer(ramp, ramp).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """Everything the outputs depend on, for the JSON records and the resume check (as
        JSON reads it back)."""
        return json.loads(
            json.dumps(
                {
                    "inpainter": self.model,
                    "segmenter": self.segmenter,
                    "fingerprint": self.fingerprint,
                    "detector": self.detector_settings,
                    "min_face": self.min_face,
                    "feather": self.feather,
                    "crop_size": CROP_SIZE,
                }
            )
        )

    def unmask(self, image: np.ndarray) -> PhotoResult:
        """Restore every masked face of an RGB uint8 photo.

        Raises:
            BadImageError: The photo is not H×W×3 uint8, or too large.
        """
        if self.threads is None:
            return self._unmask(image)
        import torch

        with _THREADS:
            before = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            try:
                return self._unmask(image)
            finally:
                torch.set_num_threads(before)

    def _unmask(self, image: np.ndarray) -> PhotoResult:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise BadImageError(f"expected an RGB uint8 photo, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        if h * w > MAX_PIXELS:
            raise BadImageError(
                f"photo too large ({w}×{h} px = {h * w / 1e6:.0f} MP; the limit is "
                f"{MAX_PIXELS / 1e6:.0f} MP): downscale it first"
            )
        timings: dict[str, float] = {}
        t = time.perf_counter()
        detections = self.detector.detect(image) if min(h, w) >= 16 else []
        timings["detect"] = (time.perf_counter() - t) * 1000
        faces, crops, matrices = [], [], []
        t = time.perf_counter()
        for det in detections:
            side = float(min(det.box[2] - det.box[0], det.box[3] - det.box[1]))
            record = FaceRecord(
                box=[float(v) for v in det.box],
                keypoints=[[float(x), float(y)] for x, y in det.keypoints],
                score=det.score,
                status="too small" if side < self.min_face else "no mask",
            )
            faces.append(record)
            if record.status == "too small":
                continue
            matrix = self.geometry.alignment(det.keypoints)
            crops.append(self.geometry.warp(image, matrix))
            matrices.append((record, matrix))
        timings["align"] = (time.perf_counter() - t) * 1000
        result = image.copy()
        if crops:
            batch = np.stack(crops)
            t = time.perf_counter()
            holes = self.predict_holes(batch)
            timings["segment"] = (time.perf_counter() - t) * 1000
            found = mask_found(holes)
            t = time.perf_counter()
            restored = self.inpainter(batch[found], holes[found]) if found.any() else batch[:0]
            timings["inpaint"] = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            grey = is_grey(image)
            k = 0
            for (record, matrix), hole, has_mask in zip(matrices, holes, found, strict=True):
                record.hole_coverage = float(hole.mean())
                if not has_mask:
                    continue
                record.mask_found, record.status = True, "restored"
                face = restored[k]
                k += 1
                if grey:
                    g = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
                    face = np.repeat(g[..., None], 3, axis=2)
                self._paste(result, face, hole, matrix)
            timings["paste"] = (time.perf_counter() - t) * 1000
        timings["total"] = sum(timings.values())
        return PhotoResult(result, faces, {k: round(v, 2) for k, v in timings.items()})

    def _paste(self, photo: np.ndarray, face: np.ndarray, hole: np.ndarray, matrix) -> None:
        """Blend ``face`` into ``photo`` (in place) where its hole maps, feathered."""
        alpha = hole.astype(np.float32)
        if self.feather > 0:
            grown = cv2.dilate(alpha, np.ones((3, 3), np.uint8))
            alpha = np.maximum(alpha, cv2.GaussianBlur(grown, (0, 0), self.feather))
        alpha *= self._border
        inverse = cv2.invertAffineTransform(matrix)
        # Warp only over the photo window the crop covers.
        corners = np.array([[0, 0], [CROP_SIZE, 0], [0, CROP_SIZE], [CROP_SIZE, CROP_SIZE]], float)
        mapped = corners @ inverse[:, :2].T + inverse[:, 2]
        x0, y0 = np.floor(mapped.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(mapped.max(axis=0)).astype(int) + 1
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, photo.shape[1]), min(y1, photo.shape[0])
        if x1 <= x0 or y1 <= y0:
            return
        shifted = inverse.copy()
        shifted[:, 2] -= (x0, y0)
        size = (x1 - x0, y1 - y0)
        warped = cv2.warpAffine(face, shifted, size, flags=cv2.INTER_CUBIC)
        a = cv2.warpAffine(alpha, shifted, size, flags=cv2.INTER_LINEAR, borderValue=0)
        window = photo[y0:y1, x0:x1]
        touched = a > 1e-3
        blend = window * (1 - a[..., None]) + warped.astype(np.float32) * a[..., None]
        window[touched] = np.clip(np.rint(blend[touched]), 0, 255).astype(np.uint8)


def side_by_side(before: np.ndarray, after: np.ndarray, gap: int = 8) -> np.ndarray:
    """Before | after on one canvas with a white gap."""
    h, w = before.shape[:2]
    canvas = np.full((h, 2 * w + gap, 3), 255, np.uint8)
    canvas[:, :w], canvas[:, w + gap :] = before, after
    return canvas


def _encode(image: np.ndarray, suffix: str) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if suffix == ".jpg" else []
    ok, data = cv2.imencode(suffix, image[..., ::-1], params)
    if not ok:
        raise M2FError(f"cannot encode the result as {suffix}")
    return data.tobytes()


def _done(record_path: Path, described: dict[str, Any], source: dict[str, Any]) -> bool:
    """Whether a photo's outputs exist for this photo (same file) and these settings."""
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return False
    return (
        record.get("model") == described
        and record.get("source") == source
        and all((record_path.parent / name).is_file() for name in record.get("outputs") or ["?"])
    )


@dataclass
class BatchSummary:
    """Counts over a batch of photos."""

    photos: int = 0
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    no_face: int = 0
    faces: int = 0
    too_small: int = 0
    masks_found: int = 0
    seconds: list[float] = field(default_factory=list)


def writable_folder(out_dir: str | Path) -> Path:
    """Create ``out_dir`` (and its parents) and check that files can be written there.

    Raises:
        M2FError: It is a file, lies under a file, or cannot be created or written to.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise M2FError(
            f"cannot create the output folder {out_dir}: {exc.strerror or exc}"
        ) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise M2FError(f"cannot write to the output folder {out_dir}")
    return out_dir


def unmask_files(
    unmasker: Unmasker,
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    on_error=None,
    on_note=None,
) -> BatchSummary:
    """Unmask every photo of ``inputs`` into ``out_dir`` (see the module docstring).

    Args:
        unmasker: The loaded models.
        inputs: Photo files and folders.
        out_dir: Output folder; a photo's outputs keep its path relative to its input.
        overwrite: Redo photos that already have results.
        progress: Show a progress bar.
        on_error: Called with (path, message) for each photo that failed.
        on_note: Called with (path, message) for each photo done with nothing to restore
            or with faces too small to restore.
    """
    from m2f_bench._progress import progress_bar

    out_dir = writable_folder(out_dir)
    photos = list(iter_photos(inputs, exclude=out_dir))
    summary = BatchSummary(photos=len(photos))
    described = unmasker.describe()
    bar = progress_bar(len(photos), "unmask", unit="photo", enabled=progress)
    for (path, _), name in zip(photos, output_names(photos), strict=True):
        stem = out_dir / name
        record_path = stem.with_name(stem.name + ".json")
        try:
            source = _source_fingerprint(path) if path.is_file() else None
            if not overwrite and source is not None and _done(record_path, described, source):
                summary.skipped += 1
                continue
            start = time.perf_counter()
            _check_pixels(path)
            image = read_image(path)
            decode_ms = (time.perf_counter() - start) * 1000
            result = unmasker.unmask(image)
            suffix = ".jpg" if path.suffix.lower() in (".jpg", ".jpeg") else ".png"
            unmasked = stem.with_name(stem.name + ".unmasked" + suffix)
            compare = stem.with_name(stem.name + ".compare.jpg")
            atomic_write_bytes(unmasked, _encode(result.image, suffix))
            atomic_write_bytes(compare, _encode(side_by_side(image, result.image), ".jpg"))
            seconds = time.perf_counter() - start
            atomic_write_json(
                record_path,
                {
                    "source": source,
                    "outputs": [unmasked.name, compare.name],
                    "size": [int(image.shape[1]), int(image.shape[0])],
                    "grey": is_grey(image),
                    "model": described,
                    "faces": [f.as_dict() for f in result.faces],
                    "timings_ms": {"decode": round(decode_ms, 2), **result.timings_ms}
                    | {"with_io": round(seconds * 1000, 2)},
                },
            )
            summary.done += 1
            summary.faces += len(result.faces)
            summary.too_small += sum(f.status == "too small" for f in result.faces)
            summary.masks_found += sum(f.mask_found for f in result.faces)
            summary.seconds.append(seconds)
            small = sum(f.status == "too small" for f in result.faces)
            if not result.faces:
                summary.no_face += 1
            note = (
                "no face found; left as it is"
                if not result.faces
                else f"{small} of {len(result.faces)} faces smaller than {unmasker.min_face} "
                "px (detector box); left as they are"
                if small
                else None
            )
            if note and on_note is not None:
                on_note(path, note)
        except Exception as exc:  # one bad photo must not stop the batch
            message = str(exc) if isinstance(exc, M2FError) else f"{type(exc).__name__}: {exc}"
            summary.failed.append((str(path), message))
            if on_error is not None:
                on_error(path, message)
        finally:
            bar.update(1)
    bar.close()
    return summary
