"""CelebA reader on tiny copies in the official layout, and on the shared real subset."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import pytest
from test_data_folder import assert_generated_protocol, write_image

from m2f_bench.data import DATASETS
from m2f_bench.data.base import TEST_FOLDS, TRAIN_FOLDS
from m2f_bench.data.celeba import CelebA
from m2f_bench.errors import DataNotFoundError, M2FError

#: Image counts of the 30 identities, cycling so folds must be balanced by count.
SIZES = [3, 2, 1, 4, 5] * 6


def write_celeba(
    root: Path, *, folder: str = "img_celeba", absent: int = 0, partition: bool = False
) -> dict[str, str]:
    """CelebA files of 30 identities (file numbers scattered as in the release).

    ``absent`` further files are listed in identity_CelebA.txt but not written, as in a
    partial copy. With ``partition``, identities 0–9 are the official test partition,
    10–14 validation, the rest train. Returns the identity of every written file.
    """
    truth: dict[str, str] = {}
    identity_lines, partition_lines = [], []
    number = 1
    for i, n in enumerate(SIZES):
        identity = str(1000 + 13 * i)
        kind = 2 if i < 10 else 1 if i < 15 else 0
        for _ in range(n):
            name = f"{number * 37 % 9973:06d}.jpg"
            number += 1
            identity_lines.append(f"{name} {identity}")
            partition_lines.append(f"{name} {kind}")
            write_image(root / folder / name, seed=number)
            truth[name] = identity
    for k in range(absent):
        identity_lines.append(f"{199000 + k:06d}.jpg 9{k}")
        partition_lines.append(f"{199000 + k:06d}.jpg 0")
    (root / "identity_CelebA.txt").write_text("\n".join(sorted(identity_lines)) + "\n")
    if partition:
        (root / "list_eval_partition.txt").write_text("\n".join(sorted(partition_lines)) + "\n")
    return truth


def test_records_carry_the_identity_and_absent_files_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    truth = write_celeba(tmp_path, absent=7)
    ds = CelebA(tmp_path)
    with caplog.at_level(logging.WARNING):
        records = ds.records()
    assert len(records) == sum(SIZES) == len(truth)
    assert {r.path.name: r.identity for r in records} == truth
    assert all(r.image_id == "celeba_" + r.path.stem for r in records)
    assert ds.missing == 7
    assert "7 of the 97 images listed" in caplog.text
    assert_generated_protocol(ds, pairs_per_fold=300)


def test_registered_and_opened_from_the_data_home(tmp_path: Path) -> None:
    from m2f_bench.settings import Settings

    write_celeba(tmp_path / "celeba")
    ds = DATASETS.get("celeba").open(Settings(data_home=tmp_path, model_home=tmp_path))
    assert ds.root == tmp_path / "celeba"
    assert len(ds.records()) == sum(SIZES)


def test_aligned_folder_is_used_when_the_wild_one_is_absent(tmp_path: Path) -> None:
    write_celeba(tmp_path, folder="img_align_celeba")
    ds = CelebA(tmp_path)
    assert ds.images_dir == tmp_path / "img_align_celeba"
    assert len(ds.records()) == sum(SIZES)
    with pytest.raises(DataNotFoundError, match="missing img_celeba/"):
        CelebA(tmp_path, images="img_celeba")


def test_official_partition_decides_the_test_identities(tmp_path: Path) -> None:
    write_celeba(tmp_path, partition=True)
    ds = CelebA(tmp_path)
    folds = ds.identity_folds()
    test_ids = {str(1000 + 13 * i) for i in range(10)}
    assert {i for i, k in folds.items() if k in TEST_FOLDS} == test_ids
    assert {i for i, k in folds.items() if k in TRAIN_FOLDS} == set(folds) - test_ids
    assert_generated_protocol(ds, pairs_per_fold=300)
    # partition: none ignores the file: folds from image counts over every identity.
    generated = CelebA(tmp_path, partition="none").identity_folds()
    assert {i for i, k in generated.items() if k in TEST_FOLDS} != test_ids


def test_partition_required_but_missing_or_spanning_identity(tmp_path: Path) -> None:
    write_celeba(tmp_path)
    with pytest.raises(DataNotFoundError, match=r"list_eval_partition\.txt"):
        CelebA(tmp_path, partition="official")
    lines = [
        f"{line.split()[0]} {k % 3}"
        for k, line in enumerate((tmp_path / "identity_CelebA.txt").read_text().splitlines())
    ]
    (tmp_path / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(M2FError, match="in several partitions"):
        CelebA(tmp_path).records()


@pytest.mark.parametrize(
    ("line", "problem"),
    [("000001.jpg", "expected '<file> <identity>'"), ("abc.jpg 12", "expected")],
)
def test_bad_identity_line_is_reported_with_its_line_number(
    tmp_path: Path, line: str, problem: str
) -> None:
    write_celeba(tmp_path)
    path = tmp_path / "identity_CelebA.txt"
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(M2FError, match=rf"identity_CelebA.txt:{sum(SIZES) + 1}: {problem}"):
        CelebA(tmp_path).records()


def test_missing_parts_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="missing CelebA folder"):
        CelebA(tmp_path / "nowhere")
    (tmp_path / "a").mkdir()
    with pytest.raises(DataNotFoundError, match="img_celeba/ or img_align_celeba/"):
        CelebA(tmp_path / "a")
    write_celeba(tmp_path / "b")
    os.remove(tmp_path / "b" / "identity_CelebA.txt")
    with pytest.raises(DataNotFoundError, match=r"missing identity_CelebA\.txt"):
        CelebA(tmp_path / "b")
    with pytest.raises(M2FError, match="images must be"):
        CelebA(tmp_path / "b", images="img_hq")


def test_no_listed_image_present_is_reported(tmp_path: Path) -> None:
    (tmp_path / "img_celeba").mkdir()
    (tmp_path / "identity_CelebA.txt").write_text("000001.jpg 5\n")
    with pytest.raises(DataNotFoundError, match="none of the 1 images listed"):
        CelebA(tmp_path).records()


@pytest.mark.data
def test_shared_celeba_subset(celeba_home: Path) -> None:
    ds = CelebA(celeba_home / "celeba")
    records = ds.records()
    assert ds.missing == 0
    assert len(records) == 2105
    assert len({r.identity for r in records}) == 100
    assert Counter(p.fold for p in ds.test_pairs()) == {k: 300 for k in TEST_FOLDS}
    assert_generated_protocol(ds, pairs_per_fold=300)


def test_prepared_faces_of_the_two_celeba_image_folders_are_never_mixed(tmp_path: Path) -> None:
    """Both image folders give the same ids (celeba_NNNNNN): the prepared-folder
    fingerprint, which decides what a resumed run reuses, must tell them apart."""
    from m2f_bench.faces.pipeline import AlignerConfig
    from m2f_bench.prepare.runner import PrepareConfig, dataset_source

    write_celeba(tmp_path, folder="img_celeba")
    write_celeba(tmp_path, folder="img_align_celeba")
    wild, aligned = CelebA(tmp_path), CelebA(tmp_path, images="img_align_celeba")
    assert {r.image_id for r in wild.records()} == {r.image_id for r in aligned.records()}

    def fingerprint(ds: CelebA, options: dict) -> str:
        aligner = AlignerConfig(size=64, scrfd_path=None, use_hog=True)
        return PrepareConfig(
            "celeba", str(tmp_path), aligner, ("n95",), 0, dataset_source(ds, options)
        ).fingerprint()

    assert fingerprint(wild, {}) != fingerprint(aligned, {"images": "img_align_celeba"})
    assert fingerprint(wild, {}) == fingerprint(CelebA(tmp_path), {})
