"""Seeded identity folds and verification pairs for datasets without official ones.

LFW ships its folds and pairs; CelebA-HQ and plain identity folders do not, so this
module makes LFW-like ones: identities spread over ``n_folds`` folds balanced by image
count, then per fold as many matched as mismatched pairs. Everything is a pure function
of the sorted inputs and the seed, so the same images give the same benchmark. The
split rule and the few helpers every dataset reader needs live here too.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Self

import numpy as np

from m2f_bench.data.base import (
    TEST_FOLDS,
    TRAIN_FOLDS,
    FaceDataset,
    FaceRecord,
    Pair,
    Split,
    is_validation_identity,
)
from m2f_bench.errors import M2FError
from m2f_bench.settings import Settings


def assign_folds(
    images_by_identity: Mapping[str, Sequence[str]], n_folds: int, seed: int
) -> dict[str, int]:
    """Spread identities over folds so that every fold holds about as many images.

    Greedy: identities in a seeded shuffle, stably re-sorted by image count (largest
    first), each goes to the fold with the fewest images so far (then fewest
    identities, then lowest number). Large identities placed first keep the folds even,
    and the shuffle keeps equally sized identities from landing in name order.

    Args:
        images_by_identity: Image ids of each identity.
        n_folds: Number of folds.
        seed: Seed of the shuffle.

    Returns:
        The 1-based fold of every identity.
    """
    identities = sorted(images_by_identity)
    order = np.random.default_rng(seed).permutation(len(identities))
    shuffled = [identities[i] for i in order]
    shuffled.sort(key=lambda identity: -len(images_by_identity[identity]))
    n_images = [0] * n_folds
    n_identities = [0] * n_folds
    folds: dict[str, int] = {}
    for identity in shuffled:
        k = min(range(n_folds), key=lambda f: (n_images[f], n_identities[f], f))
        folds[identity] = k + 1
        n_images[k] += len(images_by_identity[identity])
        n_identities[k] += 1
    return folds


def generate_pairs(
    images_by_identity: Mapping[str, Sequence[str]],
    folds: Mapping[str, int],
    n_folds: int,
    pairs_per_fold: int,
    seed: int,
) -> list[Pair]:
    """Balanced verification pairs within each fold, LFW style.

    Per fold, ``pairs_per_fold // 2`` matched pairs (two images of one identity) and
    as many mismatched pairs (images of two identities of the fold), without
    repeats. A fold too small for that gets as many as it can supply, still as many
    matched as mismatched, so per-fold accuracy stays meaningful. Identities are drawn
    uniformly, then images within them, so identities with many images do not
    dominate.

    Args:
        images_by_identity: Image ids of each identity.
        folds: The 1-based fold of every identity.
        n_folds: Number of folds.
        pairs_per_fold: Wanted pairs per fold, matched and mismatched together.
        seed: Seed of the draws; each fold has its own stream.

    Returns:
        Pairs in fold order, each fold's matched pairs before its mismatched ones,
        each block sorted; within a pair the image ids are sorted.
    """
    pairs: list[Pair] = []
    for fold in range(1, n_folds + 1):
        members = sorted(identity for identity, k in folds.items() if k == fold)
        images = [sorted(set(images_by_identity[identity])) for identity in members]
        sizes = [len(group) for group in images]
        n_matched_possible = sum(math.comb(n, 2) for n in sizes)
        n_mismatched_possible = (sum(sizes) ** 2 - sum(n * n for n in sizes)) // 2
        n = min(pairs_per_fold // 2, n_matched_possible, n_mismatched_possible)
        rng = np.random.default_rng([seed, fold])
        matched = _draw_matched(images, n, rng)
        mismatched = _draw_mismatched(images, n, rng)
        pairs += [Pair(fold, a, b, True) for a, b in sorted(matched)]
        pairs += [Pair(fold, a, b, False) for a, b in sorted(mismatched)]
    return pairs


def _draw_matched(
    images: list[list[str]], n: int, rng: np.random.Generator
) -> set[tuple[str, str]]:
    """``n`` distinct same-identity pairs; at most as many as exist may be asked for."""
    groups = [group for group in images if len(group) >= 2]
    drawn: set[tuple[str, str]] = set()
    # Rejecting repeats stays cheap: n is small, and close to the supply only in tiny folds.
    while len(drawn) < n:
        group = groups[rng.integers(len(groups))]
        i, j = rng.choice(len(group), size=2, replace=False)
        drawn.add((min(group[i], group[j]), max(group[i], group[j])))
    return drawn


def _draw_mismatched(
    images: list[list[str]], n: int, rng: np.random.Generator
) -> set[tuple[str, str]]:
    """``n`` distinct different-identity pairs; at most as many as exist may be asked for."""
    drawn: set[tuple[str, str]] = set()
    while len(drawn) < n:
        g, h = rng.choice(len(images), size=2, replace=False)
        a = images[g][rng.integers(len(images[g]))]
        b = images[h][rng.integers(len(images[h]))]
        drawn.add((min(a, b), max(a, b)))
    return drawn


def split_of(
    identity: str,
    fold: int,
    image_id: str,
    test_images: set[str] | frozenset[str],
    val_fraction: float,
    seed: int,
) -> Split:
    """The split of one image under the rule of :mod:`m2f_bench.data.base`.

    Args:
        identity: Who the image shows.
        fold: The identity's fold.
        image_id: The image.
        test_images: Image ids used by the pairs of the test folds.
        val_fraction: Share of training-pool identities carved out as validation.
        seed: Seed of the validation carving.
    """
    if fold in TRAIN_FOLDS:
        return "val" if is_validation_identity(identity, val_fraction, seed) else "train"
    return "test" if image_id in test_images else "unused"


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 label file.

    Raises:
        M2FError: The file cannot be read or decoded.
    """
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise M2FError(f"cannot read {path}: {exc}") from None


