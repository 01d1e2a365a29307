"""The one interface every face dataset implements.

A dataset yields *records* ``(image_id, identity, path)`` — with the identity fold and
the split each belongs to — and *verification pairs* with their fold numbers.

Splits are identity-disjoint and the same for every dataset: identities of folds 1–5
form the training pool (a seeded share of those identities is carved out as
validation), and the test set is every image used by the pairs of folds 6–10.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

Split = Literal["train", "val", "test", "unused"]
SplitChoice = Literal["train", "test", "all"]

#: Identity folds whose people form the training pool (1-based, inclusive).
TRAIN_FOLDS = frozenset({1, 2, 3, 4, 5})
#: Pair folds that form the test set.
TEST_FOLDS = frozenset({6, 7, 8, 9, 10})


@dataclass(frozen=True)
class FaceRecord:
    """One image of a dataset.

    Attributes:
        image_id: Unique, file-name-safe id within the dataset (``Aaron_Eckhart_0001``).
        identity: The person shown.
        path: The image file.
        fold: The identity fold (1-based) the person belongs to.
        split: ``train``, ``val``, ``test`` or ``unused``.
    """

    image_id: str
    identity: str
    path: Path
    fold: int
    split: Split


@dataclass(frozen=True)
class Pair:
    """A verification pair: two image ids and whether they show the same person."""

    fold: int
    a: str
    b: str
    same: bool


def is_validation_identity(identity: str, fraction: float, seed: int) -> bool:
    """Seeded, order-independent choice of validation identities from the training pool.

    Hashing (rather than shuffling a list) keeps an identity's assignment stable when
    the dataset grows or is read in another order.
    """
    digest = hashlib.sha256(f"{seed}:{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


class FaceDataset(ABC):
    """A face dataset with identities, identity folds and verification pairs.

    Subclasses set :attr:`name` and implement :meth:`records` and :meth:`pairs`.
    """

    name: ClassVar[str]
    #: Folder under the data home where the dataset lives by default.
    default_dirname: ClassVar[str]
    #: Whether the dataset has identity-disjoint train/test splits (reports name the split).
    has_splits: ClassVar[bool] = True

    root: Path

    @abstractmethod
    def records(self) -> list[FaceRecord]:
        """Every image of the dataset, in a stable order."""

    @abstractmethod
    def pairs(self) -> list[Pair]:
        """Every verification pair, all folds, in file order."""

    def test_pairs(self) -> list[Pair]:
        """The pairs of the test folds (6–10)."""
        return [p for p in self.pairs() if p.fold in TEST_FOLDS]

    def select(self, split: SplitChoice) -> list[FaceRecord]:
        """Records of a split choice.

        ``train`` is the training pool (records whose split is ``train`` or ``val``),
        ``test`` the images of the test pairs, ``all`` every image.
        """
        if split == "all":
            return self.records()
        if split == "train":
            return [r for r in self.records() if r.split in ("train", "val")]
        if split == "test":
            return [r for r in self.records() if r.split == "test"]
        raise ValueError(f"unknown split {split!r}; choose train, test or all")
