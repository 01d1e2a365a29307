"""Training data: prepared crops with a fresh synthetic mask per image and epoch.

Each sample is a pure function of (config seed, epoch, image id): the colour jitter, the
mask type, the mask itself (``apply_mask(..., image_id=f"{id}#e{epoch}")``) and the flip
are drawn from a generator seeded by those values. Nothing depends on which worker draws
the sample or on the order samples are drawn in, so a resumed run sees the same data as an
uninterrupted one, and data-parallel ranks see disjoint slices of the same global batch.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from m2f_bench._io import read_image
from m2f_bench.errors import DataNotFoundError, M2FError
from m2f_bench.masks import MASK_TYPES, apply_mask
from m2f_bench.prepare.layout import prepared_path
from m2f_bench.training.config import DataSpec

#: Stream tag of the fixed validation masks (training epochs are 0, 1, ...).
_VALIDATION_STREAM = 2**31
#: Stream of the fixed degraded validation crops (runs with ``data.degrade``).
_DEGRADED_VALIDATION_STREAM = 2**31 + 1


def _stable_hash(text: str) -> int:
    # Python's hash() is salted per process; workers must agree with each other.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def sample_rng(seed: int, stream: int, image_id: str) -> np.random.Generator:
    """The generator of one image's augmentation in one epoch (or the validation stream)."""
    return np.random.default_rng([seed, stream, _stable_hash(image_id)])


