"""CelebA-HQ with CelebA identity labels, in the CelebAMask-HQ layout.

::

    <root>/CelebA-HQ-img/<idx>.jpg                  idx 0–29999, unpadded (.png accepted)
    <root>/CelebA-HQ-to-CelebA-mapping.txt          header, then "idx orig_idx orig_file"
    <root>/identity_CelebA.txt                      "000001.jpg 2880": CelebA file, identity

CelebA-HQ has no official pairs: identity folds and pairs are generated, seeded
(:mod:`m2f_bench.data._pairs`).
"""

from __future__ import annotations

import os
from pathlib import Path

from m2f_bench.data._pairs import GeneratedPairsDataset, read_lines
from m2f_bench.data.celeba import read_identity_file
from m2f_bench.errors import DataNotFoundError, M2FError

CELEBAMASK_HQ_URL = "https://github.com/switchablenorms/CelebAMask-HQ"
CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
IMAGE_SUFFIXES = (".jpg", ".png")


class CelebAHQ(GeneratedPairsDataset):
    """CelebA-HQ images grouped by their CelebA identity.

    Args:
        root: Folder holding the image folder and the two label files.
        val_fraction: Share of training-pool identities carved out as validation.
        seed: Seed of the folds, the pairs and the validation carving.
        n_folds: Identity folds (at least 10).
        pairs_per_fold: Wanted pairs per fold, half matched, half mismatched.
        images_dir: Image folder, relative to ``root`` (for example a resized copy).

    Raises:
        DataNotFoundError: The image folder or a label file is missing.
    """

    name = "celebahq"
    default_dirname = "celebahq"

    def __init__(
        self,
        root: Path | str,
        *,
        val_fraction: float = 0.1,
        seed: int = 0,
        n_folds: int = 10,
        pairs_per_fold: int = 300,
        images_dir: str = "CelebA-HQ-img",
    ) -> None:
        super().__init__(
            root,
            val_fraction=val_fraction,
            seed=seed,
            n_folds=n_folds,
            pairs_per_fold=pairs_per_fold,
        )
        self.images_dir = self.root / images_dir
        self.mapping_path = self.root / "CelebA-HQ-to-CelebA-mapping.txt"
        self.identity_path = self.root / "identity_CelebA.txt"
        sources = {
            self.images_dir: f"CelebA-HQ-img/ of CelebAMask-HQ ({CELEBAMASK_HQ_URL})",
            self.mapping_path: f"CelebAMask-HQ ({CELEBAMASK_HQ_URL})",
            self.identity_path: f"Anno/ of CelebA ({CELEBA_URL})",
        }
        for path, source in sources.items():
            if not path.exists():
                raise DataNotFoundError(
                    f"missing {path.name}: put it at {path}; it comes with {source}"
                )

    def _hq_to_celeba(self) -> dict[int, int]:
        """CelebA file number (``000001.jpg`` → 1) of every CelebA-HQ index."""
        mapping: dict[int, int] = {}
        lines = read_lines(self.mapping_path)
        # Without this check a file missing its header would silently lose its first row.
        if not lines or lines[0].split()[:1] != ["idx"]:
            got = repr(lines[0]) if lines else "an empty file"
            raise M2FError(
                f"{self.mapping_path}:1: expected the header 'idx orig_idx orig_file', got {got}"
            )
        for i, line in enumerate(lines[1:], start=2):
            fields = line.split()
            if not fields:
                continue
            # orig_file is zero-padded in the release ("099095.jpg"); compare numbers so a
            # re-written unpadded copy matches identity_CelebA.txt too.
            if len(fields) < 3 or not fields[0].isdigit() or not _is_number_file(fields[2]):
                raise M2FError(
                    f"{self.mapping_path}:{i}: expected '<idx> <orig_idx> <orig_file>', "
                    f"got {line!r}"
                )
            mapping[int(fields[0])] = int(Path(fields[2]).stem)
        return mapping

    def _celeba_identities(self) -> dict[int, str]:
        """Identity of every CelebA file number."""
        return {
            int(Path(name).stem): identity
            for name, identity in read_identity_file(self.identity_path).items()
        }

    def _scan(self) -> list[tuple[str, str, Path]]:
        mapping = self._hq_to_celeba()
        identities = self._celeba_identities()
        images = []
        for entry in os.scandir(self.images_dir):
            stem, suffix = os.path.splitext(entry.name)
            if entry.name.startswith(".") or suffix.lower() not in IMAGE_SUFFIXES:
                continue
            # CelebA-HQ indices are unpadded; a padded name is a CelebA number (some
            # tools rename the images that way) and would silently get the wrong person.
            if not stem.isdigit() or stem != str(int(stem)):
                raise M2FError(
                    f"wrong CelebA-HQ layout: {entry.path} should be named <idx>{suffix} "
                    f"with the unpadded CelebA-HQ index (0–29999)"
                )
            idx = int(stem)
            if idx not in mapping:
                raise M2FError(f"unknown image: {entry.path} is not in {self.mapping_path}")
            if mapping[idx] not in identities:
                raise M2FError(
                    f"unknown identity: CelebA image {mapping[idx]:06d}.jpg (of {entry.path}) "
                    f"is not in {self.identity_path}"
                )
            images.append((f"celebahq_{idx:05d}", identities[mapping[idx]], Path(entry.path)))
        if not images:
            raise DataNotFoundError(
                f"no images in {self.images_dir}; expected {self.images_dir}/<idx>.jpg"
            )
        if len({image_id for image_id, _, _ in images}) < len(images):
            raise M2FError(f"{self.images_dir} holds the same index as both .jpg and .png")
        images.sort(key=lambda image: (int(image[1]), image[0]))
        return images


def _is_number_file(name: str) -> bool:
    stem, _ = os.path.splitext(name)
    return stem.isdigit()
