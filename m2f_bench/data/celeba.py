"""CelebA in its official layout: in-the-wild or aligned photos and the identity file.

::

    <root>/img_celeba/NNNNNN.jpg          in-the-wild photos (or)
    <root>/img_align_celeba/NNNNNN.jpg    178×218 aligned crops
    <root>/identity_CelebA.txt            "000001.jpg 2880": file, identity
    <root>/list_eval_partition.txt        optional: "000001.jpg 0" (0 train, 1 val, 2 test)

The identity file of the release lists all 202,599 images; a copy holding only some of
them is fine: listed images that are absent are skipped and counted
(:attr:`CelebA.missing`). CelebA has no verification pairs, so identity folds and pairs
are generated, seeded (:mod:`m2f_bench.data._pairs`). With ``list_eval_partition.txt``
the official partition decides who is tested: the identities of its test partition fill
folds 6–10, those of its train and validation partitions folds 1–5 (the training pool,
with the project's usual seeded validation carve-out). Without it, every identity is
spread over the ten folds by image count.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from m2f_bench.data._pairs import GeneratedPairsDataset, assign_folds, read_lines
from m2f_bench.data.base import TEST_FOLDS, TRAIN_FOLDS
from m2f_bench.errors import DataNotFoundError, M2FError

log = logging.getLogger(__name__)

CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
#: Image folders of the release, in the order ``images: auto`` looks for them.
IMAGE_FOLDERS = ("img_celeba", "img_align_celeba")
_PARTITIONS = {"0": "train", "1": "val", "2": "test"}


class CelebA(GeneratedPairsDataset):
    """CelebA photos grouped by identity, with generated identity-disjoint pairs.

    Args:
        root: Folder holding the image folder and the label files.
        images: ``img_celeba`` (in-the-wild photos), ``img_align_celeba`` (aligned
            crops), or ``auto``: the first of them that exists.
        partition: ``auto`` uses ``list_eval_partition.txt`` when it exists, ``official``
            requires it, ``none`` ignores it (folds from image counts alone).
        val_fraction: Share of training-pool identities carved out as validation.
        seed: Seed of the folds, the pairs and the validation carving.
        n_folds: Identity folds (at least 10).
        pairs_per_fold: Wanted pairs per fold, half matched, half mismatched.

    Raises:
        DataNotFoundError: No image folder, or a label file that is needed is missing.
    """

    name = "celeba"
    default_dirname = "celeba"

    def __init__(
        self,
        root: Path | str,
        *,
        images: str = "auto",
        partition: str = "auto",
        val_fraction: float = 0.1,
        seed: int = 0,
        n_folds: int = 10,
        pairs_per_fold: int = 300,
    ) -> None:
        super().__init__(
            root,
            val_fraction=val_fraction,
            seed=seed,
            n_folds=n_folds,
            pairs_per_fold=pairs_per_fold,
        )
        if images not in ("auto", *IMAGE_FOLDERS):
            raise M2FError(
                f"celeba images must be auto, {' or '.join(IMAGE_FOLDERS)}; got {images!r}"
            )
        if partition not in ("auto", "official", "none"):
            raise M2FError(f"celeba partition must be auto, official or none; got {partition!r}")
        if not self.root.is_dir():
            raise DataNotFoundError(
                f"missing CelebA folder {self.root}: put the release there "
                f"(img_celeba/ or img_align_celeba/ and Anno/identity_CelebA.txt, from "
                f"{CELEBA_URL})"
            )
        candidates = IMAGE_FOLDERS if images == "auto" else (images,)
        found = [self.root / name for name in candidates if (self.root / name).is_dir()]
        if not found:
            raise DataNotFoundError(
                f"missing {' or '.join(f'{n}/' for n in candidates)} in {self.root}: "
                f"put CelebA's image folder there ({CELEBA_URL}, 'In-The-Wild Images' or "
                "'Align&Cropped Images', unzipped)"
            )
        self.images_dir = found[0]
        self.identity_path = _label_file(self.root, "identity_CelebA.txt")
        if not self.identity_path.is_file():
            raise DataNotFoundError(
                f"missing identity_CelebA.txt: put it at {self.root / 'identity_CelebA.txt'}; "
                f"it comes with Anno/ of CelebA ({CELEBA_URL})"
            )
        partition_path = _label_file(self.root, "list_eval_partition.txt")
        if partition == "official" and not partition_path.is_file():
            raise DataNotFoundError(
                f"missing list_eval_partition.txt: put it at {partition_path} (Eval/ of "
                f"CelebA, {CELEBA_URL}), or use partition: auto or none"
            )
        self.partition_path = (
            partition_path if partition != "none" and partition_path.is_file() else None
        )
        #: Images listed in the identity file that are not in the image folder.
        self.missing = 0

    def _partitions(self) -> dict[str, str]:
        """Partition (train, val, test) of every file in ``list_eval_partition.txt``."""
        assert self.partition_path is not None
        partitions: dict[str, str] = {}
        for i, line in enumerate(read_lines(self.partition_path), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in _PARTITIONS:
                raise M2FError(
                    f"{self.partition_path}:{i}: expected '<file> <0|1|2>', got {line!r}"
                )
            partitions[fields[0]] = _PARTITIONS[fields[1]]
        return partitions

    def _scan(self) -> list[tuple[str, str, Path]]:
        identities = read_identity_file(self.identity_path)
        present = {
            entry.name
            for entry in os.scandir(self.images_dir)
            if not entry.name.startswith(".") and entry.is_file()
        }
        images = []
        for file_name, identity in identities.items():
            # The aligned crops are the same numbers as .jpg (or re-encoded as .png).
            name = file_name
            if name not in present:
                alternative = os.path.splitext(file_name)[0] + ".png"
                if alternative not in present:
                    continue
                name = alternative
            stem = os.path.splitext(file_name)[0]
            images.append((f"celeba_{stem}", identity, self.images_dir / name))
        self.missing = len(identities) - len(images)
        if not images:
            raise DataNotFoundError(
                f"none of the {len(identities):,} images listed in {self.identity_path.name} "
                f"is in {self.images_dir}; expected {self.images_dir}/NNNNNN.jpg"
            )
        if self.missing:
            log.warning(
                "celeba: %s of the %s images listed in %s are not in %s (skipped)",
                f"{self.missing:,}",
                f"{len(identities):,}",
                self.identity_path.name,
                self.images_dir.name,
            )
        images.sort(key=lambda image: (int(image[1]), image[0]))
        return images

    def _assign_folds(self, images_by_identity: Mapping[str, Sequence[str]]) -> dict[str, int]:
        if self.partition_path is None:
            return super()._assign_folds(images_by_identity)
        partitions = self._partitions()
        tested: dict[str, list[str]] = {}
        pool: dict[str, list[str]] = {}
        for identity, image_ids in images_by_identity.items():
            kinds = {partitions.get(i.removeprefix("celeba_") + ".jpg") for i in image_ids}
            if None in kinds:
                raise M2FError(
                    f"{self.partition_path} does not list every image of identity {identity}"
                )
            if len(kinds) > 1:
                raise M2FError(
                    f"{self.partition_path}: identity {identity} is in several partitions "
                    f"({', '.join(sorted(kinds))}); use partition: none"
                )
            (tested if kinds == {"test"} else pool)[identity] = list(image_ids)
        # Folds 1–5 from the training pool, 6–10 from the official test identities; any
        # folds beyond 10 stay empty.
        first_train, first_test = min(TRAIN_FOLDS), min(TEST_FOLDS)
        folds = {
            i: first_train - 1 + k
            for i, k in assign_folds(pool, len(TRAIN_FOLDS), self.seed).items()
        }
        folds |= {
            i: first_test - 1 + k
            for i, k in assign_folds(tested, len(TEST_FOLDS), self.seed).items()
        }
        return folds


def read_identity_file(path: Path) -> dict[str, str]:
    """Identity of every file name listed in CelebA's ``identity_CelebA.txt``.

    Raises:
        M2FError: A line is not ``<NNNNNN.jpg> <identity>``, or a file has two identities.
    """
    identities: dict[str, str] = {}
    for i, line in enumerate(read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not _is_number_file(fields[0]) or not fields[1].isdigit():
            raise M2FError(f"{path}:{i}: expected '<file> <identity>', got {line!r}")
        if identities.setdefault(fields[0], fields[1]) != fields[1]:
            raise M2FError(f"{path}:{i}: {fields[0]} is listed with two identities")
    return identities


def _label_file(root: Path, name: str) -> Path:
    """A label file at the root, or in the release's ``Anno/`` / ``Eval/`` folder."""
    for where in (root, root / "Anno", root / "Eval"):
        if (where / name).is_file():
            return where / name
    return root / name


def _is_number_file(name: str) -> bool:
    stem, _ = os.path.splitext(name)
    return stem.isdigit()
