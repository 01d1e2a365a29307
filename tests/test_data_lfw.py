"""LFW reader: a tiny fake release in the official layout, and the real one when present."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from m2f_bench.data.base import TEST_FOLDS, TRAIN_FOLDS, Pair, is_validation_identity
from m2f_bench.data.lfw import DEEPFUNNELED_TREE_SHA256, LFW, lfw_tree_digest
from m2f_bench.errors import DataNotFoundError, M2FError
from m2f_bench.settings import Settings

#: Per fold: person suffix → image count. Pairs per fold use Alpha, Bravo and Charlie;
#: Alpha_0004 and both Delta images are never paired.
PEOPLE = {"Alpha": 4, "Bravo": 2, "Charlie": 1, "Delta": 2}


def person(fold: int, suffix: str) -> str:
    return f"Person{fold:02d}_{suffix}"


def write_fake_lfw(root: Path, variant: str = "lfw-deepfunneled") -> None:
    """A 10-fold LFW in the official layout: 40 people, 90 images, 2+2 pairs per fold."""
    rng = np.random.default_rng(0)
    people_lines = ["10"]
    pairs_lines = ["10\t2"]
    for fold in range(1, 11):
        people_lines.append(str(len(PEOPLE)))
        for suffix, count in PEOPLE.items():
            name = person(fold, suffix)
            people_lines.append(f"{name}\t{count}")
            (root / variant / name).mkdir(parents=True)
            for n in range(1, count + 1):
                noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(noise).save(root / variant / name / f"{name}_{n:04d}.jpg")
        alpha, bravo, charlie = (person(fold, s) for s in ("Alpha", "Bravo", "Charlie"))
        pairs_lines += [f"{alpha}\t1\t2", f"{bravo}\t1\t2"]
        pairs_lines += [f"{alpha}\t3\t{charlie}\t1", f"{bravo}\t2\t{charlie}\t1"]
    (root / "people.txt").write_text("\n".join(people_lines) + "\n")
    (root / "pairs.txt").write_text("\n".join(pairs_lines) + "\n")


@pytest.fixture(scope="module")
def fake_lfw_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lfw-master")
    write_fake_lfw(root)
    return root


@pytest.fixture
def fake_lfw(fake_lfw_master: Path, tmp_path: Path) -> Path:
    """A fresh copy a test may break."""
    return Path(shutil.copytree(fake_lfw_master, tmp_path / "lfw"))


def test_records_follow_layout_and_people_folds(fake_lfw: Path) -> None:
    ds = LFW(fake_lfw)
    records = ds.records()
    assert len(records) == 90
    assert len({r.identity for r in records}) == 40
    assert len({r.image_id for r in records}) == 90
    assert records == sorted(records, key=lambda r: (r.identity, r.path.name))
    assert ds.people_folds()[person(7, "Bravo")] == 7
    for r in records:
        assert r.fold == int(r.identity[6:8])
        assert r.path == fake_lfw / "lfw-deepfunneled" / r.identity / f"{r.image_id}.jpg"
        assert r.path.is_file()


def test_pairs_come_in_file_order_per_fold(fake_lfw: Path) -> None:
    pairs = LFW(fake_lfw).pairs()
    assert len(pairs) == 40
    assert Counter(p.fold for p in pairs) == {k: 4 for k in range(1, 11)}
    assert [p.same for p in pairs[:4]] == [True, True, False, False]
    assert pairs[0] == Pair(1, "Person01_Alpha_0001", "Person01_Alpha_0002", True)
    assert pairs[-1] == Pair(10, "Person10_Bravo_0002", "Person10_Charlie_0001", False)


def test_test_split_is_exactly_the_images_of_test_pairs(fake_lfw: Path) -> None:
    ds = LFW(fake_lfw)
    used = {i for p in ds.pairs() if p.fold in TEST_FOLDS for i in (p.a, p.b)}
    test_ids = {r.image_id for r in ds.select("test")}
    assert test_ids == used
    assert len(test_ids) == 5 * 6
    assert len(ds.test_pairs()) == 20
    unused = {r.image_id for r in ds.records() if r.split == "unused"}
    assert unused == {
        i
        for fold in TEST_FOLDS
        for i in (
            f"{person(fold, 'Alpha')}_0004",
            f"{person(fold, 'Delta')}_0001",
            f"{person(fold, 'Delta')}_0002",
        )
    }


def test_no_test_identity_in_train_or_val(fake_lfw: Path) -> None:
    records = LFW(fake_lfw, val_fraction=0.5).records()
    pool = {r.identity for r in records if r.split in ("train", "val")}
    held_out = {r.identity for r in records if r.split in ("test", "unused")}
    assert pool and held_out
    assert not pool & held_out
    assert {r.fold for r in records if r.identity in pool} == TRAIN_FOLDS


@pytest.mark.parametrize("seed", [0, 1])
def test_val_identities_are_the_seeded_hash_choice(fake_lfw: Path, seed: int) -> None:
    records = LFW(fake_lfw, val_fraction=0.5, seed=seed).records()
    pool = {r.identity for r in records if r.fold in TRAIN_FOLDS}
    val = {r.identity for r in records if r.split == "val"}
    assert val == {i for i in pool if is_validation_identity(i, 0.5, seed)}
    assert LFW(fake_lfw, val_fraction=0.5, seed=seed).records() == records


def test_val_carving_depends_on_seed_and_fraction(fake_lfw: Path) -> None:
    def val(**kwargs: float) -> set[str]:
        return {r.identity for r in LFW(fake_lfw, **kwargs).records() if r.split == "val"}

    assert val(val_fraction=0.5, seed=0) != val(val_fraction=0.5, seed=1)
    assert val(val_fraction=0.0) == set()


def test_returned_lists_are_copies(fake_lfw: Path) -> None:
    ds = LFW(fake_lfw)
    ds.records().clear()
    ds.pairs().clear()
    assert len(ds.records()) == 90
    assert len(ds.pairs()) == 40


def test_image_folder_variant_is_detected_and_can_be_forced(tmp_path: Path) -> None:
    write_fake_lfw(tmp_path, variant="lfw-funneled")
    assert LFW(tmp_path).variant == "lfw-funneled"
    assert LFW(tmp_path).records()[0].path.parent.parent == tmp_path / "lfw-funneled"
    with pytest.raises(DataNotFoundError, match=r"lfw-deepfunneled\.tgz") as err:
        LFW(tmp_path, variant="lfw-deepfunneled")
    assert str(tmp_path / "lfw-deepfunneled") in str(err.value)
    with pytest.raises(M2FError, match="unknown LFW variant"):
        LFW(tmp_path, variant="lfw-a")


def test_missing_images_folder_names_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        LFW(tmp_path / "nowhere")
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "nowhere" / "lfw-deepfunneled") in message
    assert "http://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz" in message


@pytest.mark.parametrize("name", ["pairs.txt", "people.txt"])
def test_missing_text_file_names_where_to_put_it(fake_lfw: Path, name: str) -> None:
    (fake_lfw / name).unlink()
    with pytest.raises(DataNotFoundError, match=f"missing {name}") as err:
        LFW(fake_lfw)
    assert str(fake_lfw / name) in str(err.value)
    assert f"http://vis-www.cs.umass.edu/lfw/{name}" in str(err.value)


def _rewrite_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("lineno", "text"),
    [
        (1, "10 two"),  # header
        (2, "Person01_Alpha\t1"),  # matched line with a missing number
        (4, "Person01_Alpha\t3\tPerson01_Charlie"),  # mismatched line with a missing number
        (3, "Person01_Bravo\t1\tPerson01_Alpha\t2"),  # mismatched line in the matched block
    ],
)
def test_bad_pairs_line_is_reported_with_its_line_number(
    fake_lfw: Path, lineno: int, text: str
) -> None:
    _rewrite_line(fake_lfw / "pairs.txt", lineno, text)
    with pytest.raises(M2FError, match=f"pairs.txt:{lineno}: expected"):
        LFW(fake_lfw).pairs()


def test_truncated_pairs_file_is_reported(fake_lfw: Path) -> None:
    lines = (fake_lfw / "pairs.txt").read_text().splitlines()
    (fake_lfw / "pairs.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(M2FError, match=r"pairs\.txt:41: expected .* got end of file"):
        LFW(fake_lfw).pairs()


def test_bad_people_line_is_reported_with_its_line_number(fake_lfw: Path) -> None:
    _rewrite_line(fake_lfw / "people.txt", 3, "Person01_Alpha four")
    with pytest.raises(M2FError, match=r"people\.txt:3: expected"):
        LFW(fake_lfw).records()


def test_pair_pointing_at_a_missing_image_names_the_image(fake_lfw: Path) -> None:
    missing = fake_lfw / "lfw-deepfunneled" / "Person01_Alpha" / "Person01_Alpha_0002.jpg"
    missing.unlink()
    with pytest.raises(DataNotFoundError, match=r"pairs\.txt:2: image") as err:
        LFW(fake_lfw).pairs()
    assert str(missing) in str(err.value)


def test_pair_across_people_folds_is_rejected(fake_lfw: Path) -> None:
    # A fold-2 person in a fold-1 pair would leak identities across folds.
    _rewrite_line(fake_lfw / "pairs.txt", 4, "Person01_Alpha\t3\tPerson02_Charlie\t1")
    with pytest.raises(M2FError, match=r"pairs\.txt:4: Person02_Charlie is in pairs fold 1"):
        LFW(fake_lfw).pairs()


def test_pair_with_unknown_person_is_rejected(fake_lfw: Path) -> None:
    _rewrite_line(fake_lfw / "pairs.txt", 2, "Nobody_Known\t1\t2")
    with pytest.raises(M2FError, match=r"pairs\.txt:2: Nobody_Known .* no fold"):
        LFW(fake_lfw).pairs()


def test_person_folder_missing_from_people_txt_is_rejected(fake_lfw: Path) -> None:
    extra = fake_lfw / "lfw-deepfunneled" / "Stranger_Person"
    extra.mkdir()
    shutil.copy(
        next((fake_lfw / "lfw-deepfunneled").rglob("*.jpg")), extra / "Stranger_Person_0001.jpg"
    )
    with pytest.raises(M2FError, match="unknown identity") as err:
        LFW(fake_lfw).records()
    assert str(extra) in str(err.value)


def test_image_directly_in_images_folder_is_a_layout_error(fake_lfw: Path) -> None:
    stray = fake_lfw / "lfw-deepfunneled" / "Person01_Alpha_0001.jpg"
    shutil.copy(fake_lfw / "lfw-deepfunneled" / "Person01_Alpha" / stray.name, stray)
    with pytest.raises(M2FError, match="wrong LFW layout") as err:
        LFW(fake_lfw).records()
    assert str(stray) in str(err.value)


def test_misnamed_image_is_a_layout_error(fake_lfw: Path) -> None:
    folder = fake_lfw / "lfw-deepfunneled" / "Person01_Alpha"
    (folder / "Person01_Alpha_0004.jpg").rename(folder / "Person02_Alpha_0004.jpg")
    with pytest.raises(M2FError, match=r"should be named Person01_Alpha_NNNN\.jpg"):
        LFW(fake_lfw).records()


def test_hidden_files_are_ignored(fake_lfw: Path) -> None:
    folder = fake_lfw / "lfw-deepfunneled" / "Person01_Alpha"
    (folder / "._Person01_Alpha_0001.jpg").write_bytes(b"resource fork")
    (fake_lfw / "lfw-deepfunneled" / ".DS_Store").write_bytes(b"finder")
    assert len(LFW(fake_lfw).records()) == 90


def test_open_uses_the_data_home_without_downloading_what_is_present(fake_lfw: Path) -> None:
    settings = Settings(data_home=fake_lfw.parent, model_home=fake_lfw.parent, offline=True)
    ds = LFW.open(settings, val_fraction=0.0)
    assert ds.root == fake_lfw
    assert {r.split for r in ds.records()} == {"train", "test", "unused"}


def test_tree_digest_sees_content_and_names(fake_lfw: Path) -> None:
    tree = fake_lfw / "lfw-deepfunneled"
    before = lfw_tree_digest(tree)
    assert before == lfw_tree_digest(tree)
    image = tree / "Person01_Alpha" / "Person01_Alpha_0001.jpg"
    image.write_bytes(image.read_bytes() + b"\0")
    changed = lfw_tree_digest(tree)
    assert changed != before
    image.rename(image.with_name("Person01_Alpha_0009.jpg"))
    assert lfw_tree_digest(tree) not in (before, changed)


@pytest.mark.data
def test_real_lfw_counts_and_splits(lfw_home: Path) -> None:
    ds = LFW(lfw_home / "lfw")
    records = ds.records()
    assert len(records) == 13_233
    assert len({r.identity for r in records}) == 5_749
    assert len(ds.people_folds()) == 5_749
    pairs = ds.pairs()
    assert len(pairs) == 6_000
    assert Counter((p.fold, p.same) for p in pairs) == {
        (k, same): 300 for k in range(1, 11) for same in (True, False)
    }
    assert len(ds.test_pairs()) == 3_000
    # 7,701 images are used by all View 2 pairs (shared/README.md); 3,890 by folds 6–10.
    assert len({i for p in pairs for i in (p.a, p.b)}) == 7_701
    test = ds.select("test")
    assert len(test) == 3_890
    assert {r.image_id for r in test} == {i for p in ds.test_pairs() for i in (p.a, p.b)}
    train_identities = {r.identity for r in ds.select("train")}
    assert len(train_identities) == 2_835
    assert not train_identities & {r.identity for r in test}


@pytest.mark.data
def test_real_lfw_tree_digest_matches_the_constant(lfw_home: Path) -> None:
    assert lfw_tree_digest(lfw_home / "lfw" / "lfw-deepfunneled") == DEEPFUNNELED_TREE_SHA256
