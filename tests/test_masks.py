"""Synthetic masks on a real face: scikit-image's astronaut, aligned with dlib's landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from m2f_bench.errors import M2FError, UnknownNameError
from m2f_bench.faces.align import CropGeometry, transform_points
from m2f_bench.masks import MASK_STYLES, MASK_TYPES, MaskedFace, apply_mask, contact_sheet, mask_rng

#: iBUG 300-W index of each landmark's mirror image (left ↔ right in the image).
MIRROR_68 = np.array(
    [
        *range(16, -1, -1),  # jaw
        *range(26, 16, -1),  # brows
        *(27, 28, 29, 30, 35, 34, 33, 32, 31),  # nose
        *(45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40),  # eyes
        *(54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55),  # outer lips
        *(64, 63, 62, 61, 60, 67, 66, 65),  # inner lips
    ]
)


@pytest.fixture(scope="module")
def astronaut() -> tuple[np.ndarray, np.ndarray]:
    """The photo and its 68 dlib landmarks in photo pixels."""
    dlib = pytest.importorskip("dlib")
    models = pytest.importorskip("face_recognition_models")
    from skimage import data

    image = data.astronaut()
    rects, scores, _ = dlib.get_frontal_face_detector().run(image, 0, 0)
    assert rects, "dlib finds no face in the astronaut photo"
    rect = rects[int(np.argmax(scores))]
    predictor = dlib.shape_predictor(models.pose_predictor_model_location())
    parts = predictor(image, rect).parts()
    return image, np.array([[p.x, p.y] for p in parts], dtype=np.float64)


def aligned(astronaut: tuple[np.ndarray, np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's aligned crop of side ``size`` and her landmarks in it."""
    image, points = astronaut
    keypoints = np.stack(
        [points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]
    )
    geometry = CropGeometry(size)
    matrix = geometry.alignment(keypoints)
    return geometry.warp(image, matrix), transform_points(points, matrix)


@pytest.fixture(scope="module")
def face(astronaut) -> tuple[np.ndarray, np.ndarray]:
    return aligned(astronaut, 128)


def covered(masked: MaskedFace, points: np.ndarray) -> np.ndarray:
    """Whether each landmark's pixel is in the hole."""
    pixel = np.round(points).astype(int)
    return masked.hole[pixel[:, 1], pixel[:, 0]]


def test_every_type_is_registered() -> None:
    assert set(MASK_TYPES) <= set(MASK_STYLES.names())
    assert len(MASK_TYPES) >= 6


@pytest.mark.parametrize("mask_type", MASK_TYPES)
def test_mask_covers_nose_to_chin_and_leaves_the_rest(face, mask_type: str) -> None:
    crop, points = face
    masked = apply_mask(crop, points, mask_type, image_id="astronaut")

    assert masked.mask_type == mask_type
    assert masked.image.shape == crop.shape and masked.image.dtype == np.uint8
    assert masked.hole.shape == crop.shape[:2] and masked.hole.dtype == bool
    np.testing.assert_array_equal(masked.image[~masked.hole], crop[~masked.hole])
    changed = np.any(masked.image != crop, axis=2)
    assert changed[masked.hole].mean() > 0.9
    assert 0.1 < masked.coverage < 0.6
    assert masked.coverage == pytest.approx(masked.hole.mean())

    assert not covered(masked, points[36:48]).any(), "an eye is under the mask"
    assert covered(masked, points[[8, 29, 30, 33]]).all(), "chin or nose left bare"
    assert covered(masked, points[48:68]).all(), "mouth left bare"
    below_chin = points[8] + 0.05 * (points[8] - points[27])
    assert covered(masked, below_chin[None]).all(), "mask ends above the chin"


def test_same_arguments_give_identical_output(face) -> None:
    crop, points = face
    first = apply_mask(crop, points, "cloth", image_id="a", seed=3)
    second = apply_mask(crop.copy(), points.copy(), "cloth", image_id="a", seed=3)
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.hole, second.hole)


@pytest.mark.parametrize("change", [{"seed": 1}, {"image_id": "b"}])
def test_seed_and_image_id_change_the_mask(face, change: dict) -> None:
    crop, points = face
    args = {"image_id": "a", "seed": 0}
    base = apply_mask(crop, points, "surgical_blue", **args)
    other = apply_mask(crop, points, "surgical_blue", **(args | change))
    assert not np.array_equal(base.image, other.image)


