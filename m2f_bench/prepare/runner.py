"""``m2f-bench prepare``: photos → aligned crops, landmarks, masked crops and hole masks.

Output folder layout::

    DIR/prepare.json                  settings, counts, timings, coverage per mask type
    DIR/manifest.csv                  one row per (image, mask type); one row per failed image
    DIR/crops/<image_id>.png          aligned crop
    DIR/landmarks/<image_id>.json     detection, keypoints, 68 landmarks, status (written last)
    DIR/masked/<type>/<image_id>.png  masked crop
    DIR/holes/<type>/<image_id>.png   hole mask (255 = pixel altered by the mask)

Every file is written atomically and an image's landmarks file is written after all its
other files, so it marks the image as done: a rerun with the same settings skips done
images (an interrupted run resumes), and a rerun with other settings redoes them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from m2f_bench import __version__
from m2f_bench._io import (
    atomic_write_json,
    atomic_write_text,
    read_image,
    write_mask_png,
    write_png,
)
from m2f_bench.data.base import FaceRecord
from m2f_bench.faces.pipeline import AlignerConfig, FaceAligner
from m2f_bench.prepare.layout import prepared_path as _rel

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "image_id",
    "identity",
    "fold",
    "split",
    "status",
    "reason",
    "det_score",
    "detector",
    "mask_type",
    "coverage",
    "crop_path",
    "masked_path",
    "hole_path",
    "landmarks_path",
]


@dataclass(frozen=True)
class PrepareConfig:
    """Everything that decides the content of prepared files.

    Which images are prepared (split, limit) is not part of it: it selects work, it does
    not change how an image is processed.
    """

    dataset: str
    dataset_root: str
    aligner: AlignerConfig
    mask_types: tuple[str, ...]
    seed: int = 0
    #: The dataset's options and image folder as JSON: two options of one dataset (CelebA's
    #: ``images:``, LFW's ``variant``) give the same image ids from different photos.
    dataset_source: str = "{}"

    def fingerprint(self) -> str:
        """Short digest of the settings and the package version.

        Threads and device are left out: they change the speed, not the files.
        """
        payload = asdict(self) | {"version": __version__}
        payload["aligner"] = {
            k: v for k, v in payload["aligner"].items() if k not in ("threads", "device")
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_source(dataset: Any, options: dict[str, Any] | None = None) -> str:
    """:attr:`PrepareConfig.dataset_source` of an opened dataset and its options."""
    images = getattr(dataset, "images_dir", "")
    return json.dumps(
        {"options": options or {}, "images": str(images)}, sort_keys=True, default=str
    )


@dataclass
class PrepareSummary:
    """What a prepare run did."""

    out_dir: Path
    n_images: int
    n_ok: int
    n_failed: int
    n_reused: int
    seconds: float
    coverage: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    mask_failures: dict[str, int] = field(default_factory=dict)
    n_pending: int = 0

    @property
    def images_per_second(self) -> float:
        done = self.n_images - self.n_reused
        return done / self.seconds if self.seconds > 0 else float("nan")


class _Worker:
    """Processes one record; one instance per process."""

    def __init__(self, config: PrepareConfig, out_dir: Path) -> None:
        from m2f_bench.masks import apply_mask

        self.config = config
        self.fingerprint = config.fingerprint()
        self.out_dir = out_dir
        self._apply_mask = apply_mask
        self._aligner: FaceAligner | None = None
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare-io")

    def close(self) -> None:
        self._io.shutdown()

    def _write(self, fn, rel: str, data: np.ndarray) -> Future:
        return self._io.submit(fn, self.out_dir / rel, data)

    @property
    def aligner(self) -> FaceAligner:
        if self._aligner is None:  # built on first use, inside the worker process
            self._aligner = self.config.aligner.build()
        return self._aligner

    def load_done(self, record: FaceRecord, mask_types: Sequence[str]) -> dict | None:
        path = self.out_dir / _rel("landmarks", record.image_id)
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if state.get("fingerprint") != self.fingerprint:
            return None
        if state.get("status") != "ok":
            return state if state.get("status") == "failed" else None
        rendered = set(state.get("coverage", {}))
        # A mask type that failed on this face fails the same way again: it counts as done.
        if not set(mask_types) <= rendered | set(state.get("mask_failures", {})):
            return None
        if not all(
            (self.out_dir / _rel(k, record.image_id, t)).is_file()
            for t in set(mask_types) & rendered
            for k in ("masked", "holes")
        ):
            return None
        return state

    def __call__(self, item: tuple[FaceRecord, tuple[str, ...]]) -> tuple[dict, bool]:
        record, mask_types = item
        done = self.load_done(record, mask_types)
        if done is not None:
            return done, True
        state: dict = {"fingerprint": self.fingerprint, "image_id": record.image_id}
        # PNG encoding and writing release the GIL: they run in a thread while the next
        # mask is drawn, and all of them finish before the done-marker is written.
        writes: list[Future] = []
        masks = []
        mask_failures: dict[str, str] = {}
        try:
            face = self.aligner.align(read_image(record.path))
            writes.append(self._write(write_png, _rel("crops", record.image_id), face.crop))
        except Exception as exc:  # any photo the pipeline cannot take is one failed row
            state |= _failure(exc)
        else:
            for mask_type in mask_types:
                try:
                    m = self._apply_mask(
                        face.crop,
                        face.landmarks,
                        mask_type,
                        image_id=record.image_id,
                        seed=self.config.seed,
                    )
                except Exception as exc:  # one mask type failing keeps the others
                    mask_failures[mask_type] = _reason(exc)
                    continue
                masks.append(m)
                writes.append(
                    self._write(write_png, _rel("masked", record.image_id, mask_type), m.image)
                )
                writes.append(
                    self._write(write_mask_png, _rel("holes", record.image_id, mask_type), m.hole)
                )
            state |= {
                "status": "ok",
                "reason": "",
                "detector": face.detector,
                "det_score": round(face.det_score, 6),
                "box": np.round(face.box, 2).tolist(),
                "keypoints": np.round(face.keypoints, 3).tolist(),
                "matrix": np.round(face.matrix, 8).tolist(),
                "landmarks": np.round(face.landmarks, 3).tolist(),
                "coverage": {m.mask_type: round(float(m.coverage), 6) for m in masks},
                "mask_failures": mask_failures,
            }
        try:
            for write in writes:
                write.result()  # re-raises a failed write
        except Exception as exc:
            state = {"fingerprint": self.fingerprint, "image_id": record.image_id}
            state |= _failure(exc, "writing: ")
        # Written last: its presence marks the image as done.
        atomic_write_json(self.out_dir / _rel("landmarks", record.image_id), state, indent=None)
        return state, False


def _reason(exc: BaseException) -> str:
    """One line: the exception's class and message."""
    message = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {message}"


