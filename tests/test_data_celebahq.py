"""CelebA-HQ reader on a tiny copy in the CelebAMask-HQ layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_data_folder import assert_generated_protocol, write_image

from m2f_bench.data.celebahq import CelebAHQ
from m2f_bench.errors import DataNotFoundError, M2FError
from m2f_bench.settings import Settings

#: Image counts of the 24 identities, cycling so folds must be balanced by count.
SIZES = [3, 2, 1, 4] * 6


def write_celebahq(root: Path, *, padded_mapping: bool = True) -> dict[int, str]:
    """60 CelebA-HQ images of 24 identities; returns the identity of each HQ index.

    CelebA file numbers are scattered as in the release, and identity_CelebA.txt also
    lists CelebA images that are not in CelebA-HQ.
    """
    rng = np.random.default_rng(0)
    celeba_numbers = rng.choice(np.arange(1, 2000), size=sum(SIZES), replace=False)
    identities = [str(100 + 7 * i) for i, n in enumerate(SIZES) for _ in range(n)]
    hq_order = rng.permutation(len(identities))
    mapping_lines = ["idx         orig_idx    orig_file"]
    identity_lines = []
    truth = {}
    for idx, k in enumerate(hq_order):
        number = int(celeba_numbers[k])
        orig_file = f"{number:06d}.jpg" if padded_mapping else f"{number}.jpg"
        mapping_lines.append(f"{idx:<12}{number - 1:<12}{orig_file}")
        identity_lines.append(f"{number:06d}.jpg {identities[k]}")
        truth[idx] = identities[k]
        write_image(root / "CelebA-HQ-img" / f"{idx}.jpg", seed=idx)
    identity_lines += ["002001.jpg 9999", "002002.jpg 9998"]  # CelebA-only images
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(mapping_lines) + "\n")
    (root / "identity_CelebA.txt").write_text("\n".join(sorted(identity_lines)) + "\n")
    return truth


@pytest.fixture
def celebahq(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    root = tmp_path / "celebahq"
    return root, write_celebahq(root)


def test_records_carry_the_celeba_identity(celebahq: tuple[Path, dict[int, str]]) -> None:
    root, truth = celebahq
    records = CelebAHQ(root).records()
    assert len(records) == 60
    assert {r.image_id: r.identity for r in records} == {
        f"celebahq_{idx:05d}": identity for idx, identity in truth.items()
    }
    assert all(r.path == root / "CelebA-HQ-img" / f"{int(r.image_id[9:])}.jpg" for r in records)
    assert records == sorted(records, key=lambda r: (int(r.identity), r.image_id))


def test_unpadded_mapping_file_names_match_padded_identity_names(tmp_path: Path) -> None:
    truth = write_celebahq(tmp_path, padded_mapping=False)
    records = CelebAHQ(tmp_path).records()
    assert {int(r.image_id[9:]): r.identity for r in records} == truth


def test_generated_folds_pairs_and_splits_hold(celebahq: tuple[Path, dict[int, str]]) -> None:
    ds = CelebAHQ(celebahq[0], pairs_per_fold=4, val_fraction=0.3)
    assert_generated_protocol(ds, pairs_per_fold=4)
    assert len(ds.pairs()) == 10 * 4
    images_per_fold = [sum(r.fold == k for r in ds.records()) for k in range(1, 11)]
    assert max(images_per_fold) - min(images_per_fold) <= max(SIZES)


def test_pairs_follow_the_seed(celebahq: tuple[Path, dict[int, str]]) -> None:
    root = celebahq[0]
    assert CelebAHQ(root, seed=1).pairs() == CelebAHQ(root, seed=1).pairs()
    assert CelebAHQ(root, seed=1).pairs() != CelebAHQ(root, seed=2).pairs()


def test_png_images_and_another_images_dir_are_read(tmp_path: Path) -> None:
    root = tmp_path / "celebahq"
    truth = write_celebahq(root)
    small = root / "CelebA-HQ-img-256"
    small.mkdir()
    for path in (root / "CelebA-HQ-img").iterdir():
        write_image(small / f"{path.stem}.png")
    records = CelebAHQ(root, images_dir="CelebA-HQ-img-256").records()
    assert {int(r.image_id[9:]): r.identity for r in records} == truth
    assert all(r.path.parent == small and r.path.suffix == ".png" for r in records)


@pytest.mark.parametrize(
    "name", ["CelebA-HQ-img", "CelebA-HQ-to-CelebA-mapping.txt", "identity_CelebA.txt"]
)
def test_missing_part_names_where_to_put_it(
    celebahq: tuple[Path, dict[int, str]], name: str
) -> None:
    root = celebahq[0]
    target = root / name
    if target.is_dir():
        target.rename(root / "elsewhere")
    else:
        target.unlink()
    with pytest.raises(DataNotFoundError, match=f"missing {name}") as err:
        CelebAHQ(root)
    assert "\n" not in str(err.value)
    assert str(target) in str(err.value)
    assert "https://" in str(err.value)


def test_open_defaults_to_the_data_home(tmp_path: Path) -> None:
    write_celebahq(tmp_path / "celebahq")
    ds = CelebAHQ.open(Settings(data_home=tmp_path, model_home=tmp_path))
    assert ds.root == tmp_path / "celebahq"
    assert len(ds.records()) == 60


def test_bad_mapping_line_is_reported_with_its_line_number(
    celebahq: tuple[Path, dict[int, str]],
) -> None:
    path = celebahq[0] / "CelebA-HQ-to-CelebA-mapping.txt"
    lines = path.read_text().splitlines()
    lines[4] = "3 oops"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(M2FError, match=r"CelebA-HQ-to-CelebA-mapping\.txt:5: expected"):
        CelebAHQ(celebahq[0]).records()


def test_mapping_without_header_is_rejected(celebahq: tuple[Path, dict[int, str]]) -> None:
    path = celebahq[0] / "CelebA-HQ-to-CelebA-mapping.txt"
    path.write_text("\n".join(path.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(M2FError, match=r"mapping\.txt:1: expected the header"):
        CelebAHQ(celebahq[0]).records()


def test_image_missing_from_mapping_is_rejected(celebahq: tuple[Path, dict[int, str]]) -> None:
    stray = celebahq[0] / "CelebA-HQ-img" / "60.jpg"
    write_image(stray)
    with pytest.raises(M2FError, match="unknown image") as err:
        CelebAHQ(celebahq[0]).records()
    assert str(stray) in str(err.value)


def test_celeba_image_without_identity_is_rejected(
    celebahq: tuple[Path, dict[int, str]],
) -> None:
    path = celebahq[0] / "identity_CelebA.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(M2FError, match=f"unknown identity: CelebA image {lines[0].split()[0]}"):
        CelebAHQ(celebahq[0]).records()


def test_zero_padded_image_names_are_a_layout_error(
    celebahq: tuple[Path, dict[int, str]],
) -> None:
    # Tools that rename CelebA-HQ images to CelebA numbers pad them; reading those as
    # HQ indices would silently give every image the wrong person.
    images = celebahq[0] / "CelebA-HQ-img"
    (images / "7.jpg").rename(images / "000007.jpg")
    with pytest.raises(M2FError, match="wrong CelebA-HQ layout"):
        CelebAHQ(celebahq[0]).records()


def test_empty_image_folder_is_reported(tmp_path: Path) -> None:
    write_celebahq(tmp_path)
    for path in (tmp_path / "CelebA-HQ-img").iterdir():
        path.unlink()
    with pytest.raises(DataNotFoundError, match="no images in"):
        CelebAHQ(tmp_path).records()