def test_mask_rng_is_fixed_by_its_arguments() -> None:
    # A golden value: the stream must not depend on the process (no salted hash()).
    draws = mask_rng("Aaron_Peirsol_0001", "surgical_blue", 0).integers(0, 2**32, size=3)
    np.testing.assert_array_equal(draws, [4107385033, 2816086696, 2991229795])
    assert mask_rng("x", "n95", 0).random() != mask_rng("x", "n95", 1).random()


def test_types_look_different(face) -> None:
    crop, points = face
    images = [apply_mask(crop, points, t, image_id="a").image.astype(int) for t in MASK_TYPES]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 1.0, (MASK_TYPES[i], MASK_TYPES[j])


@pytest.mark.parametrize("size", [64, 256])
def test_geometry_scales_with_the_crop(astronaut, face, size: int) -> None:
    crop, points = aligned(astronaut, size)
    masked = apply_mask(crop, points, "kn95", image_id="a")
    assert masked.image.shape == (size, size, 3)
    assert not covered(masked, points[36:48]).any()
    assert covered(masked, points[[8, 30, 51, 57]]).all()
    reference = apply_mask(*face, "kn95", image_id="a")
    assert masked.coverage == pytest.approx(reference.coverage, abs=0.03)


def test_mirrored_face_gets_a_mirrored_mask(face) -> None:
    crop, points = face
    size = crop.shape[1]
    mirrored_points = np.stack([size - 1 - points[:, 0], points[:, 1]], axis=1)[MIRROR_68]
    for mask_type in MASK_TYPES:
        masked = apply_mask(crop, points, mask_type, image_id="a")
        mirrored = apply_mask(crop[:, ::-1], mirrored_points, mask_type, image_id="a")
        flipped = mirrored.hole[:, ::-1]
        iou = (masked.hole & flipped).sum() / (masked.hole | flipped).sum()
        assert iou > 0.8, mask_type


def test_rolled_face_gets_a_rolled_mask(face) -> None:
    cv2 = pytest.importorskip("cv2")
    crop, points = face
    size = crop.shape[0]
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), 30, 1.0)
    rolled = cv2.warpAffine(crop, matrix, (size, size))
    masked = apply_mask(crop, points, "surgical_white", image_id="a")
    turned = apply_mask(rolled, transform_points(points, matrix), "surgical_white", image_id="a")
    expected = cv2.warpAffine(masked.hole.astype(np.uint8), matrix, (size, size)) > 0
    iou = (turned.hole & expected).sum() / (turned.hole | expected).sum()
    assert iou > 0.85


def test_mask_running_off_the_crop_is_clipped(face) -> None:
    crop, points = face
    low = points + np.array([0.0, 0.35 * crop.shape[0]])
    masked = apply_mask(crop, low, "cloth", image_id="a")
    np.testing.assert_array_equal(masked.image[~masked.hole], crop[~masked.hole])
    assert masked.hole[-1].any()


def test_surgical_masks_render_without_the_photos(face, monkeypatch) -> None:
    from m2f_bench.masks import _textures

    crop, points = face
    with_photo = apply_mask(crop, points, "surgical_green", image_id="a")
    monkeypatch.setattr(_textures, "_photo", lambda *args: None)
    procedural = apply_mask(crop, points, "surgical_green", image_id="a")
    np.testing.assert_array_equal(procedural.hole, with_photo.hole)
    assert not np.array_equal(procedural.image, with_photo.image)
    hole = procedural.hole
    assert (procedural.image[hole][:, 1] > procedural.image[hole][:, 0]).mean() > 0.8  # green


def test_unknown_type_lists_close_matches(face) -> None:
    with pytest.raises(UnknownNameError, match="surgical_blue"):
        apply_mask(*face, "surgical_blu", image_id="a")


@pytest.mark.parametrize(
    "landmarks",
    [np.zeros((67, 2)), np.zeros((68, 3)), np.full((68, 2), np.nan), np.zeros((68, 2))],
    ids=["67-points", "3-columns", "nan", "degenerate"],
)
def test_bad_landmarks_raise_one_line_error(face, landmarks: np.ndarray) -> None:
    with pytest.raises(M2FError) as error:
        apply_mask(face[0], landmarks, "n95", image_id="a")
    assert "\n" not in str(error.value)