class PreparedSplit:
    """The successfully prepared images of one split of a ``prepare`` output folder.

    Args:
        root: The prepared folder (its ``manifest.csv``, ``crops/``, ``landmarks/``).
        split: The manifest's ``split`` value to keep (``train``, ``val``, ``test``).

    Raises:
        DataNotFoundError: No manifest, or no prepared image in that split.
    """

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root)
        manifest = self.root / "manifest.csv"
        if not manifest.is_file():
            raise DataNotFoundError(
                f"{manifest} not found; make it with `m2f-bench prepare DATASET --out {self.root}`"
            )
        columns = ["image_id", "split", "status", "crop_path"]
        try:
            rows = pd.read_csv(manifest, usecols=lambda c: c in columns, dtype=str)
        except ValueError as exc:  # empty, cut off, not CSV, not UTF-8
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise M2FError(f"{manifest}: not a readable manifest ({first})") from None
        missing = sorted(set(columns) - {"crop_path"} - set(rows.columns))
        if missing:
            raise M2FError(f"{manifest} lacks the column(s) {', '.join(missing)}")
        rows = rows[(rows["status"] == "ok") & (rows["split"] == split)]
        rows = rows.drop_duplicates("image_id")
        self.image_ids: list[str] = list(rows["image_id"])
        if not self.image_ids:
            raise DataNotFoundError(f"{manifest} has no prepared image in split {split!r}")
        self.split = split
        # The manifest names each crop's file (`prepare` writes PNGs; a packed copy for a
        # GPU machine may hold JPEGs); without the column, the prepare layout's name.
        named = rows["crop_path"].fillna("") if "crop_path" in rows else [""] * len(rows)
        self._crops: list[str] = [
            path or prepared_path("crops", image_id)
            for image_id, path in zip(self.image_ids, named, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.image_ids)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The crop (uint8 H×W×3 RGB) and its 68 landmarks (float 68×2, crop pixels)."""
        image_id = self.image_ids[index]
        crop = read_image(self.root / self._crops[index])
        path = self.root / prepared_path("landmarks", image_id)
        try:
            landmarks = np.asarray(json.loads(path.read_text())["landmarks"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as exc:
            raise M2FError(f"{path}: damaged landmarks file ({type(exc).__name__})") from None
        if landmarks.shape != (68, 2):
            raise M2FError(f"{path}: expected 68 (x, y) landmarks, got shape {landmarks.shape}")
        return crop, landmarks


def colour_jitter(
    crop: np.ndarray,
    rng: np.random.Generator,
    brightness: float,
    contrast: float,
    saturation: float,
) -> np.ndarray:
    """Scale brightness, contrast (about the mean) and saturation by factors in [1 ± x]."""
    if not (brightness or contrast or saturation):
        return crop
    b, c, s = rng.uniform(-1, 1, size=3) * (brightness, contrast, saturation) + 1
    x = crop.astype(np.float32) * b
    x = (x - x.mean()) * c + x.mean()
    grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - grey[..., None]) * s + grey[..., None]
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Sample:
    """One training example: uint8 masked crop, bool hole and uint8 clean target."""

    masked: np.ndarray
    hole: np.ndarray
    target: np.ndarray


def degrade_pair(image, hole, target, rng: np.random.Generator, spec) -> tuple:
    """The same position jitter and photo degradations on the masked crop and its target:
    both consume identical draws (a copy of ``rng``), so the target is what the degraded
    photo would show without the mask."""
    import copy

    from m2f_bench.training.augment import degrade, jitter_geometry

    twin = copy.deepcopy(rng)
    image, moved = jitter_geometry(
        np.ascontiguousarray(image), np.ascontiguousarray(hole), rng, spec
    )
    target, _ = jitter_geometry(
        np.ascontiguousarray(target), np.ascontiguousarray(hole), twin, spec
    )
    twin = copy.deepcopy(rng)
    return degrade(image, rng, spec), moved, degrade(target, twin, spec)


def make_sample(
    split: PreparedSplit, index: int, spec: DataSpec, seed: int, stream: int, augment: bool
) -> Sample:
    """Mask (and, when ``augment``, jitter and flip) one prepared crop."""
    image_id = split.image_ids[index]
    crop, landmarks = split.load(index)
    rng = sample_rng(seed, stream, image_id)
    if augment:
        crop = colour_jitter(crop, rng, spec.brightness, spec.contrast, spec.saturation)
    types = spec.mask_types or MASK_TYPES
    mask_type = types[int(rng.integers(len(types)))]
    tag = "val" if stream == _VALIDATION_STREAM else f"e{stream}"
    masked = apply_mask(crop, landmarks, mask_type, image_id=f"{image_id}#{tag}", seed=seed)
    image, hole, target = masked.image, masked.hole, crop
    if augment and rng.random() < spec.flip:
        # After masking, so the mask's own asymmetries are flipped with the face.
        image, hole, target = image[:, ::-1], hole[:, ::-1], target[:, ::-1]
    if augment and spec.degrade is not None:
        image, hole, target = degrade_pair(image, hole, target, rng, spec.degrade)
    return Sample(
        np.ascontiguousarray(image), np.ascontiguousarray(hole), np.ascontiguousarray(target)
    )


class TrainingSamples(Dataset):
    """Map-style dataset indexed by ``(epoch, image index)``, as the batch sampler yields."""

    def __init__(self, split: PreparedSplit, spec: DataSpec, seed: int) -> None:
        self.split, self.spec, self.seed = split, spec, seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        s = make_sample(self.split, index, self.spec, self.seed, epoch, augment=True)
        # uint8 crosses the worker pipe at a quarter of float32's size.
        return {
            "masked": torch.from_numpy(s.masked),
            "hole": torch.from_numpy(s.hole),
            "target": torch.from_numpy(s.target),
        }


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled image order of one epoch: a pure function of (n, seed, epoch)."""
    return np.random.default_rng([seed, epoch, n]).permutation(n)


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this rank's share of every global batch from ``start_step`` to ``steps``.

    Step ``k`` is batch ``k mod steps_per_epoch`` of epoch ``k // steps_per_epoch``, the
    last incomplete batch of an epoch dropped, so every step has the full global batch.

    Args:
        n: Images in the split.
        global_batch: Images per step over all ranks.
        steps: Total steps of the run.
        seed: Shuffling seed.
        start_step: First step to yield (a resumed run's step).
        rank: This process's rank.
        world_size: Number of ranks; must divide ``global_batch``.
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        steps: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if global_batch % world_size:
            raise M2FError(f"batch size {global_batch} does not split over {world_size} ranks")
        if n < global_batch:
            raise M2FError(f"batch size {global_batch} is larger than the {n} training images")
        self.n, self.global_batch, self.steps, self.seed = n, global_batch, steps, seed
        self.start_step, self.rank = start_step, rank
        self.local_batch = global_batch // world_size
        self.steps_per_epoch = n // global_batch

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order, order_epoch = None, -1
        for step in range(self.start_step, self.steps):
            epoch, k = divmod(step, self.steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = epoch_order(self.n, self.seed, epoch), epoch
            start = k * self.global_batch + self.rank * self.local_batch
            yield [(epoch, int(i)) for i in order[start : start + self.local_batch]]


def _worker_init(_: int) -> None:
    # Each worker is one of few processes on few cores: no nested thread pools.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    # Ctrl-C reaches the whole process group; only the main process acts on it (it saves a
    # checkpoint first), and the loader's shutdown then ends the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(dataset: TrainingSamples, sampler: EpochBatchSampler, workers: int) -> DataLoader:
    """A DataLoader over ``sampler``'s batches, ``workers`` processes drawing the masks."""
    return DataLoader(
        dataset,
        # Its own generator for the workers' base seed, which the loader would otherwise
        # draw from the global RNG: a resumed run's RNG state then matches an
        # uninterrupted one (the samples themselves use no torch RNG).
        generator=torch.Generator().manual_seed(dataset.seed),
        batch_sampler=sampler,
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
        # Not fork: a child forked after OpenCV's or OpenMP's thread pools started in the
        # parent can deadlock in them. The workers start once per run, so spawning is cheap.
        multiprocessing_context="spawn" if workers else None,
    )


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Uint8 NHWC batch → float NCHW masked, hole, target in [-1, 1] / {0, 1}, channels-last."""

    def image(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        return x.contiguous(memory_format=torch.channels_last)

    hole = batch["hole"].to(device, non_blocking=True).unsqueeze(1).float()
    return (
        image(batch["masked"]),
        hole.contiguous(memory_format=torch.channels_last),
        image(batch["target"]),
    )


@dataclass(frozen=True)
class ValidationSet:
    """Fixed masked validation crops (the same masks every epoch), uint8 / bool arrays."""

    image_ids: Sequence[str]
    masked: np.ndarray
    holes: np.ndarray
    targets: np.ndarray

    @classmethod
    def build(
        cls, split: PreparedSplit, spec: DataSpec, seed: int, degraded: bool = False
    ) -> ValidationSet:
        """Mask the first ``spec.val_limit`` images of ``split`` once, without augmentation.

        With ``degraded``, the same masked crops then get ``spec.degrade``'s jitter and
        photo degradations (the same on the masked crop and its target), from draws of their
        own that are the same at every validation.

        Raises:
            M2FError: ``degraded`` without ``spec.degrade``.
        """
        if degraded and spec.degrade is None:
            raise M2FError("a degraded validation set needs data.degrade")
        count = len(split) if spec.val_limit is None else min(spec.val_limit, len(split))
        samples = [
            make_sample(split, i, spec, seed, _VALIDATION_STREAM, augment=False)
            for i in range(count)
        ]
        if degraded:
            samples = [
                Sample(
                    *map(
                        np.ascontiguousarray,
                        degrade_pair(
                            s.masked,
                            s.hole,
                            s.target,
                            sample_rng(seed, _DEGRADED_VALIDATION_STREAM, split.image_ids[i]),
                            spec.degrade,
                        ),
                    )
                )
                for i, s in enumerate(samples)
            ]
        return cls(
            image_ids=split.image_ids[:count],
            masked=np.stack([s.masked for s in samples]),
            holes=np.stack([s.hole for s in samples]),
            targets=np.stack([s.target for s in samples]),
        )