def _failure(exc: BaseException, where: str = "") -> dict:
    return {"status": "failed", "reason": where + _reason(exc), "error": type(exc).__name__}


_WORKER: _Worker | None = None


def _init_worker(config: PrepareConfig, out_dir: Path) -> None:
    global _WORKER
    # Not cv2.setNumThreads here: in a forked child of a process that has used OpenCV's
    # thread pool it deadlocks (seen in the test suite).
    _WORKER = _Worker(config, out_dir)


def _run_in_worker(item: tuple[FaceRecord, tuple[str, ...]]) -> tuple[dict, bool]:
    assert _WORKER is not None
    return _WORKER(item)


def _rows(record: FaceRecord, state: dict, mask_types: Sequence[str]) -> Iterator[dict]:
    base = {
        "image_id": record.image_id,
        "identity": record.identity,
        "fold": record.fold,
        "split": record.split,
        "status": state["status"],
        "reason": state.get("reason", ""),
        "det_score": state.get("det_score"),
        "detector": state.get("detector", ""),
        "landmarks_path": _rel("landmarks", record.image_id),
    }
    if state["status"] != "ok":
        yield base | {
            "mask_type": "",
            "coverage": None,
            "crop_path": "",
            "masked_path": "",
            "hole_path": "",
        }
        return
    for mask_type in mask_types:
        failure = state.get("mask_failures", {}).get(mask_type)
        if failure is not None:
            yield base | {
                "status": "failed",
                "reason": f"mask {mask_type}: {failure}",
                "mask_type": mask_type,
                "coverage": None,
                "crop_path": _rel("crops", record.image_id),
                "masked_path": "",
                "hole_path": "",
            }
            continue
        yield base | {
            "mask_type": mask_type,
            "coverage": state["coverage"][mask_type],
            "crop_path": _rel("crops", record.image_id),
            "masked_path": _rel("masked", record.image_id, mask_type),
            "hole_path": _rel("holes", record.image_id, mask_type),
        }


def _progress(total: int, enabled: bool):
    from m2f_bench._progress import progress_bar

    return progress_bar(total, "prepare", enabled=enabled)


