from __future__ import annotations

import numpy as np
import pytest

from m2f_bench.errors import ModelNotFoundError, NoFaceError
from m2f_bench.faces.align import (
    ARCFACE_TEMPLATE,
    CHIP_SIZE,
    CropGeometry,
    transform_points,
    umeyama_similarity,
)
from m2f_bench.faces.detect import Detection, central_face
from m2f_bench.faces.landmarks import five_point
from m2f_bench.faces.pipeline import AlignerConfig


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rot).T + shift
    matrix = umeyama_similarity(src, dst)
    assert np.allclose(matrix[:, :2], scale * rot)
    assert np.allclose(matrix[:, 2], shift)


@pytest.mark.parametrize("size", [112, 128, 256])
def test_chip_warp_maps_crop_template_onto_arcface_template(size):
    geometry = CropGeometry(size)
    chip_points = transform_points(geometry.template, geometry.chip_matrix)
    assert np.allclose(chip_points, ARCFACE_TEMPLATE, atol=1e-9)
    # The whole chip lies inside the crop.
    inverse = np.linalg.inv(np.vstack([geometry.chip_matrix, [0, 0, 1]]))[:2]
    corners = transform_points(np.array([[0, 0], [CHIP_SIZE, CHIP_SIZE]]), inverse)
    assert corners.min() >= 0 and corners.max() <= size


def test_chip_of_a_crop_is_112_pixels():
    geometry = CropGeometry(128)
    crops = np.zeros((3, 128, 128, 3), np.uint8)
    assert geometry.chip(crops).shape == (3, 112, 112, 3)
    with pytest.raises(ValueError, match="128"):
        geometry.chip(np.zeros((100, 100, 3), np.uint8))


def test_central_face_prefers_the_face_nearest_the_centre():
    def det(x):
        return Detection(np.array([x, 40.0, x + 20, 60.0]), 0.9, None, "t")

    picked = central_face([det(0.0), det(40.0), det(75.0)], (100, 100, 3))
    assert picked.box[0] == 40.0


def test_five_point_takes_eye_centres_nose_and_mouth_corners():
    lm = np.zeros((68, 2))
    lm[36:42] = [10, 20]
    lm[42:48] = [30, 20]
    lm[30], lm[48], lm[54] = [20, 30], [12, 40], [28, 40]
    assert np.array_equal(five_point(lm), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])


def test_hog_aligner_aligns_a_real_face(hog_aligner, astronaut):
    face = hog_aligner.align(astronaut)
    assert face.crop.shape == (128, 128, 3)
    assert face.detector == "dlib-hog"
    # The eyes found by the landmark model land near the template's eye positions.
    eyes = five_point(face.landmarks)[:2]
    assert np.abs(eyes - hog_aligner.geometry.template[:2]).max() < 6
    # Landmarks are ordered top to bottom: brows above eyes above nose above chin.
    lm = face.landmarks
    assert lm[19, 1] < lm[37, 1] < lm[30, 1] < lm[57, 1] < lm[8, 1] < 128


def test_no_face_and_tiny_images_are_reported(hog_aligner):
    with pytest.raises(NoFaceError, match="no face"):
        hog_aligner.align(np.full((120, 120, 3), 128, np.uint8))
    with pytest.raises(NoFaceError, match="too small"):
        hog_aligner.align(np.zeros((20, 40, 3), np.uint8))


def test_scrfd_choice_without_model_file_is_one_line(offline_settings):
    with pytest.raises(ModelNotFoundError) as info:
        AlignerConfig.resolve(offline_settings, detector="scrfd")
    message = str(info.value)
    assert "scrfd_500m_kps.onnx" in message and "put it at" in message
    assert "\n" not in message


def test_auto_falls_back_to_hog_without_model_home(offline_settings):
    config = AlignerConfig.resolve(offline_settings, detector="auto")
    assert config.scrfd_path is None and config.use_hog


@pytest.mark.data
def test_scrfd_aligns_the_central_face_of_a_group_photo(model_home):
    import os

    import insightface

    from m2f_bench._io import read_image
    from m2f_bench.settings import Settings

    settings = Settings(data_home=model_home, model_home=model_home)
    aligner = AlignerConfig.resolve(settings, detector="scrfd").build()
    group = read_image(os.path.join(os.path.dirname(insightface.__file__), "data/images/t1.jpg"))
    detections = aligner.detectors[0].detect(group)
    assert len(detections) >= 5  # the photo shows six people
    face = aligner.align(group)
    assert face.detector == "scrfd" and face.det_score > 0.5
    centre = (face.box[:2] + face.box[2:]) / 2
    others = [d for d in detections if not np.allclose(d.box, face.box)]
    image_centre = np.array(group.shape[1::-1]) / 2
    assert all(
        np.linalg.norm(centre - image_centre) <= np.linalg.norm(d.centre - image_centre)
        for d in others
    )
    # The similarity fit puts the keypoints near the template (residuals of a 5-point fit).
    in_crop = transform_points(face.keypoints, face.matrix)
    assert np.abs(in_crop - aligner.geometry.template).max() < 6


def test_hog_detects_on_a_downscaled_copy_of_a_huge_photo_and_maps_the_box_back(astronaut):
    import cv2

    from m2f_bench.faces.detect import DlibHOGDetector

    detector = DlibHOGDetector(max_side=1024)

    def best(found):
        return max(found, key=lambda d: d.score)

    huge = cv2.resize(astronaut, (4096, 4096), interpolation=cv2.INTER_CUBIC)
    # What HOG finds on the 1024-px copy, in the huge photo's pixels (4× its box).
    copy = cv2.resize(huge, (1024, 1024), interpolation=cv2.INTER_AREA)
    expected = best(DlibHOGDetector(max_side=4096).detect(copy)).box * 4
    np.testing.assert_allclose(best(detector.detect(huge)).box, expected)
    # And that is the face the 512-px original shows, at 8× (HOG's scale steps move a
    # box by some percent of its size).
    small = best(detector.detect(astronaut)).box * 8
    assert np.abs(expected - small).max() < 0.2 * (small[2] - small[0])
