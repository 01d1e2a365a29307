from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from m2f_bench.errors import M2FError, ModelNotFoundError, UnknownNameError
from m2f_bench.faces.align import CropGeometry
from m2f_bench.faces.landmarks import five_point
from m2f_bench.recognition import (
    RECOGNIZERS,
    EmbeddingCache,
    Recognizer,
    arcface_onnx,
    build_recognizer,
    cosine,
)
from m2f_bench.recognition.arcface_onnx import PRESETS, InputNorm, graph_input_norm
from m2f_bench.settings import Settings

MOBILEFACENET = "mobilefacenet_arcface.onnx"


def _insightface_image(name: str) -> np.ndarray:
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / name
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def faces(hog_aligner, astronaut):
    """Seven different people: the six faces of insightface's t1.jpg, then the astronaut."""
    group = _insightface_image("t1.jpg")
    geometry = hog_aligner.geometry
    crops = []
    for det in sorted(hog_aligner.detectors[0].detect(group), key=lambda d: d.box[0]):
        keypoints = five_point(hog_aligner.landmarks.predict(group, det.box))
        crops.append(geometry.warp(group, geometry.alignment(keypoints)))
    assert len(crops) == 6
    crops.append(hog_aligner.align(astronaut).crop)
    crops = np.stack(crops)
    landmarks = np.stack([hog_aligner.landmarks.predict_in_crop(c) for c in crops])
    return crops, landmarks


def _perturbed(crop: np.ndarray) -> list[np.ndarray]:
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 75])
    assert ok
    shift = np.float32([[1, 0, 1], [0, 1, 1]])
    return [
        cv2.imdecode(buf, cv2.IMREAD_UNCHANGED),
        np.clip(crop.astype(np.int16) + 25, 0, 255).astype(np.uint8),
        cv2.warpAffine(crop, shift, crop.shape[1::-1], borderMode=cv2.BORDER_REPLICATE),
    ]


def _check_identity_separation(recognizer, faces, hog_aligner):
    crops, landmarks = faces
    geometry = hog_aligner.geometry
    emb = recognizer.embed(crops, geometry, landmarks)
    assert emb.dtype == np.float32 and emb.shape == (len(crops), recognizer.embedding_dim)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(emb, recognizer.embed(crops, geometry, landmarks))

    different = 1.0 - (emb @ emb.T)[np.triu_indices(len(crops), 1)]
    same = []
    for crop, ref in zip(crops, emb, strict=True):
        variants = np.stack(_perturbed(crop))
        lms = np.stack([hog_aligner.landmarks.predict_in_crop(v) for v in variants])
        same.extend(1.0 - recognizer.embed(variants, geometry, lms) @ ref)
    # Cosine distance: a perturbed copy stays far closer than the nearest other person.
    assert 4 * max(same) < min(different), (max(same), min(different))


# --- similarity, registry, specs ---------------------------------------------------------


def test_cosine_is_the_row_wise_dot_product():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 8))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    expected = [float(x @ y) for x, y in zip(a, b, strict=True)]
    assert np.allclose(cosine(a, b), expected)
    assert np.allclose(cosine(a, a), 1.0)
    with pytest.raises(ValueError, match="shape"):
        cosine(a, b[:3])


def test_builtin_recognizers_are_registered():
    assert {"arcface-onnx", "dlib-resnet"} <= set(RECOGNIZERS.names())


def test_spec_errors_name_the_problem(offline_settings):
    with pytest.raises(M2FError, match="jitters"):
        build_recognizer({"type": "dlib-resnet", "jitters": 2}, offline_settings)
    with pytest.raises(UnknownNameError, match="did you mean dlib-resnet"):
        build_recognizer({"type": "dlib-resnt"}, offline_settings)
    with pytest.raises(M2FError, match="'type'"):
        build_recognizer({"batch_size": 4}, offline_settings)


def test_arcface_without_a_model_says_where_to_put_it(offline_settings, monkeypatch, tmp_path):
    monkeypatch.setattr(arcface_onnx, "insightface_buffalo_l_dir", lambda: tmp_path / "none")
    with pytest.raises(ModelNotFoundError) as info:
        build_recognizer({"type": "arcface-onnx"}, offline_settings)
    message = str(info.value)
    assert "\n" not in message
    assert MOBILEFACENET in message and str(offline_settings.model_home) in message
    with pytest.raises(ModelNotFoundError, match=r"nowhere\.onnx"):
        build_recognizer({"type": "arcface-onnx", "model": "nowhere.onnx"}, offline_settings)


