"""Generated folds and pairs (``_pairs``) and the generic identity-folder dataset."""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from m2f_bench.data._pairs import GeneratedPairsDataset, assign_folds, generate_pairs
from m2f_bench.data.base import TEST_FOLDS, TRAIN_FOLDS
from m2f_bench.data.folder import IdentityFolder
from m2f_bench.errors import DataNotFoundError, M2FError
from m2f_bench.settings import Settings


def write_image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)


def images_by_size(sizes: list[int]) -> dict[str, list[str]]:
    return {f"id{i:03d}": [f"id{i:03d}_{j}" for j in range(n)] for i, n in enumerate(sizes)}


def assert_generated_protocol(ds: GeneratedPairsDataset, pairs_per_fold: int) -> None:
    """The invariants every dataset with generated folds and pairs must keep."""
    records = ds.records()
    by_id = {r.image_id: r for r in records}
    folds = ds.identity_folds()
    assert {r.identity: r.fold for r in records} == folds, "an identity spans two folds"
    assert set(folds.values()) == set(range(1, ds.n_folds + 1))
    pairs = ds.pairs()
    assert [p.fold for p in pairs] == sorted(p.fold for p in pairs)
    assert len({(p.a, p.b) for p in pairs}) == len(pairs), "repeated pair"
    for p in pairs:
        a, b = by_id[p.a], by_id[p.b]
        assert p.a < p.b
        assert a.fold == b.fold == p.fold
        assert (a.identity == b.identity) == p.same
    per_fold = Counter((p.fold, p.same) for p in pairs)
    for k in range(1, ds.n_folds + 1):
        assert per_fold[k, True] == per_fold[k, False] <= pairs_per_fold // 2
    test_images = {i for p in pairs if p.fold in TEST_FOLDS for i in (p.a, p.b)}
    assert {r.image_id for r in records if r.split == "test"} == test_images
    pool = {r.identity for r in records if r.split in ("train", "val")}
    assert {folds[i] for i in pool} <= TRAIN_FOLDS
    assert not pool & {r.identity for r in records if r.split in ("test", "unused")}


# --- assign_folds / generate_pairs -------------------------------------------------------


def test_folds_are_balanced_by_image_count() -> None:
    sizes = [1 + (i * 7) % 9 for i in range(57)]
    images = images_by_size(sizes)
    folds = assign_folds(images, 10, seed=0)
    assert set(folds) == set(images)
    per_fold = Counter()
    for identity, k in folds.items():
        per_fold[k] += len(images[identity])
    assert set(per_fold) == set(range(1, 11))
    assert max(per_fold.values()) - min(per_fold.values()) <= max(sizes)
    assert sum(per_fold.values()) == sum(sizes)


def test_folds_balance_images_not_identities() -> None:
    # Five big identities and fifty single images: only image balancing puts the
    # singles in the other five folds.
    images = images_by_size([10] * 5 + [1] * 50)
    folds = assign_folds(images, 10, seed=0)
    per_fold = Counter()
    for identity, k in folds.items():
        per_fold[k] += len(images[identity])
    assert per_fold == {k: 10 for k in range(1, 11)}


def test_folds_are_seeded_and_independent_of_input_order() -> None:
    images = images_by_size([2] * 40)
    reordered = dict(reversed(list(images.items())))
    assert assign_folds(images, 10, seed=3) == assign_folds(reordered, 10, seed=3)
    assert assign_folds(images, 10, seed=3) != assign_folds(images, 10, seed=4)


def test_pairs_are_balanced_deterministic_and_seeded() -> None:
    images = images_by_size([1 + i % 5 for i in range(80)])
    folds = assign_folds(images, 10, seed=0)
    pairs = generate_pairs(images, folds, 10, 6, seed=0)
    assert Counter((p.fold, p.same) for p in pairs) == {
        (k, same): 3 for k in range(1, 11) for same in (True, False)
    }
    reordered = dict(reversed(list(images.items())))
    assert generate_pairs(reordered, folds, 10, 6, seed=0) == pairs
    assert generate_pairs(images, folds, 10, 6, seed=1) != pairs
    for k in range(1, 11):
        block = [p.same for p in pairs if p.fold == k]
        assert block == [True] * 3 + [False] * 3, "matched pairs come first in a fold"


