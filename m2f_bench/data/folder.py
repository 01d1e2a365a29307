"""Any set of face photos sorted into one folder per person.

::

    <root>/<identity>/<image>.jpg|.jpeg|.png

Identity folds and pairs are generated, seeded (:mod:`m2f_bench.data._pairs`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from m2f_bench.data._pairs import GeneratedPairsDataset
from m2f_bench.errors import DataNotFoundError, M2FError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class IdentityFolder(GeneratedPairsDataset):
    """Images in ``<root>/<identity>/``; hidden and non-image files are skipped.

    Image ids are ``<identity>__<file stem>`` with characters other than letters,
    digits, ``.``, ``_`` and ``-`` replaced by ``_``.

    Args:
        root: Folder of identity folders.
        val_fraction: Share of training-pool identities carved out as validation.
        seed: Seed of the folds, the pairs and the validation carving.
        n_folds: Identity folds (at least 10).
        pairs_per_fold: Wanted pairs per fold, half matched, half mismatched.

    Raises:
        DataNotFoundError: ``root`` does not exist.
    """

    name = "folder"
    default_dirname = "folder"

    def __init__(
        self,
        root: Path | str,
        *,
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
        if not self.root.is_dir():
            raise DataNotFoundError(
                f"missing image folder {self.root}: put one folder per person there, "
                f"{self.root}/<identity>/<image>.jpg"
            )

    def _layout_error(self, problem: str) -> M2FError:
        return M2FError(
            f"wrong folder layout: {problem}; expected {self.root}/<identity>/<image>.jpg "
            "(one folder per person)"
        )

    def _scan(self) -> list[tuple[str, str, Path]]:
        images = []
        ids: dict[str, Path] = {}
        for folder in sorted(os.scandir(self.root), key=lambda e: e.name):
            if folder.name.startswith("."):
                continue
            if not folder.is_dir():
                if _is_image(folder.name):
                    raise self._layout_error(f"image {folder.path} lies directly in the root")
                continue
            for file_name in sorted(os.listdir(folder.path)):
                path = Path(folder.path, file_name)
                if file_name.startswith(".") or not _is_image(file_name) or not path.is_file():
                    continue
                image_id = _UNSAFE.sub("_", f"{folder.name}__{path.stem}")
                if image_id in ids:
                    raise M2FError(
                        f"{ids[image_id]} and {path} get the same image id {image_id!r}; "
                        "rename one of them"
                    )
                ids[image_id] = path
                images.append((image_id, folder.name, path))
        if not images:
            raise self._layout_error(f"no identity folder with images in {self.root}")
        return images


def _is_image(file_name: str) -> bool:
    return os.path.splitext(file_name)[1].lower() in IMAGE_SUFFIXES
