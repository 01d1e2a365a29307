"""dlib's face ResNet in PyTorch: the reader of dlib's network file, and the port against dlib."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from m2f_bench.errors import M2FError
from m2f_bench.faces.landmarks import five_point
from m2f_bench.recognition import RECOGNIZERS, build_recognizer, cosine
from m2f_bench.recognition import _dlib_net as dlib_net


@pytest.fixture(scope="module")
def dat_path() -> Path:
    import face_recognition_models

    return Path(face_recognition_models.face_recognition_model_location())


@pytest.fixture(scope="module")
def net(dat_path):
    return dlib_net.read_dlib_net(dat_path)


@pytest.fixture(scope="module")
def faces(hog_aligner, astronaut):
    """Seven people: the six faces of insightface's t1.jpg and the astronaut, with landmarks."""
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    group = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    geometry = hog_aligner.geometry
    crops = [
        geometry.warp(
            group, geometry.alignment(five_point(hog_aligner.landmarks.predict(group, d.box)))
        )
        for d in sorted(hog_aligner.detectors[0].detect(group), key=lambda d: d.box[0])
    ]
    crops.append(hog_aligner.align(astronaut).crop)
    crops = np.stack(crops)
    landmarks = np.stack([hog_aligner.landmarks.predict_in_crop(c) for c in crops])
    return crops, landmarks


@pytest.fixture(scope="module")
def backends():
    cls = RECOGNIZERS.get("dlib-resnet")
    torch_backend, dlib_backend = cls(batch_size=4), cls(backend="dlib", batch_size=4, workers=2)
    yield torch_backend, dlib_backend
    dlib_backend.close()


# --- the reader ---------------------------------------------------------------------------------


def _anet_conv_shapes() -> list[tuple[int, int, int, int]]:
    """Filter shapes of dnn_face_recognition_ex.cpp's anet_type, input first."""
    shapes, channels = [(32, 3, 7, 7)], 32
    # alevel4 .. alevel0: (filters, blocks); the first block of every level but alevel4
    # downsamples, and its first convolution takes the previous level's channels.
    for filters, blocks in [(32, 3), (64, 4), (128, 3), (256, 3), (256, 1)]:
        for _ in range(blocks):
            shapes += [(filters, channels, 3, 3), (filters, filters, 3, 3)]
            channels = filters
    return shapes


def test_reader_reads_every_layer_of_the_real_network(net):
    assert net.loss["name"] == "loss_metric_2"
    assert (net.loss["margin"], net.loss["distance_threshold"]) == pytest.approx((0.04, 0.6))
    assert net.input_size == (150, 150)
    assert net.input_mean == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)

    kinds = [layer.kind for layer in net.layers]
    counts = {kind: kinds.count(kind) for kind in set(kinds)}
    assert counts == {
        "con": 29,
        "affine": 29,
        "relu": 29,
        "max_pool": 1,
        "avg_pool": 5,  # 4 on the downsampling skips, avg_pool_everything
        "add_prev": 14,
        "fc": 1,
    }
    convs = [layer for layer in net.layers if layer.kind == "con"]
    assert [c.params["filters"].shape for c in convs] == _anet_conv_shapes()
    assert all(c.params["biases"].shape == (c.options["filters"],) for c in convs)
    # dlib pads a stride-1 convolution by half its size, a strided one not at all.
    assert [(c.options["stride"], c.options["padding"]) for c in convs[:3]] == [
        ((2, 2), (0, 0)),
        ((1, 1), (1, 1)),
        ((1, 1), (1, 1)),
    ]
    affines = [layer for layer in net.layers if layer.kind == "affine"]
    assert [a.params["gamma"].shape[0] for a in affines] == [s[0] for s in _anet_conv_shapes()]
    assert net.layers[-1].params["weights"].shape == (256, 128)  # inputs × outputs
    assert net.layers[-1].options["bias"] is False
    assert net.parameter_count() == 5_614_592
    # Weights are trained values, not an all-zero or garbled read.
    assert all(np.isfinite(p).all() for layer in net.layers for p in layer.params.values())
    assert 0.01 < np.abs(convs[0].params["filters"]).mean() < 1
    dlib_net.check_face_resnet(net)