def test_small_fold_gives_every_possible_pair_and_stays_balanced() -> None:
    # Two identities of three images: 6 matched pairs exist, 9 mismatched.
    images = images_by_size([3, 3])
    pairs = generate_pairs(images, {"id000": 1, "id001": 1}, 1, 100, seed=0)
    matched = {(p.a, p.b) for p in pairs if p.same}
    expected = {pair for group in images.values() for pair in combinations(sorted(group), 2)}
    assert matched == expected
    assert sum(not p.same for p in pairs) == 6
    assert len({(p.a, p.b) for p in pairs}) == 12


def test_fold_without_matched_candidates_gets_no_pairs() -> None:
    # Mismatched pairs alone would unbalance the fold's accuracy.
    images = images_by_size([1, 1, 1, 2])
    folds = {"id000": 1, "id001": 1, "id002": 1, "id003": 2}
    pairs = generate_pairs(images, folds, 2, 10, seed=0)
    assert [p.fold for p in pairs] == []


# --- IdentityFolder -------------------------------------------------------------------


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    """30 people with 1–4 images each, mixed extensions, plus files to be skipped."""
    root = tmp_path / "faces"
    suffixes = [".jpg", ".JPG", ".jpeg", ".png"]
    for i in range(30):
        for j in range(1 + i % 4):
            write_image(
                root / f"person {i:02d}" / f"img{j}{suffixes[(i + j) % 4]}", seed=i * 10 + j
            )
    (root / "person 00" / "notes.txt").write_text("not an image")
    (root / "person 00" / ".hidden.jpg").write_bytes(b"")
    (root / ".cache").mkdir()
    write_image(root / ".cache" / "x.jpg")
    (root / "README.md").write_text("a non-image file at the root is fine")
    return root


def test_records_list_every_image_with_safe_unique_ids(faces: Path) -> None:
    records = IdentityFolder(faces).records()
    assert len(records) == sum(1 + i % 4 for i in range(30))
    assert len({r.identity for r in records}) == 30
    assert records == sorted(records, key=lambda r: (r.identity, r.path.name))
    first = records[0]
    assert first.identity == "person 00"
    assert first.image_id == "person_00__img0"
    assert first.path == faces / "person 00" / "img0.jpg"
    assert all(r.path.suffix.lower() in (".jpg", ".jpeg", ".png") for r in records)
    assert len({r.image_id for r in records}) == len(records)
    assert all(set(r.image_id) <= set("abcdefghijklmnopqrstuvwxyz0123456789_") for r in records)


def test_generated_folds_pairs_and_splits_hold(faces: Path) -> None:
    ds = IdentityFolder(faces, pairs_per_fold=4, val_fraction=0.3)
    assert_generated_protocol(ds, pairs_per_fold=4)
    assert len(ds.pairs()) > 0
    assert {r.split for r in ds.records()} == {"train", "val", "test", "unused"}


def test_pairs_follow_the_seed(faces: Path) -> None:
    assert IdentityFolder(faces, seed=5).pairs() == IdentityFolder(faces, seed=5).pairs()
    assert IdentityFolder(faces, seed=5).pairs() != IdentityFolder(faces, seed=6).pairs()


def test_image_directly_in_root_is_a_layout_error(faces: Path) -> None:
    write_image(faces / "loose.png")
    with pytest.raises(M2FError, match="wrong folder layout") as err:
        IdentityFolder(faces).records()
    assert str(faces / "loose.png") in str(err.value)
    assert "<identity>/<image>.jpg" in str(err.value)


def test_root_without_identity_folders_is_a_layout_error(tmp_path: Path) -> None:
    (tmp_path / "empty person").mkdir()
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(M2FError, match="wrong folder layout: no identity folder"):
        IdentityFolder(tmp_path).records()


def test_missing_root_says_where_to_put_images(tmp_path: Path) -> None:
    settings = Settings(data_home=tmp_path, model_home=tmp_path)
    with pytest.raises(DataNotFoundError) as err:
        IdentityFolder.open(settings)
    assert str(tmp_path / "folder") in str(err.value)
    assert "<identity>/<image>.jpg" in str(err.value)


def test_colliding_image_ids_are_rejected(faces: Path) -> None:
    write_image(faces / "person_00" / "img0.png")
    with pytest.raises(M2FError, match="same image id 'person_00__img0'"):
        IdentityFolder(faces).records()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_folds": 5}, "n_folds must be at least 10"),
        ({"pairs_per_fold": 1}, "pairs_per_fold must be at least 2"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_options_are_rejected(faces: Path, options: dict, message: str) -> None:
    with pytest.raises(M2FError, match=message):
        IdentityFolder(faces, **options)
