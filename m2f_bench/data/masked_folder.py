"""Identity folders in which some photos show the person really wearing a mask.

Which photos are masked is said in one of three ways (checked in this order):

* ``labels: FILE.csv`` — a CSV with columns ``image`` (path relative to the root) and
  ``masked`` (``1``/``0``, ``true``/``false``, ``yes``/``no``); images it does not list are
  skipped;
* ``masked_root: DIR`` — a second tree with the same identity folders holding the masked
  photos (RMFRD's ``AFDB_face_dataset/`` + ``AFDB_masked_face_dataset/`` layout);
* otherwise the folder-name convention: photos in a sub-folder named ``masked_dir``
  (default ``masked``) of an identity folder are masked, the identity folder's own photos
  are not: ``<root>/<identity>/*.jpg`` and ``<root>/<identity>/masked/*.jpg``.

Such a dataset is evaluated by the real-mask protocol (:mod:`m2f_bench.evaluation.realmask`):
masked probes against a gallery of one clean photo per identity. It has no synthetic
masks, no pixel ground truth and no train/test split.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from m2f_bench.data.base import FaceDataset, FaceRecord, Pair
from m2f_bench.errors import DataNotFoundError, M2FError

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_TRUE, _FALSE = {"1", "true", "yes", "y", "masked"}, {"0", "false", "no", "n", "clean", ""}


@dataclass(frozen=True)
class MaskedRecord(FaceRecord):
    """A record that also says whether the photo shows a real mask."""

    masked: bool = False


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in _IMAGE_SUFFIXES


def identity_fold(identity: str, seed: int, n_folds: int = 10) -> int:
    """A seeded, order-independent fold (1-based) of an identity."""
    digest = hashlib.sha256(f"fold:{seed}:{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n_folds + 1


class MaskedFolder(FaceDataset):
    """Identity folders with really masked photos (see the module docstring).

    Args:
        root: Folder of identity folders (the clean photos, or all photos with ``labels``).
        labels: CSV naming the masked photos (relative to ``root`` if not absolute).
        masked_root: A parallel tree of identity folders with the masked photos.
        masked_dir: Name of the per-identity sub-folder of masked photos.
        seed: Seed of the identity folds (used to choose verification thresholds).

    Raises:
        DataNotFoundError: A folder or the labels file is missing.
        M2FError: The layout is wrong (no identity with both clean and masked photos, ...).
    """

    name = "masked-folder"
    default_dirname = "masked-folder"
    has_splits = False
    #: Evaluated with real masks: no synthetic masks are drawn.
    real_masks = True

    def __init__(
        self,
        root: Path | str,
        *,
        labels: str | None = None,
        masked_root: str | None = None,
        masked_dir: str = "masked",
        seed: int = 0,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataNotFoundError(
                f"missing image folder {self.root}: put one folder per person there, with "
                f"the masked photos in {self.root}/<identity>/{masked_dir}/"
            )
        self.labels = None
        if labels is not None:
            self.labels = Path(labels).expanduser()
            if not self.labels.is_absolute():
                self.labels = self.root / self.labels
            if not self.labels.is_file():
                raise DataNotFoundError(f"labels file not found: {self.labels}")
        self.masked_root = Path(masked_root).expanduser() if masked_root else None
        if self.masked_root is not None and not self.masked_root.is_dir():
            raise DataNotFoundError(f"masked_root folder not found: {self.masked_root}")
        self.masked_dir, self.seed = masked_dir, seed
        self._records: list[MaskedRecord] | None = None

    @classmethod
    def open(
        cls, settings, root: Path | str | None = None, *, download: bool = True, **options
    ) -> MaskedFolder:
        """The dataset at ``root`` (default ``<data home>/masked-folder``); nothing is
        downloaded."""
        if root is None:
            root = settings.data_home / cls.default_dirname
        return cls(root, **options)

    # -- scanning ---------------------------------------------------------------------

    def _record(self, identity: str, path: Path, masked: bool, ids: dict) -> MaskedRecord:
        tag = "m" if masked else "c"
        image_id = _UNSAFE.sub("_", f"{identity}__{tag}__{path.stem}")
        if image_id in ids:
            raise M2FError(
                f"{ids[image_id]} and {path} get the same image id {image_id!r}; rename one"
            )
        ids[image_id] = path
        return MaskedRecord(
            image_id=image_id,
            identity=identity,
            path=path,
            fold=identity_fold(identity, self.seed),
            split="test",
            masked=masked,
        )

    def _from_labels(self) -> list[MaskedRecord]:
        records, ids = [], {}
        with open(self.labels, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"image", "masked"} <= set(reader.fieldnames):
                raise M2FError(
                    f"{self.labels}: needs the columns image and masked, has "
                    f"{', '.join(reader.fieldnames or []) or 'none'}"
                )
            for line, row in enumerate(reader, start=2):
                value = (row["masked"] or "").strip().lower()
                if value not in _TRUE | _FALSE:
                    raise M2FError(
                        f"{self.labels} line {line}: masked must be 1/0, true/false or "
                        f"yes/no, got {row['masked']!r}"
                    )
                rel = Path(row["image"].strip())
                if len(rel.parts) < 2:
                    raise M2FError(
                        f"{self.labels} line {line}: {rel} must be <identity>/<image> "
                        "relative to the root"
                    )
                records.append(self._record(rel.parts[0], self.root / rel, value in _TRUE, ids))
        return records

    def _scan(self) -> list[MaskedRecord]:
        records, ids = [], {}
        for folder in sorted(os.scandir(self.root), key=lambda e: e.name):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            for name in sorted(os.listdir(folder.path)):
                if _is_image(name):
                    records.append(self._record(folder.name, Path(folder.path, name), False, ids))
            masked = (
                self.masked_root / folder.name
                if self.masked_root is not None
                else Path(folder.path, self.masked_dir)
            )
            if masked.is_dir():
                for name in sorted(os.listdir(masked)):
                    if _is_image(name):
                        records.append(self._record(folder.name, masked / name, True, ids))
        return records

    def records(self) -> list[MaskedRecord]:
        if self._records is None:
            records = self._from_labels() if self.labels is not None else self._scan()
            if not any(r.masked for r in records):
                where = (
                    f"labelled masked in {self.labels}"
                    if self.labels is not None
                    else f"in {self.masked_root}/<identity>/"
                    if self.masked_root is not None
                    else f"in {self.root}/<identity>/{self.masked_dir}/"
                )
                raise M2FError(f"wrong folder layout: no masked photo found {where}")
            self._records = records
        return self._records

    def pairs(self) -> list[Pair]:
        """None: the real-mask protocol compares probes with a gallery instead of pairs."""
        return []
