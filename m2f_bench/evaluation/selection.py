"""Which images and pairs an evaluation uses, and which mask each image wears."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from m2f_bench.data.base import FaceDataset, FaceRecord, Pair
from m2f_bench.errors import M2FError
from m2f_bench.evaluation.protocol import DatasetSpec


def _subset_pairs(pairs: list[Pair], limit: int, seed: int) -> list[Pair]:
    """A seeded subset of about ``limit`` pairs, balanced over folds and same/different.

    Each fold keeps the same number of matched and mismatched pairs, as in LFW View 2.
    """
    folds = sorted({p.fold for p in pairs})
    per_cell = max(1, limit // (2 * len(folds)))
    rng = np.random.default_rng(seed)
    keep: list[Pair] = []
    for fold in folds:
        for same in (True, False):
            cell = [p for p in pairs if p.fold == fold and p.same == same]
            chosen = rng.permutation(len(cell))[:per_cell]
            keep.extend(cell[i] for i in sorted(chosen))
    order = {p: i for i, p in enumerate(pairs)}
    return sorted(keep, key=order.__getitem__)


def select(
    dataset: FaceDataset, spec: DatasetSpec, *, with_pairs: bool
) -> tuple[list[FaceRecord], list[Pair]]:
    """The records and verification pairs a protocol's dataset section asks for.

    With pairs, the images are exactly those the chosen pairs use: the test split is the
    pairs of folds 6–10, ``all`` every fold's pairs, ``train`` has no pairs. Without pairs
    (or when the dataset has none), the split's images, optionally a seeded subset.
    """
    if with_pairs and spec.split != "train":
        pairs = dataset.test_pairs() if spec.split == "test" else dataset.pairs()
        if pairs:
            if spec.limit_pairs is not None and spec.limit_pairs < len(pairs):
                pairs = _subset_pairs(pairs, spec.limit_pairs, spec.seed)
            used = {i for p in pairs for i in (p.a, p.b)}
            records = [r for r in dataset.records() if r.image_id in used]
            missing = used - {r.image_id for r in records}
            if missing:
                raise M2FError(f"pairs use images the dataset lacks: {sorted(missing)[:3]}")
            return records, pairs
    records = dataset.select(spec.split)
    if spec.limit_images is not None and spec.limit_images < len(records):
        order = np.random.default_rng(spec.seed).permutation(len(records))[: spec.limit_images]
        records = [records[i] for i in sorted(order)]
    if not records:
        raise M2FError(f"the {spec.split} split of {spec.name} has no images")
    return records, []


def limit_selection(
    records: list[FaceRecord], pairs: list[Pair], limit: int, seed: int
) -> tuple[list[FaceRecord], list[Pair]]:
    """At most ``limit`` images: with pairs, a balanced subset of about ``limit / 2`` pairs
    (every fold, as many matched as mismatched) and the images they use; without pairs, a
    seeded subset of the images.
    """
    if not pairs:
        order = np.random.default_rng(seed).permutation(len(records))[:limit]
        return [records[i] for i in sorted(order)], []
    n_pairs = max(2 * len({p.fold for p in pairs}), limit // 2)
    chosen = _subset_pairs(pairs, n_pairs, seed)
    while chosen and len({i for p in chosen for i in (p.a, p.b)}) > limit and n_pairs > 2:
        n_pairs -= 2 * len({p.fold for p in pairs})
        chosen = _subset_pairs(pairs, max(n_pairs, 2), seed)
    used = {i for p in chosen for i in (p.a, p.b)}
    return [r for r in records if r.image_id in used], chosen


def assign_masks(image_ids: Sequence[str], mask_types: Sequence[str], seed: int) -> dict[str, str]:
    """One mask type per image, balanced: counts per type differ by at most one.

    A seeded permutation of the images is dealt out over the types in turn.
    """
    order = np.random.default_rng(seed).permutation(len(image_ids))
    types = list(mask_types)
    return {image_ids[i]: types[rank % len(types)] for rank, i in enumerate(order)}