# --- dlib ResNet (no model home needed) ----------------------------------------------------


@pytest.fixture(scope="module")
def dlib_resnet():
    return RECOGNIZERS.get("dlib-resnet")(batch_size=4)


def test_dlib_resnet_separates_identities_and_ignores_small_perturbations(
    dlib_resnet, faces, hog_aligner
):
    assert dlib_resnet.embedding_dim == 128
    _check_identity_separation(dlib_resnet, faces, hog_aligner)


def test_dlib_resnet_needs_landmarks(dlib_resnet, faces, hog_aligner):
    crops, landmarks = faces
    with pytest.raises(M2FError, match="landmarks"):
        dlib_resnet.embed(crops[:2], hog_aligner.geometry)
    with pytest.raises(ValueError, match="68"):
        dlib_resnet.embed(crops[:2], hog_aligner.geometry, landmarks[:1])


def test_dlib_resnet_workers_give_the_descriptors_of_one_process(faces, hog_aligner):
    crops, landmarks = faces
    # Enough crops for several batches, so that the two workers share the work.
    crops, landmarks = np.concatenate([crops] * 3), np.concatenate([landmarks] * 3)
    cls = RECOGNIZERS.get("dlib-resnet")
    one = cls(batch_size=2, workers=1).embed(crops, hog_aligner.geometry, landmarks)
    pooled = cls(batch_size=2, workers=2)
    try:
        two = pooled.embed(crops, hog_aligner.geometry, landmarks)
    finally:
        pooled.close()
    assert two.shape == one.shape == (len(crops), 128)
    np.testing.assert_allclose(two, one, atol=1e-6)
    # Rows stay in input order: copies of a face get the same descriptor, others do not.
    n = len(faces[0])
    np.testing.assert_allclose(two[:n], two[n : 2 * n], atol=1e-6)
    assert not np.allclose(two[0], two[1], atol=1e-3)
    assert cls(workers=2).key == cls(workers=1).key
    with pytest.raises(M2FError, match="workers"):
        cls(workers=0)


def test_dlib_resnet_config_identifies_the_weights(dlib_resnet):
    config = dlib_resnet.config()
    assert config["model"] == "dlib_face_recognition_resnet_model_v1.dat"
    assert len(config["model_sha256"]) == 64
    assert dlib_resnet.key == RECOGNIZERS.get("dlib-resnet")().key


# --- ArcFace ONNX (needs mobilefacenet_arcface.onnx in the model home) ---------------------


@pytest.fixture(scope="module")
def arc_settings(model_home, tmp_path_factory) -> Settings:
    return Settings(data_home=tmp_path_factory.mktemp("data"), model_home=model_home, offline=True)


@pytest.fixture(scope="module")
def arcface(arc_settings):
    return build_recognizer({"type": "arcface-onnx", "model": MOBILEFACENET}, arc_settings)


@pytest.mark.data
def test_arcface_separates_identities_and_ignores_small_perturbations(arcface, faces, hog_aligner):
    assert arcface.embedding_dim == 128
    _check_identity_separation(arcface, faces, hog_aligner)


@pytest.mark.data
def test_arcface_flip_sum_makes_embeddings_mirror_invariant(arcface, faces, hog_aligner):
    crops, _ = faces
    geometry = hog_aligner.geometry
    chips = geometry.chip(crops)
    # On chips, f(x) + f(mirror x) is symmetric: identical up to float rounding.
    assert np.allclose(
        arcface.embed_chips(chips), arcface.embed_chips(chips[:, :, ::-1]), atol=1e-5
    )
    # On crops, the chip window is centred to within 0.2 px, so nearly so.
    mirrored = arcface.embed(np.ascontiguousarray(crops[:, :, ::-1]), geometry)
    assert cosine(arcface.embed(crops, geometry), mirrored).min() > 0.995