def _write_summary(
    out_dir: Path,
    config: PrepareConfig,
    done: list[tuple[tuple[FaceRecord, tuple[str, ...]], dict]],
    n_images: int,
    n_reused: int,
    seconds: float,
    workers: int,
    *,
    interrupted: bool,
) -> PrepareSummary:
    """Write ``manifest.csv`` and ``prepare.json`` for the finished images."""
    rows = [row for (r, types), s in done for row in _rows(r, s, types)]
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    atomic_write_text(out_dir / "manifest.csv", manifest.to_csv(index=False))

    ok = manifest[manifest.status == "ok"]
    coverage = {
        t: {
            "mean": float(g.coverage.mean()),
            "min": float(g.coverage.min()),
            "max": float(g.coverage.max()),
        }
        for t, g in ok.groupby("mask_type", sort=False)
    }
    failed = [s for _, s in done if s["status"] != "ok"]
    failures: dict[str, int] = {}
    for s in failed:
        failures[s["error"]] = failures.get(s["error"], 0) + 1
    mask_failures = {
        t: int(n)
        for t, n in manifest[manifest.status == "failed"].mask_type.value_counts().items()
        if t
    }
    summary = PrepareSummary(
        out_dir=out_dir,
        n_images=n_images,
        n_ok=len(done) - len(failed),
        n_failed=len(failed),
        n_reused=n_reused,
        seconds=seconds,
        coverage=coverage,
        failures=failures,
        mask_failures=mask_failures,
        n_pending=n_images - len(done),
    )
    atomic_write_json(
        out_dir / "prepare.json",
        {
            "m2f_bench_version": __version__,
            "fingerprint": config.fingerprint(),
            "config": asdict(config),
            "n_images": summary.n_images,
            "n_ok": summary.n_ok,
            "n_failed": summary.n_failed,
            "n_reused": summary.n_reused,
            "n_pending": summary.n_pending,
            "interrupted": interrupted,
            "seconds": round(seconds, 3),
            "workers": workers,
            "coverage_by_mask_type": coverage,
            "failure_reasons": failures,
            "mask_failures_by_type": mask_failures,
        },
    )
    return summary


def prepare(
    records: Sequence[FaceRecord],
    config: PrepareConfig,
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    progress: bool = True,
    assignment: Mapping[str, str] | None = None,
) -> PrepareSummary:
    """Prepare ``records`` into ``out_dir`` and write ``manifest.csv`` and ``prepare.json``.

    ``manifest.csv`` and ``prepare.json`` are written however the run ends: interrupted
    (Ctrl-C, a worker killed), they list every image finished so far, and the exception
    is raised again once they are on disk.

    Args:
        records: The images, in manifest order.
        config: How to process them.
        out_dir: Output folder (created).
        workers: Processes; each runs detection with one ONNX Runtime thread.
        progress: Show a progress bar.
        assignment: Image id → the one mask type to render for it (an evaluation masks
            each image once); without it every image gets every type of ``config``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = [r.image_id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("image ids must be unique")
    types_of = [
        (assignment[r.image_id],) if assignment is not None else config.mask_types for r in records
    ]
    items = list(zip(records, types_of, strict=True))
    start = time.perf_counter()
    states: list[dict | None] = [None] * len(records)
    n_reused = 0
    interrupted: BaseException | None = None
    bar = _progress(len(records), progress)
    if workers <= 1:
        worker = _Worker(config, out_dir)
        results: Iterator[tuple[dict, bool]] = map(worker, items)
        pool = None
    else:
        # fork: workers inherit the loaded modules and nothing re-imports the caller's
        # __main__ (spawn would, re-running an unguarded script). No ONNX session exists
        # before the fork; each worker builds its own.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(config, out_dir))
        results = pool.imap(_run_in_worker, items, chunksize=4)
    try:
        for i, (state, reused) in enumerate(results):
            states[i] = state
            n_reused += reused
            bar.update()
    except BaseException as exc:  # Ctrl-C, a killed worker: keep what is finished
        interrupted = exc
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    seconds = time.perf_counter() - start
    if interrupted is not None:
        # Images finished out of order by other workers are on disk: count them too.
        reader = _Worker(config, out_dir)
        for i, item in enumerate(items):
            if states[i] is None:
                states[i] = reader.load_done(*item)
        reader.close()

    done = [(item, s) for item, s in zip(items, states, strict=True) if s is not None]
    summary = _write_summary(
        out_dir,
        config,
        done,
        len(records),
        n_reused,
        seconds,
        workers,
        interrupted=interrupted is not None,
    )
    if interrupted is not None:
        raise interrupted
    return summary
