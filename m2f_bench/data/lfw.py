"""Labeled Faces in the Wild, read from the official release layout.

::

    <root>/lfw-deepfunneled/<Name>/<Name>_NNNN.jpg   (or lfw-funneled/, lfw/)
    <root>/pairs.txt    View 2 pairs: 10 folds of 300 matched + 300 mismatched
    <root>/people.txt   View 2 people: the identity fold of every person

Identity folds are the people folds; pairs fold k only uses people of people fold k
(checked at load), so the identity-disjoint splits of :mod:`m2f_bench.data.base` hold.
Missing files are downloaded from UMass and verified unless offline.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any, Self

from m2f_bench._download import RemoteFile, ensure_file, extract_archive, fetch_url, sha256_file
from m2f_bench.data._pairs import check_val_fraction, read_lines, split_of
from m2f_bench.data.base import TEST_FOLDS, FaceDataset, FaceRecord, Pair
from m2f_bench.errors import DataNotFoundError, DownloadError, M2FError, UnreachableError
from m2f_bench.settings import Settings

logger = logging.getLogger(__name__)

LFW_URL = "http://vis-www.cs.umass.edu/lfw/"
#: Image folders of the three LFW variants, in the order they are looked for.
VARIANTS = ("lfw-deepfunneled", "lfw-funneled", "lfw")

#: Where the LFW files are published. The text files carry their sha256; the archive
#: has no published digest, so its unpacked tree is checked against
#: :data:`DEEPFUNNELED_TREE_SHA256` instead.
SOURCES: dict[str, RemoteFile] = {
    "pairs.txt": RemoteFile(
        LFW_URL + "pairs.txt", "ea42330c62c92989f9d7c03237ed5d591365e89b3e649747777b70e692dc1592"
    ),
    "people.txt": RemoteFile(
        LFW_URL + "people.txt", "bc8fa2b7f25c895cf7efb6de4f4fc27ca8b8d1cfa63350ad8b96eae2b198d365"
    ),
    "lfw-deepfunneled": RemoteFile(LFW_URL + "lfw-deepfunneled.tgz", None),
}
_IMAGE_NAME = re.compile(r"(.+)_\d{4}\.jpg")
#: :func:`lfw_tree_digest` of the official ``lfw-deepfunneled/`` (13,233 images).
DEEPFUNNELED_TREE_SHA256 = "8c04ee61355d6a6734594b8fbc9a471b4699aa684db3c6c2bc535d5d7f9f0958"


def lfw_tree_digest(images_dir: Path) -> str:
    """Content digest of an unpacked image tree.

    The sha256 of the sorted lines ``"<relative path>\\t<sha256 of file>\\n"`` over every
    file under ``images_dir`` (paths with ``/``), so renamed, missing, extra or altered
    files all change it.
    """
    lines = sorted(
        f"{path.relative_to(images_dir).as_posix()}\t{sha256_file(path)}\n"
        for path in images_dir.rglob("*")
        if path.is_file()
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def download_lfw(root: Path, *, variant: str | None = None, timeout: float = 60.0) -> None:
    """Fetch whatever of pairs.txt, people.txt and the deep-funneled images is missing.

    Args:
        root: Where LFW lives.
        variant: The image folder wanted; only ``lfw-deepfunneled`` is downloaded, and
            with ``None`` an existing folder of any variant counts as present.
        timeout: Seconds before a stalled connection is abandoned.

    Raises:
        DownloadError: A download failed or did not verify; nothing unverified is left
            under ``root``.
    """
    for name in ("pairs.txt", "people.txt"):
        ensure_file(root / name, SOURCES[name], timeout=timeout)
    # The other variants are not fetched: we hold no digest to verify them by.
    wanted = (variant,) if variant is not None else VARIANTS
    if variant not in (None, "lfw-deepfunneled") or any((root / v).is_dir() for v in wanted):
        return
    remote = SOURCES["lfw-deepfunneled"]
    dest = root / "lfw-deepfunneled"
    logger.info("downloading %s to %s", remote.url, dest)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        archive = Path(tmp) / "lfw-deepfunneled.tgz"
        try:
            fetch_url(remote.url, archive, timeout=timeout)
        except UnreachableError as exc:
            raise UnreachableError(
                f"missing {dest.name}/: {exc}. Unpack the archive into {root}, giving "
                f"{dest}/<Name>/<Name>_NNNN.jpg; it is published at {remote.url}"
            ) from None
        extract_archive(archive, Path(tmp) / "unpacked")
        tree = Path(tmp) / "unpacked" / "lfw-deepfunneled"
        got = lfw_tree_digest(tree) if tree.is_dir() else "no lfw-deepfunneled/ folder"
        # The temporary folder, unpacked tree included, is deleted on the way out.
        if got != DEEPFUNNELED_TREE_SHA256:
            raise DownloadError(
                f"tree digest mismatch for {dest.name}/ from {remote.url}: expected "
                f"{DEEPFUNNELED_TREE_SHA256}, got {got}; the images were not saved"
            )
        os.replace(tree, dest)


class LFW(FaceDataset):
    """LFW with its View 2 folds and pairs.

    Args:
        root: Folder holding the image folder, pairs.txt and people.txt.
        val_fraction: Share of training-pool identities carved out as validation.
        seed: Seed of the validation carving.
        variant: Image folder to use (``lfw-deepfunneled``, ``lfw-funneled`` or
            ``lfw``); by default the first of those that exists.

    Raises:
        DataNotFoundError: The image folder, pairs.txt or people.txt is missing.
    """

    name = "lfw"
    default_dirname = "lfw"

    def __init__(
        self,
        root: Path | str,
        *,
        val_fraction: float = 0.1,
        seed: int = 0,
        variant: str | None = None,
    ) -> None:
        check_val_fraction(val_fraction)
        if variant is not None and variant not in VARIANTS:
            raise M2FError(f"unknown LFW variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        self.root = Path(root)
        self.val_fraction = val_fraction
        self.seed = seed
        candidates = (variant,) if variant is not None else VARIANTS
        found = next((v for v in candidates if (self.root / v).is_dir()), None)
        if found is None:
            wanted = candidates[0]
            looked = ", ".join(f"{v}/" for v in candidates)
            url = SOURCES[wanted].url if wanted in SOURCES else f"{LFW_URL}{wanted}.tgz"
            raise DataNotFoundError(
                f"missing LFW images: no {looked} in {self.root}. Unpack {wanted}.tgz "
                f"there, giving {self.root / wanted}/<Name>/<Name>_NNNN.jpg; it is "
                f"published at {url}"
            )
        self.images_dir = self.root / found
        self.variant = found
        for name in ("pairs.txt", "people.txt"):
            if not (self.root / name).is_file():
                raise DataNotFoundError(
                    f"missing {name}: put the file at {self.root / name}; "
                    f"it is published at {SOURCES[name].url}"
                )

    @classmethod
    def open(
        cls,
        settings: Settings,
        root: Path | None = None,
        *,
        download: bool = True,
        **options: Any,
    ) -> Self:
        """LFW at ``root`` (default ``<data home>/lfw``), downloading missing files.

        Args:
            settings: Data home and network policy.
            root: Where LFW lives.
            download: Fetch missing files (never when ``settings.offline``).
            **options: Passed to the constructor.

        Raises:
            DownloadError: A download failed or did not verify.
            DataNotFoundError: Files are missing and downloads are off.
        """
        root = root if root is not None else settings.data_home / cls.default_dirname
        if download and not settings.offline:
            # Every folder a download attempt may create, outermost first (the user
            # cache's m2f-bench/ included), so that a failed one removes them all.
            created = [p for p in (*reversed(root.parents), root) if not p.exists()]
            try:
                download_lfw(root, variant=options.get("variant"))
            except UnreachableError as exc:
                for folder in reversed(created):  # leave no empty folders behind
                    with contextlib.suppress(OSError):
                        folder.rmdir()
                # Offline in practice: say everything that is missing, as --offline does.
                try:
                    cls(root, **options)
                except DataNotFoundError as missing:
                    raise DataNotFoundError(f"{missing} (download failed: {exc})") from None
                raise
        return cls(root, **options)

    @cached_property
    def _images(self) -> dict[str, list[str]]:
        """File names of each identity folder, sorted, hidden and non-JPEG files skipped."""
        images: dict[str, list[str]] = {}
        for entry in sorted(os.scandir(self.images_dir), key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                raise M2FError(
                    f"wrong LFW layout: {entry.path} is not a folder; expected "
                    f"{self.images_dir}/<Name>/<Name>_NNNN.jpg"
                )
            files = sorted(
                n
                for n in os.listdir(entry.path)
                if n.lower().endswith(".jpg") and not n.startswith(".")
            )
            for file_name in files:
                match = _IMAGE_NAME.fullmatch(file_name)
                if match is None or match[1] != entry.name:
                    raise M2FError(
                        f"wrong LFW layout: {entry.path}/{file_name} should be named "
                        f"{entry.name}_NNNN.jpg"
                    )
            images[entry.name] = files
        if not images:
            raise DataNotFoundError(
                f"wrong LFW layout: no person folders in {self.images_dir}; expected "
                f"{self.images_dir}/<Name>/<Name>_NNNN.jpg"
            )
        return images

    @cached_property
    def _people_folds(self) -> dict[str, int]:
        path = self.root / "people.txt"
        lines = read_lines(path)
        folds: dict[str, int] = {}
        n_folds = _parse_ints(path, lines, 0, 1, "<number of folds>")[0]
        i = 1
        for fold in range(1, n_folds + 1):
            n_people = _parse_ints(path, lines, i, 1, "<number of people in the fold>")[0]
            i += 1
            for _ in range(n_people):
                fields = lines[i].split() if i < len(lines) else []
                if len(fields) != 2 or not fields[1].isdigit():
                    raise M2FError(_bad_line(path, lines, i, "<Name><TAB><image count>"))
                if fields[0] in folds:
                    raise M2FError(
                        f"{path}:{i + 1}: {fields[0]} is already listed in fold {folds[fields[0]]}"
                    )
                folds[fields[0]] = fold
                i += 1
        return folds

    def people_folds(self) -> dict[str, int]:
        """The View 2 fold (1–10) of every person listed in people.txt."""
        return dict(self._people_folds)

    @cached_property
    def _pairs(self) -> tuple[Pair, ...]:
        path = self.root / "pairs.txt"
        lines = read_lines(path)
        n_folds, n_per_kind = _parse_ints(path, lines, 0, 2, "<folds><TAB><pairs per kind>")
        people = self._people_folds
        pairs: list[Pair] = []
        for i in range(1, 1 + 2 * n_folds * n_per_kind):
            fold = (i - 1) // (2 * n_per_kind) + 1
            same = (i - 1) % (2 * n_per_kind) < n_per_kind
            fields = lines[i].split() if i < len(lines) else []
            if same and len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                names = [(fields[0], fields[1]), (fields[0], fields[2])]
            elif not same and len(fields) == 4 and fields[1].isdigit() and fields[3].isdigit():
                names = [(fields[0], fields[1]), (fields[2], fields[3])]
            else:
                expected = "<Name><TAB>n1<TAB>n2" if same else "<Name1><TAB>n1<TAB><Name2><TAB>n2"
                raise M2FError(_bad_line(path, lines, i, expected))
            ids = []
            for person, number in names:
                if people.get(person) != fold:
                    where = f"fold {people[person]}" if person in people else "no fold"
                    raise M2FError(
                        f"{path}:{i + 1}: {person} is in pairs fold {fold} but in {where} of "
                        f"people.txt; pairs fold k may only use people of people fold k"
                    )
                file_name = f"{person}_{int(number):04d}.jpg"
                if file_name not in self._images.get(person, ()):
                    raise DataNotFoundError(
                        f"{path}:{i + 1}: image {self.images_dir / person / file_name} "
                        "does not exist"
                    )
                ids.append(file_name.removesuffix(".jpg"))
            pairs.append(Pair(fold, ids[0], ids[1], same))
        if any(line.strip() for line in lines[1 + 2 * n_folds * n_per_kind :]):
            raise M2FError(
                f"{path}:{2 + 2 * n_folds * n_per_kind}: more lines than the header "
                f"{n_folds} folds × 2 × {n_per_kind} pairs announces"
            )
        return tuple(pairs)

    def pairs(self) -> list[Pair]:
        """The View 2 pairs of all folds, in file order; image ids are ``Name_NNNN``."""
        return list(self._pairs)

    @cached_property
    def _records(self) -> tuple[FaceRecord, ...]:
        folds = self._people_folds
        test_images = {i for p in self._pairs if p.fold in TEST_FOLDS for i in (p.a, p.b)}
        records = []
        for person, files in self._images.items():
            if person not in folds:
                raise M2FError(
                    f"unknown identity: {self.images_dir / person} is not listed in "
                    f"{self.root / 'people.txt'}"
                )
            fold = folds[person]
            for file_name in files:
                image_id = file_name.removesuffix(".jpg")
                split = split_of(person, fold, image_id, test_images, self.val_fraction, self.seed)
                records.append(
                    FaceRecord(image_id, person, self.images_dir / person / file_name, fold, split)
                )
        return tuple(records)

    def records(self) -> list[FaceRecord]:
        """Every image, sorted by person then file name."""
        return list(self._records)


def _bad_line(path: Path, lines: list[str], i: int, expected: str) -> str:
    got = repr(lines[i]) if i < len(lines) else "end of file"
    return f"{path}:{i + 1}: expected {expected}, got {got}"


def _parse_ints(path: Path, lines: list[str], i: int, n: int, expected: str) -> list[int]:
    fields = lines[i].split() if i < len(lines) else []
    if len(fields) != n or not all(f.isdigit() for f in fields):
        raise M2FError(_bad_line(path, lines, i, expected))
    return [int(f) for f in fields]