def check_val_fraction(val_fraction: float) -> None:
    """Reject a validation share outside [0, 1).

    Raises:
        M2FError: The share is out of range.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise M2FError(f"val_fraction must be in [0, 1), got {val_fraction}")


class GeneratedPairsDataset(FaceDataset):
    """A dataset whose identity folds and pairs are made by :func:`generate_pairs`.

    Subclasses check their files in ``__init__`` (after calling this one) and list
    their images in :meth:`_scan`.

    Args:
        root: Folder of the dataset.
        val_fraction: Share of training-pool identities carved out as validation.
        seed: Seed of the folds, the pairs and the validation carving.
        n_folds: Identity folds; at least 10, since folds 1–5 are the training pool
            and 6–10 the test folds (any further folds are left unused).
        pairs_per_fold: Wanted pairs per fold, half matched, half mismatched.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        val_fraction: float = 0.1,
        seed: int = 0,
        n_folds: int = 10,
        pairs_per_fold: int = 300,
    ) -> None:
        check_val_fraction(val_fraction)
        if n_folds < max(TEST_FOLDS):
            raise M2FError(
                f"n_folds must be at least {max(TEST_FOLDS)} (folds 1–5 train, 6–10 test), "
                f"got {n_folds}"
            )
        if pairs_per_fold < 2:
            raise M2FError(f"pairs_per_fold must be at least 2, got {pairs_per_fold}")
        self.root = Path(root)
        self.val_fraction = val_fraction
        self.seed = seed
        self.n_folds = n_folds
        self.pairs_per_fold = pairs_per_fold

    @classmethod
    def open(
        cls,
        settings: Settings,
        root: Path | None = None,
        *,
        download: bool = True,
        **options: Any,
    ) -> Self:
        """The dataset at ``root``, by default ``<data home>/<default_dirname>``.

        ``download`` is accepted so that every dataset opens the same way; these
        datasets have no download source.

        Raises:
            DataNotFoundError: The dataset is missing; the message says where to put it.
        """
        return cls(
            root if root is not None else settings.data_home / cls.default_dirname, **options
        )

    @abstractmethod
    def _scan(self) -> list[tuple[str, str, Path]]:
        """``(image_id, identity, path)`` of every image, sorted by identity then file."""

    def _assign_folds(self, images_by_identity: Mapping[str, Sequence[str]]) -> dict[str, int]:
        """The 1-based fold of every identity; by default :func:`assign_folds`."""
        return assign_folds(images_by_identity, self.n_folds, self.seed)

    @cached_property
    def _index(self) -> tuple[tuple[FaceRecord, ...], tuple[Pair, ...], dict[str, int]]:
        images = self._scan()
        by_identity: dict[str, list[str]] = defaultdict(list)
        for image_id, identity, _ in images:
            by_identity[identity].append(image_id)
        folds = self._assign_folds(by_identity)
        pairs = generate_pairs(by_identity, folds, self.n_folds, self.pairs_per_fold, self.seed)
        test_images = {i for p in pairs if p.fold in TEST_FOLDS for i in (p.a, p.b)}
        records = tuple(
            FaceRecord(
                image_id,
                identity,
                path,
                folds[identity],
                split_of(
                    identity, folds[identity], image_id, test_images, self.val_fraction, self.seed
                ),
            )
            for image_id, identity, path in images
        )
        return records, tuple(pairs), folds

    def records(self) -> list[FaceRecord]:
        """Every image, sorted by identity then file."""
        return list(self._index[0])

    def pairs(self) -> list[Pair]:
        """Generated pairs of every fold, in fold order."""
        return list(self._index[1])

    def identity_folds(self) -> dict[str, int]:
        """The fold of every identity."""
        return dict(self._index[2])
