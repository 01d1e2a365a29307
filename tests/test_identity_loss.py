"""The identity loss: an ArcFace ONNX graph run in PyTorch, on the benchmark's chip."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from conftest import write_tiny_arcface  # noqa: E402

from m2f_bench.errors import M2FError  # noqa: E402
from m2f_bench.faces.align import CropGeometry  # noqa: E402
from m2f_bench.training.identity import IdentityLoss, build_identity_loss  # noqa: E402
from m2f_bench.training.onnx_torch import OnnxModule  # noqa: E402


def _ort(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_converted_graph_matches_onnx_runtime(tmp_path):
    path = write_tiny_arcface(tmp_path / "tiny.onnx")
    x = np.random.default_rng(0).normal(size=(3, 3, 112, 112)).astype(np.float32)
    module = OnnxModule(path)
    out = module(torch.from_numpy(x)).numpy()
    ref = _ort(path, x)
    assert out.shape == ref.shape == (3, 8)
    np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
    # Frozen: nothing to train, but the input gets a gradient.
    assert not any(p.requires_grad for p in module.parameters())
    xt = torch.from_numpy(x).requires_grad_(True)
    module(xt).pow(2).sum().backward()
    assert xt.grad is not None and xt.grad.abs().sum() > 0


def test_unsupported_operators_and_bad_files_are_one_line(tmp_path):
    path = write_tiny_arcface(tmp_path / "odd.onnx", op_type="LpNormalization")
    with pytest.raises(M2FError, match="LpNormalization") as info:
        OnnxModule(path)
    assert "\n" not in str(info.value)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(M2FError, match="cannot read ONNX model"):
        OnnxModule(bad)


def test_identity_embedding_is_the_benchmarks_chip_embedding(tmp_path, astronaut, hog_aligner):
    """The loss sees the crop as ``arcface-onnx`` does: same warp, normalisation and model
    (the chip alone), up to bicubic sampling in PyTorch instead of OpenCV."""
    from m2f_bench.recognition.arcface_onnx import ArcFaceONNX

    path = write_tiny_arcface(tmp_path / "tiny.onnx", dim=16)
    crop = hog_aligner.align(astronaut).crop
    crops = np.stack([crop, crop[:, ::-1], np.roll(crop, 5, axis=0)])
    recognizer = ArcFaceONNX(str(path), mirror="none", input_mean=127.5, input_std=128.0)
    ref = recognizer.embed(crops, CropGeometry(128))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    loss = IdentityLoss(path, mean=127.5, std=128.0)
    x = torch.from_numpy(crops.copy()).permute(0, 3, 1, 2).float() / 127.5 - 1
    cos = (loss.embed(x).numpy() * ref).sum(axis=1)
    assert cos.min() > 0.999
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-5)
    assert float(loss(x, x.flip(0))) > 1e-3


def test_shared_mobilefacenet_in_pytorch_equals_onnx_runtime(model_home, astronaut, hog_aligner):
    from m2f_bench.recognition.arcface_onnx import ArcFaceONNX

    path = model_home / "mobilefacenet_arcface.onnx"
    x = np.random.default_rng(1).normal(size=(2, 3, 112, 112)).astype(np.float32)
    np.testing.assert_allclose(
        OnnxModule(path)(torch.from_numpy(x)).numpy(), _ort(path, x), atol=1e-4
    )
    crop = hog_aligner.align(astronaut).crop
    ref = ArcFaceONNX(str(path), mirror="none").embed(crop[None], CropGeometry(128))[0]
    loss = build_identity_loss(str(path))
    x = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    cos = float(loss.embed(x)[0] @ torch.from_numpy(ref / np.linalg.norm(ref)))
    assert cos > 0.9999


def test_the_loss_chip_is_the_benchmarks_chip_pixel_for_pixel(astronaut, hog_aligner):
    """The grid_sample warp equals CropGeometry.chip (OpenCV, bicubic) on a real crop."""
    from torch.nn import functional as F

    from m2f_bench.training.identity import chip_grid

    crop = hog_aligner.align(astronaut).crop
    expected = CropGeometry(128).chip(crop).astype(np.float64)
    image = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None].double()
    chip = F.grid_sample(image, chip_grid(128).double(), mode="bicubic", align_corners=False)
    # Bicubic overshoots at sharp edges; OpenCV saturates to uint8 (as the loss clamps)
    # and rounds: half a level apart at most.
    got = chip[0].permute(1, 2, 0).numpy().clip(0, 255)
    assert np.abs(got - expected).max() < 0.51
    # A grid off by half a crop pixel is not: the test can tell a misaligned chip.
    shifted = F.grid_sample(
        image, chip_grid(128).double() + 1 / 128, mode="bicubic", align_corners=False
    )
    assert np.abs(shifted[0].permute(1, 2, 0).numpy().clip(0, 255) - expected).max() > 20


def _graph(path, nodes, inputs, output_shape, inits=()):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_gather_prelu_broadcasting_and_shape_arithmetic_follow_onnx(tmp_path):
    from onnx import helper, numpy_helper

    x = np.random.default_rng(2).normal(size=(2, 3, 4, 5)).astype(np.float32)
    inits = [
        numpy_helper.from_array(np.array([-1, 0], np.int64), "idx"),
        numpy_helper.from_array(np.linspace(0.1, 0.5, 5, dtype=np.float32), "slope_w"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "shape"),
    ]
    nodes = [
        # Negative axis and indices: columns 4 and 0 of the last axis.
        helper.make_node("Gather", ["x", "idx"], ["g"], axis=-1),
        # A slope of shape (5,) broadcasts over the last axis (W), not the channels.
        helper.make_node("PRelu", ["x", "slope_w"], ["p"]),
        helper.make_node("Gather", ["p", "idx"], ["pg"], axis=-1),
        helper.make_node("Add", ["g", "pg"], ["s"]),
        helper.make_node("Reshape", ["s", "shape"], ["y"]),
    ]
    path = _graph(tmp_path / "ops.onnx", nodes, [("x", [2, 3, 4, 5])], [2, 24], inits)
    out = OnnxModule(path)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, _ort(path, x), atol=1e-6)


@pytest.mark.parametrize(
    ("attrs", "match"),
    [({"ceil_mode": 1}, "ceil_mode"), ({"dilations": [2, 2]}, "dilations")],
)
def test_pooling_options_it_would_ignore_are_refused(tmp_path, attrs, match):
    from onnx import helper

    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], **attrs)
    path = _graph(tmp_path / "pool.onnx", [node], [("x", [1, 1, 8, 8])], [1, 1, 4, 4])
    with pytest.raises(M2FError, match=match):
        OnnxModule(path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_shared_mobilefacenet_runs_on_cuda(model_home):
    loss = build_identity_loss(str(model_home / "mobilefacenet_arcface.onnx")).to("cuda")
    x = torch.rand(2, 3, 128, 128, device="cuda") * 2 - 1
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-4)