@pytest.mark.data
def test_arcface_feeds_the_network_the_fixed_chip_of_the_crop(
    arcface, faces, hog_aligner, monkeypatch
):
    crops, _ = faces
    geometry = hog_aligner.geometry
    real = arcface._session
    feeds, outputs = [], []

    class Recorder:
        def run(self, names, feed):
            feeds.append(next(iter(feed.values())))
            outputs.append(real.run(names, feed)[0])
            return [outputs[-1]]

    monkeypatch.setattr(arcface, "_session", Recorder())
    emb = arcface.embed(crops[:3], geometry)
    chips = geometry.chip(crops[:3])
    expected = (chips.astype(np.float32) - 127.5) / 128.0  # MobileFaceNet: RGB, (x − 127.5)/128
    assert len(feeds) == 2
    assert np.array_equal(feeds[0], expected.transpose(0, 3, 1, 2))
    assert np.array_equal(feeds[1], expected[:, :, ::-1].transpose(0, 3, 1, 2))
    summed = outputs[0] + outputs[1]
    assert np.allclose(emb, summed / np.linalg.norm(summed, axis=1, keepdims=True), atol=1e-6)


@pytest.mark.data
def test_arcface_chip_route_matches_insightface_aligned_chip(arcface, hog_aligner, faces):
    # Tom_Hanks_54745.png ships with insightface already aligned to the ArcFace template.
    chip = _insightface_image("Tom_Hanks_54745.png")
    face = hog_aligner.align(chip)
    direct = arcface.embed_chips(chip[None])
    via_crop = arcface.embed(face.crop[None], hog_aligner.geometry)
    others = arcface.embed(faces[0], hog_aligner.geometry) @ direct[0]
    assert cosine(direct, via_crop)[0] > 0.8  # measured 0.965
    assert others.max() < 0.5


@pytest.mark.data
def test_arcface_input_normalisation_presets_and_overrides(arcface, arc_settings, faces):
    assert PRESETS[MOBILEFACENET] == InputNorm(127.5, 128.0, "rgb")
    assert PRESETS["w600k_r50.onnx"] == InputNorm(127.5, 127.5, "rgb")
    assert arcface.norm == PRESETS[MOBILEFACENET]

    custom = build_recognizer(
        {"type": "arcface-onnx", "model": MOBILEFACENET, "input_std": 1.0, "color": "bgr"},
        arc_settings,
    )
    assert custom.norm == InputNorm(127.5, 1.0, "bgr")
    assert custom.key != arcface.key
    chips = CropGeometry(128).chip(faces[0][:1])
    blob = custom.blob(chips)
    assert np.array_equal(blob[0, 0], chips[0, :, :, 2].astype(np.float32) - 127.5)  # blue first

    with pytest.raises(M2FError, match="color"):
        build_recognizer(
            {"type": "arcface-onnx", "model": MOBILEFACENET, "color": "gray"}, arc_settings
        )
    with pytest.raises(M2FError, match="device"):
        build_recognizer(
            {"type": "arcface-onnx", "model": MOBILEFACENET, "device": "tpu"}, arc_settings
        )


@pytest.mark.data
def test_models_without_a_preset_follow_insightfaces_graph_rule(model_home, arc_settings, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    # A graph that normalises inside (MXNet export): insightface feeds it raw pixels.
    nodes = [
        helper.make_node("Sub", ["x", "m"], ["y"], name="_minus0"),
        helper.make_node("Mul", ["y", "s"], ["z"], name="_mul0"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])],
        [
            helper.make_tensor("m", TensorProto.FLOAT, [1], [127.5]),
            helper.make_tensor("s", TensorProto.FLOAT, [1], [0.0078125]),
        ],
    )
    onnx.save(helper.make_model(graph), tmp_path / "mxnet.onnx")
    assert graph_input_norm(tmp_path / "mxnet.onnx") == InputNorm(0.0, 1.0)

    renamed = tmp_path / "custom.onnx"
    renamed.symlink_to(model_home / MOBILEFACENET)
    recognizer = build_recognizer({"type": "arcface-onnx", "model": str(renamed)}, arc_settings)
    assert recognizer.norm == InputNorm(127.5, 127.5, "rgb")