def test_bad_crop_raises(face) -> None:
    with pytest.raises(M2FError, match="uint8"):
        apply_mask(face[0].astype(np.float32), face[1], "n95", image_id="a")


def test_contact_sheet_has_a_tile_per_face_and_type(face) -> None:
    crop, points = face
    faces = [(crop, points, "a"), (crop, points, "b")]
    sheet = contact_sheet(faces, ("n95", "cloth"), labels=False)
    assert sheet.shape == (2 * 128, 3 * 128, 3) and sheet.dtype == np.uint8
    np.testing.assert_array_equal(sheet[:128, :128], crop)
    np.testing.assert_array_equal(
        sheet[128:, 256:], apply_mask(crop, points, "cloth", image_id="b").image
    )
    labelled = contact_sheet(faces, ("n95", "cloth"))
    assert labelled.shape[1] == 3 * 128 and labelled.shape[0] > 2 * 128
    np.testing.assert_array_equal(labelled[-256:], sheet)


def _yawed(points: np.ndarray, amount: float) -> np.ndarray:
    """The landmarks of a head turned to the image right: the right half squeezed."""
    turned = points.copy()
    nose = points[30, 0]
    right = points[:, 0] > nose
    turned[right, 0] = nose + (points[right, 0] - nose) * (1 - amount)
    turned[~right, 0] = nose + (points[~right, 0] - nose) * (1 + 0.3 * amount)
    return turned


@pytest.mark.parametrize("mask_type", ["surgical_blue", "fitted", "n95"])
def test_turned_head_gets_a_narrower_far_side(face, mask_type: str) -> None:
    crop, points = face
    turned = _yawed(points, 0.5)
    masked = apply_mask(crop, turned, mask_type, image_id="a")
    columns = np.nonzero(masked.hole[int(turned[30, 1]) : int(turned[57, 1])].any(0))[0]
    near = turned[30, 0] - columns.min()
    far = columns.max() - turned[30, 0]
    assert far < 0.75 * near
    # Still over the nose and the mouth, and still clear of the eyes.
    assert covered(masked, turned[[30, 33, 48, 54, 57]]).all()
    assert not covered(masked, turned[36:48]).any()


def test_top_edge_reaches_from_mid_nose_to_under_the_eyes(face) -> None:
    crop, points = face
    down = (points[8] - points[27]) / np.hypot(*(points[8] - points[27]))
    heights = []
    for k in range(40):
        masked = apply_mask(crop, points, "surgical_blue", image_id=f"f{k}")
        column = masked.hole[:, round(float(points[28, 0]))]
        top = np.nonzero(column)[0].min()
        heights.append((top - points[27, 1]) / np.hypot(*(points[8] - points[27])) / down[1])
    heights = np.array(heights)
    # Landmark 28 is about a tenth of the way from the eyes to the chin, 29 (mid-nose) a
    # fifth; the soft edge reaches about 0.03 above the outline.
    assert heights.min() < 0.07, "no mask reaches up to just under the eyes"
    assert 0.14 < heights.max() < 0.22, "no mask sits lower, towards mid-nose"
    assert np.median(heights) < 0.11, "most masks should cover the nose bridge"


def test_dark_masks_are_a_large_share(face) -> None:
    cv2 = pytest.importorskip("cv2")
    crop, points = face
    dark = 0
    for mask_type in MASK_TYPES:
        for k in range(10):
            masked = apply_mask(crop, points, mask_type, image_id=f"d{k}")
            core = cv2.erode(masked.hole.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
            dark += cv2.cvtColor(masked.image, cv2.COLOR_RGB2GRAY)[core].mean() < 80
    assert dark / (10 * len(MASK_TYPES)) > 0.3


def test_soft_edge_and_shadow_stay_inside_the_hole(face) -> None:
    crop, points = face
    for mask_type in MASK_TYPES:
        masked = apply_mask(crop, points, mask_type, image_id="e")
        changed = np.any(masked.image != crop, axis=2)
        assert not (changed & ~masked.hole).any(), mask_type
        # The edge is soft: part of the hole is only partly covered by the mask.
        edge = masked.hole & ~changed
        assert edge.mean() < 0.02, mask_type
