"""``m2f-bench evaluate``: a protocol in, per-item tables, aggregates and a report out.

Stages, each resumable:

1. prepare — detect, align, landmark and mask every selected image once (one seeded mask
   type per image, balanced over types) into ``DIR/prepared/`` (see :mod:`m2f_bench.prepare`);
2. inpaint — each inpainter's outputs into ``DIR/inpainted/<name>/<image_id>.png``; an
   interrupted run keeps what was written, a changed inpainter spec redoes its folder;
3. embed — every recognizer on the clean, masked and inpainted crops, cached in
   ``DIR/embeddings/``;
4. score — pixel metrics and identity similarity per image (``per_image.csv``) and raw
   pair scores per recognizer, scenario and inpainter (``pair_scores.csv``), saved
   before any threshold is chosen;
5. aggregate and report — :mod:`m2f_bench.evaluation.aggregate`, ``results.json``,
   ``summary.csv`` and ``report.html``.

An inpainter that fails gets its error recorded and the evaluation goes on without it.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from m2f_bench import __version__
from m2f_bench._io import (
    atomic_write_json,
    atomic_write_text,
    read_mask_png,
    write_mask_png,
    write_png,
)
from m2f_bench._progress import progress_bar
from m2f_bench.data import DATASETS
from m2f_bench.data.base import FaceDataset
from m2f_bench.errors import M2FError
from m2f_bench.evaluation.aggregate import aggregate, coverage_bin_labels
from m2f_bench.evaluation.check import check_files, check_protocol
from m2f_bench.evaluation.protocol import Protocol
from m2f_bench.evaluation.schema import PATHS
from m2f_bench.evaluation.selection import assign_masks, limit_selection, select
from m2f_bench.faces.align import CropGeometry
from m2f_bench.faces.pipeline import AlignerConfig
from m2f_bench.prepare.runner import PrepareConfig, dataset_source, prepare
from m2f_bench.settings import Settings

log = logging.getLogger(__name__)

_BATCH = 64
_PACKAGES = (
    "numpy",
    "opencv-python",
    "scikit-image",
    "onnxruntime",
    "onnxruntime-gpu",
    "insightface",
    "dlib-bin",
    "torch",
    "pandas",
)


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise M2FError(f"cannot read {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _stack(paths: Sequence[Path], reader=_read_rgb) -> np.ndarray:
    return np.stack([reader(p) for p in paths]) if paths else np.empty((0,))


def git_commit() -> str | None:
    """The commit of the m2f-bench checkout, with ``-dirty`` if it has local changes."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


#: Instruction-set extensions that select ONNX Runtime's, OpenCV's and PyTorch's kernels:
#: two machines with the same packages but other extensions can differ in the last bits of
#: a detection or embedding, and so in a few per-image values.
_SIMD_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
)


def environment() -> dict[str, Any]:
    """Python, OS, CPU and the versions of the packages that shape the numbers."""
    cpu = platform.processor() or platform.machine()
    name = simd = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name is None:
                name = cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and simd is None:
                flags = set(line.split(":", 1)[1].split())
                simd = " ".join(f for f in _SIMD_FLAGS if f in flags)
            if name is not None and simd is not None:
                break
    except OSError:
        pass
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        **({"cpu_simd": simd} if simd is not None else {}),
        "packages": packages,
    }