def _one_line_error(path: Path) -> str:
    with pytest.raises(M2FError) as info:
        dlib_net.read_dlib_net(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_truncated_or_corrupt_network_file_is_a_one_line_error(dat_path, tmp_path):
    data = dat_path.read_bytes()
    for cut in (3, 300, 10_000, len(data) - 1):
        truncated = tmp_path / f"cut{cut}.dat"
        truncated.write_bytes(data[:cut])
        assert "truncated" in _one_line_error(truncated)

    garbled = tmp_path / "garbled.dat"
    garbled.write_bytes(data.replace(b"affine_", b"affinX_", 1))
    assert "affinX_" in _one_line_error(garbled)
    trailing = tmp_path / "trailing.dat"
    trailing.write_bytes(data + b"\0\0")
    assert "2 unexpected bytes" in _one_line_error(trailing)
    text = tmp_path / "text.dat"
    text.write_text("not a network\n")
    _one_line_error(text)
    assert "cannot read" in _one_line_error(tmp_path / "missing.dat")


def test_the_recognizer_reports_a_corrupt_network_file_in_one_line(
    dat_path, tmp_path, monkeypatch, offline_settings
):
    import face_recognition_models

    broken = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    broken.write_bytes(dat_path.read_bytes()[:5000])
    monkeypatch.setattr(
        face_recognition_models, "face_recognition_model_location", lambda: str(broken)
    )
    monkeypatch.setattr("m2f_bench.settings.cache_dir", lambda: tmp_path / "cache")
    with pytest.raises(M2FError, match="truncated") as info:
        build_recognizer({"type": "dlib-resnet"}, offline_settings)
    assert "\n" not in str(info.value)


def test_a_network_that_is_not_the_face_resnet_is_rejected(net):
    import copy

    other = copy.deepcopy(net)
    other.layers[4].options["padding"] = (0, 0)
    with pytest.raises(M2FError, match="layer 4"):
        dlib_net.check_face_resnet(other)
    other = copy.deepcopy(net)
    other.chain = [*other.chain[:-3], 1, *other.chain[-3:]]  # one tag layer too many
    with pytest.raises(M2FError, match="structure"):
        dlib_net.check_face_resnet(other)


# --- conversion cache -----------------------------------------------------------------------------


def test_weights_are_converted_once_and_cached_as_safetensors(dat_path, tmp_path, monkeypatch):
    import torch
    from safetensors import safe_open

    first = dlib_net.load_module(dat_path, cache_root=tmp_path)
    (cached,) = tmp_path.glob("*.safetensors")
    with safe_open(cached, framework="pt") as f:
        assert f.metadata()["source"] == dat_path.name
        assert len(f.metadata()["sha256"]) == 64

    def no_parsing(path):
        raise AssertionError("the network file was read again")

    monkeypatch.setattr(dlib_net, "read_dlib_net", no_parsing)
    second = dlib_net.load_module(dat_path, cache_root=tmp_path)
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    monkeypatch.undo()
    cached.write_bytes(b"garbage")  # a damaged cache is converted again
    dlib_net.load_module(dat_path, cache_root=tmp_path)
    with safe_open(cached, framework="pt") as f:
        assert set(f.keys()) == set(dlib_net.build_module().state_dict())


# --- the port against dlib ------------------------------------------------------------------------


def test_port_gives_dlibs_descriptors_on_real_faces(backends, faces):
    torch_backend, dlib_backend = backends
    crops, landmarks = faces
    ported = torch_backend._describe(crops, landmarks)
    reference = dlib_backend._describe(crops, landmarks)
    assert ported.shape == reference.shape == (7, 128)
    assert np.abs(ported - reference).max() <= 1e-5  # measured 4e-7 here, 5e-7 on 384 LFW crops
    normalised = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in (ported, reference)]
    assert cosine(*normalised).min() >= 0.99999
    # Different people are far apart: the agreement is not that of two constant outputs.
    assert np.linalg.norm(reference[0] - reference[1]) > 0.3


def test_backends_embed_alike_and_share_a_cache_key(backends, faces, hog_aligner):
    torch_backend, dlib_backend = backends
    crops, landmarks = faces
    # Copies in several batches, so that dlib's two worker processes share the work.
    crops, landmarks = np.concatenate([crops] * 2), np.concatenate([landmarks] * 2)
    ported = torch_backend.embed(crops, hog_aligner.geometry, landmarks)
    reference = dlib_backend.embed(crops, hog_aligner.geometry, landmarks)
    assert np.abs(ported - reference).max() <= 1e-5
    np.testing.assert_allclose(ported[:7], ported[7:], atol=1e-6)  # batch position is no matter
    assert torch_backend.key == dlib_backend.key
    assert "backend" not in torch_backend.config()


def test_torch_backend_leaves_torchs_thread_count_as_it_was(backends, faces, hog_aligner):
    import torch

    torch_backend, _ = backends
    crops, landmarks = faces
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        torch_backend.embed(crops, hog_aligner.geometry, landmarks)  # two batches, two threads
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_backend_spec_is_checked(offline_settings):
    with pytest.raises(M2FError, match="backend"):
        build_recognizer({"type": "dlib-resnet", "backend": "onnx"}, offline_settings)
    with pytest.raises(M2FError, match="batch_size"):
        RECOGNIZERS.get("dlib-resnet").check_spec({"batch_size": 0})