@pytest.mark.data
def test_default_model_prefers_buffalo_l_and_falls_back_to_mobilefacenet(
    model_home, tmp_path, monkeypatch
):
    monkeypatch.setattr(arcface_onnx, "insightface_buffalo_l_dir", lambda: tmp_path / "insightface")
    home = tmp_path / "models"
    home.mkdir()
    (home / MOBILEFACENET).symlink_to(model_home / MOBILEFACENET)
    tried = []

    def no_network(sub_dir, name, **kwargs):
        tried.append(name)
        raise OSError("offline")

    monkeypatch.setattr("insightface.utils.storage.ensure_available", no_network)
    online = Settings(data_home=tmp_path / "data", model_home=home, offline=False)
    assert build_recognizer({"type": "arcface-onnx"}, online).model_path.name == MOBILEFACENET
    assert tried == []  # a model is at hand: no download is tried for the other
    offline = Settings(data_home=tmp_path / "data", model_home=home, offline=True)
    build_recognizer({"type": "arcface-onnx"}, offline)
    assert tried == []
    # With no model at all, online, buffalo_l is what gets fetched (here: fails, one line).
    empty = Settings(data_home=tmp_path / "data", model_home=tmp_path / "empty", offline=False)
    with pytest.raises(ModelNotFoundError, match="no ArcFace model"):
        build_recognizer({"type": "arcface-onnx"}, empty)
    assert tried == ["buffalo_l"]

    # A stand-in for w600k_r50.onnx (same interface) in insightface's folder wins.
    (tmp_path / "insightface").mkdir()
    (tmp_path / "insightface" / "w600k_r50.onnx").symlink_to(model_home / MOBILEFACENET)
    chosen = build_recognizer({"type": "arcface-onnx"}, offline)
    assert chosen.model_path.name == "w600k_r50.onnx"
    assert chosen.norm == PRESETS["w600k_r50.onnx"]


# --- embedding cache ------------------------------------------------------------------------


class _Fake(Recognizer):
    name = "fake"
    embedding_dim = 4

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def config(self):
        return {"scale": self.scale}

    def embed(self, crops, geometry, landmarks=None):  # pragma: no cover - not used
        raise NotImplementedError

    def vectors(self, ids):
        return np.stack([np.full(4, self.scale * int(i[1:]), np.float32) for i in ids])


def test_cache_computes_only_missing_ids_and_keeps_order(tmp_path):
    recognizer, calls = _Fake(), []

    def compute(ids):
        calls.append(list(ids))
        return recognizer.vectors(ids)

    cache = EmbeddingCache(tmp_path)
    first = cache.get_or_compute(recognizer, "clean", ["i1", "i2", "i1"], compute)
    assert calls == [["i1", "i2"]]
    assert np.array_equal(first, recognizer.vectors(["i1", "i2", "i1"]))

    again = EmbeddingCache(tmp_path)  # a new process: read back from disk
    got = again.get_or_compute(recognizer, "clean", ["i3", "i2", "i1"], compute)
    assert calls[-1] == ["i3"]
    assert np.array_equal(got, recognizer.vectors(["i3", "i2", "i1"]))
    again.get_or_compute(recognizer, "clean", ["i1", "i2", "i3"], compute)
    assert len(calls) == 2

    # Another variant and another recognizer config are separate entries.
    again.get_or_compute(recognizer, "masked/surgical", ["i1"], compute)
    assert calls[-1] == ["i1"]
    other = _Fake(scale=2.0)
    assert other.key != recognizer.key
    got = again.get_or_compute(other, "clean", ["i1"], other.vectors)
    assert np.array_equal(got, other.vectors(["i1"]))
    assert cache.get_or_compute(recognizer, "clean", [], compute).shape == (0, 4)


def test_cache_recovers_from_a_corrupt_file(tmp_path, caplog):
    recognizer, cache = _Fake(), EmbeddingCache(tmp_path)
    cache.get_or_compute(recognizer, "clean", ["i1"], recognizer.vectors)
    path = cache.path(recognizer, "clean")
    path.write_bytes(b"not an npz")
    calls = []

    def compute(ids):
        calls.append(ids)
        return recognizer.vectors(ids)

    with caplog.at_level(logging.WARNING):
        got = cache.get_or_compute(recognizer, "clean", ["i1", "i2"], compute)
    assert calls == [["i1", "i2"]] and "recomputing" in caplog.text
    assert np.array_equal(got, recognizer.vectors(["i1", "i2"]))
    cache.get_or_compute(recognizer, "clean", ["i1", "i2"], compute)
    assert len(calls) == 1  # the rewritten file is good again


def test_cache_rejects_a_wrong_shape_and_keeps_variant_files_apart(tmp_path):
    recognizer, cache = _Fake(), EmbeddingCache(tmp_path)
    with pytest.raises(ValueError, match="compute returned"):
        cache.get_or_compute(recognizer, "clean", ["i1", "i2"], lambda ids: np.zeros((1, 4)))
    paths = {cache.path(recognizer, v) for v in ("a/b", "a_b", "a b", "..")}
    assert len(paths) == 4
    assert all(p.parent == tmp_path / recognizer.key for p in paths)