class _Evaluation:
    """State shared by the stages of one run."""

    def __init__(
        self,
        protocol: Protocol,
        settings: Settings,
        out_dir: Path,
        dataset: FaceDataset,
        *,
        limit: int | None,
        device: str,
        workers: int,
        progress: bool,
    ) -> None:
        self.protocol = protocol
        self.dataset = dataset
        self.settings = settings
        self.out_dir = out_dir
        self.limit = limit
        self.device = device
        self.workers = workers
        self.progress = progress
        self.geometry = CropGeometry(protocol.faces.size)
        self.timings: dict[str, Any] = {"inpaint": {}, "embed": {}}

    # -- stage 1 ------------------------------------------------------------------------
    def prepare(self) -> None:
        from m2f_bench.masks import MASK_TYPES

        spec = self.protocol.dataset
        dataset = self.dataset
        want_pairs = self.protocol.verification is not None and bool(self.protocol.recognizers)
        records, pairs = select(dataset, spec, with_pairs=want_pairs)
        types = self.protocol.masks.types or MASK_TYPES
        # Masks are dealt out over the whole selection, before --limit, so an image wears
        # the same mask whatever the limit.
        self.mask_of = assign_masks([r.image_id for r in records], types, self.protocol.masks.seed)
        if self.limit is not None and self.limit < len(records):
            records, pairs = limit_selection(records, pairs, self.limit, spec.seed)
        config = PrepareConfig(
            dataset=spec.name,
            dataset_root=str(dataset.root),
            aligner=AlignerConfig.resolve(
                self.settings,
                size=self.protocol.faces.size,
                detector=self.protocol.faces.detector,
                det_size=self.protocol.faces.det_size,
                threads=1 if self.workers > 1 else None,
                device=self.device,
            ),
            mask_types=tuple(types),
            seed=self.protocol.masks.seed,
            dataset_source=dataset_source(dataset, spec.options),
        )
        prepared = self.out_dir / "prepared"
        summary = prepare(
            records,
            config,
            prepared,
            workers=self.workers,
            progress=self.progress,
            assignment=self.mask_of,
        )
        manifest = pd.read_csv(prepared / "manifest.csv", keep_default_na=False)
        ok = manifest[manifest.status == "ok"]
        self.failures = manifest[manifest.status != "ok"][["image_id", "reason"]].to_dict("records")
        by_id = {r.image_id: r for r in records}
        self.records = [by_id[i] for i in ok.image_id]
        self.ids = [r.image_id for r in self.records]
        self.index = {i: k for k, i in enumerate(self.ids)}
        self.coverage = ok.coverage.astype(float).to_numpy()
        self.pairs = [p for p in pairs if p.a in self.index and p.b in self.index]
        self.n_dropped_pairs = len(pairs) - len(self.pairs)
        self.dataset_info = {
            "name": spec.name,
            "root": str(dataset.root),
            "split": spec.split if getattr(dataset, "has_splits", True) else None,
            "n_images": len(records),
            "n_pairs": len(pairs),
            # Images with no usable face, or whose one mask could not be drawn.
            "n_failed_images": len(records) - len(self.ids),
            "n_dropped_pairs": self.n_dropped_pairs,
        }
        if getattr(dataset, "missing", None):
            # Listed by the dataset's label files but absent from its image folder.
            self.dataset_info["n_listed_missing"] = int(dataset.missing)
        self.prepare_fingerprint = config.fingerprint()
        if not self.ids:
            raise M2FError(
                f"no image could be prepared; see {prepared / 'manifest.csv'} for the reasons"
            )
        self.timings["prepare"] = round(summary.seconds, 3)
        self.clean = _stack([self.out_dir / PATHS["crop"].format(image_id=i) for i in self.ids])
        self.masked = _stack(
            [
                self.out_dir / PATHS["masked"].format(image_id=i, mask_type=self.mask_of[i])
                for i in self.ids
            ]
        )
        self.holes = _stack(
            [
                self.out_dir / PATHS["hole"].format(image_id=i, mask_type=self.mask_of[i])
                for i in self.ids
            ],
            reader=read_mask_png,
        )
        self.landmarks = np.stack(
            [
                np.asarray(
                    json.loads((self.out_dir / PATHS["landmarks"].format(image_id=i)).read_text())[
                        "landmarks"
                    ]
                )
                for i in self.ids
            ]
        )

    # -- stage 2 ------------------------------------------------------------------------
    def inpaint(self, build, effective=lambda spec: spec) -> dict[str, dict[str, Any]]:
        """Run every inpainter; returns its status by name and keeps outputs on disk.

        ``effective`` adds what the run imposes on a spec (the device): it is part of the
        spec that is built, recorded and compared on resume, since a CUDA run may differ
        (fp16) from a CPU one.
        """
        from m2f_bench.evaluation.holes import hole_predictor, split_hole_args
        from m2f_bench.inpainters import INPAINTERS

        states: dict[str, dict[str, Any]] = {}
        self.predicted_holes: set[str] = set()
        for plugin in self.protocol.inpainters:
            label, spec = plugin.label, effective(plugin.spec())
            state: dict[str, Any] = {"spec": spec, "status": "ok", "error": ""}
            states[label] = state
            folder = self.out_dir / "inpainted" / label
            start = time.perf_counter()
            n_todo = 0
            try:
                inpainter_spec, source = split_hole_args(spec, INPAINTERS.get(spec["type"]))
                state["hole"] = source.mode
                if source.predicted:
                    self.predicted_holes.add(label)
                inpainter = build(inpainter_spec)
                predict, hole_model = hole_predictor(source, inpainter, self.device)
                # The model files' content and hidden defaults: a changed model at the same
                # path, or a changed default, redoes the outputs and their embeddings.
                state["model"] = inpainter.fingerprint() | hole_model
                signature = {
                    "spec": spec,
                    "model": state["model"],
                    "prepared": self.prepare_fingerprint,
                    "v": __version__,
                }
                n_todo = inpaint_cached(
                    folder,
                    self.ids,
                    self.masked,
                    inpainter,
                    signature,
                    holes=self.holes,
                    predict=predict,
                    desc=f"inpaint {label}",
                    progress=self.progress,
                )
            except Exception as exc:  # one failing inpainter must not stop the others
                log.error("inpainter %s failed: %s", label, exc)
                state |= {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            seconds = time.perf_counter() - start
            state["seconds"] = round(seconds, 3)
            n_todo = n_todo if state["status"] == "ok" else 0
            state["n_computed"] = n_todo
            state["images_per_second"] = round(n_todo / seconds, 2) if n_todo else None
            self.timings["inpaint"][label] = state["seconds"]
            if state["status"] == "ok":
                _carry_timing(folder, state, len(self.ids))
        return states

    # -- stage 3 ------------------------------------------------------------------------
    def embed(
        self,
        recognizers: dict[str, Any],
        inpainter_states: dict[str, dict[str, Any]],
        ok_labels: Sequence[str],
    ) -> dict[str, dict[str, np.ndarray]]:
        """Embeddings of every variant (clean, masked, each inpainter's), by recognizer,
        cached in ``embeddings/`` under a digest of everything the images depend on."""
        from m2f_bench.recognition import EmbeddingCache

        cache = EmbeddingCache(self.out_dir / "embeddings")
        embeddings: dict[str, dict[str, np.ndarray]] = {}
        for rec_label, recognizer in recognizers.items():
            start = time.perf_counter()
            mine: dict[str, np.ndarray] = {}
            embeddings[rec_label] = mine
            for variant in ["clean", "masked", *[f"inpainted/{x}" for x in ok_labels]]:
                label = variant.split("/", 1)[-1]
                if variant.startswith("inpainted/") and (
                    inpainter_states[label]["spec"]["type"] == "masked"
                ):
                    # The masked baseline's output is the masked crop: same embeddings.
                    mine[variant] = mine["masked"]
                    continue
                images = {"clean": self.clean, "masked": self.masked}.get(variant)
                if images is None:
                    images = self.outputs(label)
                mine[variant] = cache.get_or_compute(
                    recognizer,
                    f"{variant}-{self.variant_key(variant, inpainter_states)}",
                    self.ids,
                    functools.partial(_embed_ids, recognizer, self, images),
                )
            self.timings["embed"][rec_label] = round(time.perf_counter() - start, 3)
        return embeddings

    # -- stage 4 ------------------------------------------------------------------------
    @property
    def wants_id_sim(self) -> bool:
        """id_sim when the protocol lists it, or lists no metrics at all (the embeddings
        are computed anyway)."""
        p = self.protocol
        return "id_sim" in p.metrics or "metrics" not in p.model_fields_set

    def image_table(self) -> pd.DataFrame:
        """One row per prepared image: identity, fold, mask type, coverage and its bin."""
        bins = self.protocol.report.coverage_bins
        bin_labels = coverage_bin_labels(bins)
        bin_index = np.clip(np.digitize(self.coverage, bins[1:-1]), 0, len(bin_labels) - 1)
        return pd.DataFrame(
            {
                "image_id": self.ids,
                "identity": [r.identity for r in self.records],
                "fold": [r.fold for r in self.records],
                "mask_type": [self.mask_of[i] for i in self.ids],
                "coverage": self.coverage,
                "coverage_bin": [bin_labels[b] for b in bin_index],
            }
        )

    def per_image_table(
        self,
        metrics: Sequence[Any],
        recognizers: dict[str, Any],
        embeddings: dict[str, dict[str, np.ndarray]],
        ok_labels: Sequence[str],
    ) -> pd.DataFrame:
        """Pixel metrics and identity similarity of every (image, working inpainter)."""
        from m2f_bench.metrics.pixel import compute_metrics
        from m2f_bench.recognition import cosine

        start = time.perf_counter()
        base = self.image_table()
        tables = []
        for label in ok_labels:
            outputs = self.outputs(label)
            table = base.copy()
            table.insert(6, "inpainter", label)
            table.insert(7, "status", "ok")
            table.insert(8, "error", "")
            for name, values in compute_metrics(metrics, outputs, self.clean, self.holes).items():
                table[name] = values
            if self.predicted_holes:
                # How well the hole an inpainter filled matched the exact one (1 when it
                # was given the exact hole), and whether a mask was found at all.
                from m2f_bench.segmenters import hole_iou, mask_found

                if label in self.predicted_holes:
                    holes = self.predicted_holes_of(label)
                    table["hole_iou"] = hole_iou(holes, self.holes).astype(np.float64)
                    table["mask_found"] = mask_found(holes).astype(np.float64)
                else:  # given the exact hole: no segmenter ran
                    table["hole_iou"] = 1.0
                    table["mask_found"] = np.nan
            for rec_label in recognizers if self.wants_id_sim else ():
                emb = embeddings[rec_label]
                # float64 so that the CSV round-trips exactly and `report` reproduces means.
                table[f"id_sim.{rec_label}"] = cosine(
                    emb[f"inpainted/{label}"], emb["clean"]
                ).astype(np.float64)
            tables.append(table)
            del outputs
        if not tables:  # every inpainter failed: an empty table that still has its columns
            empty = base.iloc[0:0].copy()
            empty.insert(6, "inpainter", pd.Series(dtype=str))
            tables = [empty]
        self.timings["metrics"] = round(time.perf_counter() - start, 3)
        return pd.concat(tables, ignore_index=True)

    def variant_key(self, variant: str, inpainters: dict[str, dict[str, Any]]) -> str:
        """A digest of everything a variant's images depend on, for the embedding cache.

        Prepared faces (settings and mask of every image) and, for an inpainted variant,
        the inpainter's spec: change any of them and the cached embeddings are not reused.
        """
        parts: dict[str, Any] = {"prepared": self.prepare_fingerprint}
        if variant != "clean":
            parts["masks"] = self.mask_of
        if variant.startswith("inpainted/"):
            state = inpainters[variant.split("/", 1)[1]]
            parts["spec"] = state["spec"]
            if state.get("model"):
                parts["model"] = state["model"]
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def outputs(self, label: str) -> np.ndarray:
        folder = self.out_dir / "inpainted" / label
        return _stack([folder / f"{i}.png" for i in self.ids])

    def predicted_holes_of(self, label: str) -> np.ndarray:
        """The holes a ``hole: predicted`` inpainter filled (bool N×H×W)."""
        folder = self.out_dir / "inpainted" / label / "holes"
        return _stack([folder / f"{i}.png" for i in self.ids], reader=read_mask_png)


#: Columns added when an inpainter fills predicted holes (``hole: predicted``).
_HOLE_METRICS = {
    "hole_iou": {
        "higher_is_better": True,
        "description": "intersection over union of the hole the inpainter filled and the "
        "exact hole of the synthetic mask (1 for inpainters given the exact hole)",
    },
    "mask_found": {
        "higher_is_better": True,
        "description": "share of masked crops in which the segmenter found a mask (its hole "
        "reached min_coverage of the crop); empty for inpainters given the exact hole",
    },
}


def _pixel_metrics(names: Sequence[str]):
    from m2f_bench.metrics import METRICS

    return [METRICS.get(n) for n in names if n != "id_sim"]


def evaluate(
    protocol: Protocol,
    settings: Settings,
    out_dir: str | os.PathLike,
    *,
    limit: int | None = None,
    device: str = "cpu",
    workers: int = 2,
    progress: bool = True,
    protocol_file: str | None = None,
) -> dict[str, Any]:
    """Run a protocol and write its results into ``out_dir``.

    Args:
        protocol: The validated protocol.
        settings: Data and model homes.
        out_dir: Output folder; a rerun into the same folder resumes.
        limit: Use only the first N selected images (and the pairs among them).
        device: ``cpu`` or ``cuda`` for the recognizers and inpainters that can use it.
        workers: Processes for the prepare stage.
        progress: Show progress bars.
        protocol_file: Path the protocol came from, for the record.

    Returns:
        The content of ``results.json``.
    """
    from m2f_bench.inpainters import INPAINTERS, build_inpainter
    from m2f_bench.recognition import RECOGNIZERS, build_recognizer
    from m2f_bench.reporting import render_report, write_summary_csv

    out_dir = Path(out_dir)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    check_protocol(protocol, protocol_file or protocol.name)
    metrics = _pixel_metrics(protocol.metrics)
    spec = protocol.dataset
    # The dataset first: a missing dataset is the likeliest problem and the cheapest check.
    dataset = DATASETS.get(spec.name).open(settings, spec.root, **spec.options)
    # Every model file before any stage runs: a missing one must not cost a prepare stage.
    check_files(protocol, settings, protocol_file or protocol.name)
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: a failed check leaves no folder
    if getattr(dataset, "real_masks", False):
        from m2f_bench.evaluation.realmask import evaluate_real_masks

        return evaluate_real_masks(
            protocol,
            settings,
            out_dir,
            dataset,
            limit=limit,
            device=device,
            progress=progress,
            protocol_file=protocol_file,
        )

    run = _Evaluation(
        protocol,
        settings,
        out_dir,
        dataset,
        limit=limit,
        device=device,
        workers=workers,
        progress=progress,
    )
    run.prepare()
    # Recognizers load their ONNX sessions only now: prepare forks worker processes, and
    # a process should not fork while ONNX Runtime sessions are alive.
    recognizers = {}
    for r in protocol.recognizers:
        spec = {"type": r.type, **r.args}
        extra = _device_arg(RECOGNIZERS.get(r.type), r.args, device)
        recognizers[r.label] = build_recognizer(spec | extra, settings)
    inpainter_states = run.inpaint(
        build_inpainter,
        lambda spec: spec | _device_arg(INPAINTERS.get(spec["type"]), spec, device),
    )
    ok_labels = [label for label, s in inpainter_states.items() if s["status"] == "ok"]

    embeddings = run.embed(recognizers, inpainter_states, ok_labels)
    per_image = run.per_image_table(metrics, recognizers, embeddings, ok_labels)
    atomic_write_text(out_dir / "per_image.csv", per_image.to_csv(index=False))

    start = time.perf_counter()
    pair_scores = _pair_scores(run, embeddings, ok_labels, protocol)
    atomic_write_text(out_dir / "pair_scores.csv", pair_scores.to_csv(index=False))

    results = _results_record(
        run, protocol, protocol_file, device, started, metrics, recognizers, inpainter_states
    )
    results.update(aggregate(results, per_image, pair_scores))
    run.timings["verification"] = round(time.perf_counter() - start, 3)
    run.timings["total"] = round(time.perf_counter() - t0, 3)
    results["timings"] = run.timings
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    atomic_write_json(out_dir / "results.json", results)
    write_summary_csv(out_dir, results)
    render_report(out_dir, results, per_image, pair_scores)
    return results


def inpaint_cached(
    folder: Path,
    ids: Sequence[str],
    images: np.ndarray,
    inpainter: Any,
    signature: dict[str, Any],
    *,
    holes: np.ndarray | None = None,
    predict: Any = None,
    desc: str = "inpaint",
    progress: bool = True,
) -> int:
    """Write ``folder/<id>.png`` (and, with ``predict``, ``folder/holes/<id>.png``) for every
    image whose output is missing; returns how many were computed.

    ``signature`` (what the outputs depend on) is kept in ``folder/spec.json``: when it
    differs, every output of the folder is of another spec and is redone. The holes are
    ``holes`` (the exact ones) or, with ``predict``, what it finds in each batch.
    """
    marker = folder / "spec.json"
    signature = json.loads(json.dumps(signature))  # as JSON reads it back: tuples → lists
    try:
        same = json.loads(marker.read_text()) == signature
    except (OSError, ValueError):
        same = False

    def done(i: str) -> bool:
        return (folder / f"{i}.png").is_file() and (
            predict is None or (folder / "holes" / f"{i}.png").is_file()
        )

    todo = [k for k, i in enumerate(ids) if not same or not done(i)]
    if not todo:
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    if not same:
        # Outputs of another spec must not survive next to the new ones.
        marker.unlink(missing_ok=True)
        (folder / "timing.json").unlink(missing_ok=True)
        for old in [*folder.glob("*.png"), *folder.glob("holes/*.png")]:
            old.unlink()
    atomic_write_json(marker, signature)
    bar = progress_bar(len(todo), desc, enabled=progress)
    for s in range(0, len(todo), _BATCH):
        batch = todo[s : s + _BATCH]
        if predict is not None:
            batch_holes = predict(images[batch])
            (folder / "holes").mkdir(exist_ok=True)
            for k, hole in zip(batch, batch_holes, strict=True):
                write_mask_png(folder / "holes" / f"{ids[k]}.png", hole)
        else:
            batch_holes = holes[batch]
        outputs = inpainter(images[batch], batch_holes)
        for k, image in zip(batch, outputs, strict=True):
            write_png(folder / f"{ids[k]}.png", image)
        bar.update(len(batch))
    bar.close()
    return len(todo)


def _carry_timing(folder: Path, state: dict[str, Any], n_images: int) -> None:
    """Keep an inpainter's compute time across resumed runs (``inpainted/X/timing.json``).

    A rerun that reuses written outputs takes no time; the report should still show what
    computing them cost. Seconds and images computed add up over the runs that computed
    them; ``state`` then reports the total and says how many outputs were reused.
    """
    path = folder / "timing.json"
    try:
        before = json.loads(path.read_text()) if state["n_computed"] < n_images else {}
    except (OSError, ValueError):
        before = {}
    seconds = float(before.get("seconds", 0.0)) + (state["seconds"] if state["n_computed"] else 0.0)
    computed = int(before.get("n_computed", 0)) + state["n_computed"]
    if state["n_computed"]:
        atomic_write_json(path, {"seconds": round(seconds, 3), "n_computed": computed})
    if computed and seconds > 0:
        state["n_reused"] = n_images - state["n_computed"]
        state["seconds"] = round(seconds, 3)
        state["images_per_second"] = round(computed / seconds, 2)


def _results_record(
    run: _Evaluation,
    protocol: Protocol,
    protocol_file: str | None,
    device: str,
    started: str,
    metrics: Sequence[Any],
    recognizers: dict[str, Any],
    inpainter_states: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The provenance part of ``results.json`` (aggregates are added to it)."""
    return {
        "schema": "m2f-bench/results/1",
        "protocol": protocol.model_dump(mode="json"),
        "protocol_file": protocol_file,
        "m2f_bench_version": __version__,
        "git_commit": git_commit(),
        "environment": environment(),
        "started": started,
        "device": device,
        "dataset": run.dataset_info,
        "failures": run.failures,
        "paths": PATHS,
        "metrics": {
            m.name: {"higher_is_better": m.higher_is_better, "description": m.description}
            for m in metrics
        }
        | (_HOLE_METRICS if run.predicted_holes else {}),
        "recognizers": {
            label: {"key": r.key, "config": r.config()} for label, r in recognizers.items()
        },
        "inpainters": inpainter_states,
        "samples": _samples(run, protocol),
    }


def _embed_ids(recognizer, run: _Evaluation, images: np.ndarray, ids: list[str]) -> np.ndarray:
    rows = [run.index[i] for i in ids]
    return recognizer.embed(images[rows], run.geometry, run.landmarks[rows])


def _device_arg(factory: Any, spec: dict[str, Any], device: str) -> dict[str, Any]:
    """``device`` for plug-ins whose constructor takes it, unless the protocol sets its own."""
    if device == "cpu" or "device" in spec:
        return {}
    try:
        takes = "device" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes = False
    return {"device": device} if takes else {}


def _pair_scores(
    run: _Evaluation,
    embeddings: dict[str, dict[str, np.ndarray]],
    labels: Sequence[str],
    protocol: Protocol,
) -> pd.DataFrame:
    columns = [
        "recognizer",
        "scenario",
        "inpainter",
        "fold",
        "a",
        "b",
        "identity_a",
        "same",
        "score",
    ]
    if not run.pairs or protocol.verification is None:
        return pd.DataFrame(columns=columns)
    a = np.array([run.index[p.a] for p in run.pairs])
    b = np.array([run.index[p.b] for p in run.pairs])
    identity = [r.identity for r in run.records]
    common = {
        "fold": [p.fold for p in run.pairs],
        "a": [p.a for p in run.pairs],
        "b": [p.b for p in run.pairs],
        "identity_a": [identity[k] for k in a],
        "same": [p.same for p in run.pairs],
    }
    frames = []
    for rec_label, emb in embeddings.items():
        for scenario in protocol.verification.scenarios:
            # Scenario X-Y scores the first image of each pair as X, the second as Y.
            left, right = scenario.split("-")
            targets = labels if "inpainted" in (left, right) else [""]
            for label in targets:
                first = emb[f"inpainted/{label}"] if left == "inpainted" else emb[left]
                second = emb[f"inpainted/{label}"] if right == "inpainted" else emb[right]
                scores = np.sum(first[a] * second[b], axis=1)
                frames.append(
                    pd.DataFrame(
                        {
                            "recognizer": rec_label,
                            "scenario": scenario,
                            "inpainter": label,
                            **common,
                            "score": scores.astype(np.float64),
                        }
                    )
                )
    return (
        pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    )


def _samples(run: _Evaluation, protocol: Protocol) -> list[dict[str, str]]:
    """A seeded choice of faces for the report's sample grid, spread over mask types."""
    n = min(protocol.report.samples, len(run.ids))
    digest = hashlib.sha256(f"samples:{protocol.masks.seed}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    by_type: dict[str, list[str]] = {}
    for i in run.ids:
        by_type.setdefault(run.mask_of[i], []).append(i)
    pools = [list(rng.permutation(v)) for _, v in sorted(by_type.items())]
    chosen: list[str] = []
    while len(chosen) < n:
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(str(pool.pop()))
    return [{"image_id": i, "mask_type": run.mask_of[i]} for i in chosen]
