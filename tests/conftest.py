"""Shared fixtures: real faces that ship with the dependencies, and the data/model homes."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from m2f_bench.settings import Settings


def _home(env: str) -> Path | None:
    value = _HOMES.get(env)
    return Path(value).resolve() if value else None


# Read once, before any test patches the environment.
_HOMES = {name: os.environ.get(name) for name in ("M2F_DATA_HOME", "M2F_MODEL_HOME")}


@pytest.fixture(scope="session")
def model_home() -> Path:
    """The model home holding the shared ONNX models; skips when it is not configured."""
    home = _home("M2F_MODEL_HOME")
    if home is None or not (home / "scrfd_500m_kps.onnx").is_file():
        pytest.skip("needs M2F_MODEL_HOME with scrfd_500m_kps.onnx (e.g. ../shared/models)")
    return home


@pytest.fixture(scope="session")
def lfw_home() -> Path:
    """The data home holding LFW; skips when it is not configured."""
    home = _home("M2F_DATA_HOME")
    if home is None or not (home / "lfw" / "pairs.txt").is_file():
        pytest.skip("needs M2F_DATA_HOME with lfw/ (e.g. ../shared/data)")
    return home


@pytest.fixture(scope="session")
def celeba_home() -> Path:
    """The data home holding the CelebA subset; skips when it is not configured."""
    home = _home("M2F_DATA_HOME")
    if home is None or not (home / "celeba" / "identity_CelebA.txt").is_file():
        pytest.skip("needs M2F_DATA_HOME with celeba/ (e.g. ../shared/data)")
    return home


@pytest.fixture(scope="session")
def offline_settings(tmp_path_factory) -> Settings:
    """Settings with empty homes and no network: only what ships with the packages."""
    root = tmp_path_factory.mktemp("homes")
    return Settings(data_home=root / "data", model_home=root / "models", offline=True)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """Eileen Collins' portrait, a real face photo shipped by scikit-image."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def hog_aligner():
    """An aligner on dlib's HOG detector: works with no model home."""
    from m2f_bench.faces.pipeline import AlignerConfig

    return AlignerConfig(size=128, scrfd_path=None, use_hog=True).build()


@pytest.fixture
def serve_dir(tmp_path):
    """Serve a folder over HTTP on 127.0.0.1; yields (folder, base URL)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nothing"


@pytest.fixture
def plugin_distribution(tmp_path, monkeypatch):
    """Installs an installed-looking package whose entry points a registry finds afresh.

    Call it with the package name, its ``__init__.py`` source, the registry, and the
    entry points as ``{name: "module:attr"}`` in the registry's group.
    """
    installed = []

    def install(package: str, source: str, registry, entries: dict[str, str]) -> None:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{package}-0.1.dist-info"
        info.mkdir()
        name = package.replace("_", "-")
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
        lines = "".join(f"{entry} = {target}\n" for entry, target in entries.items())
        (info / "entry_points.txt").write_text(f"[{registry.entry_point_group}]\n{lines}")
        monkeypatch.syspath_prepend(str(tmp_path))
        # The module registry scans entry points once; scan again with this one on the path.
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_entry_points_loaded", False)
        installed.append(package)

    yield install
    for package in installed:
        sys.modules.pop(package, None)


def write_tiny_arcface(path: Path, dim: int = 8, op_type: str = "Gemm") -> Path:
    """A small ArcFace-shaped ONNX recognizer (N×3×112×112 → N×dim) with random weights.

    It uses the operators ArcFace CNNs are exported with — Conv, BatchNormalization, PRelu,
    Clip, Relu, Add, Mul, MaxPool, AveragePool, GlobalAveragePool, Flatten — and a head ``op_type``
    (``Gemm``, or any other name to build a graph with an operator nobody supports).
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)

    def init(name: str, shape: tuple[int, ...], scale: float = 0.3) -> object:
        array = rng.normal(0, scale, size=shape).astype(np.float32)
        return numpy_helper.from_array(array, name)

    c = 6
    inits = [
        init("w1", (c, 3, 3, 3)),
        init("b1", (c,)),
        init("bn_s", (c,)),
        init("bn_b", (c,)),
        init("bn_m", (c,), 0.1),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), "bn_v"),
        init("slope", (c, 1, 1), 0.2),
        init("wd", (c, 1, 3, 3)),
        init("scale", (1, c, 1, 1)),
        numpy_helper.from_array(np.float32(0.0), "lo"),
        numpy_helper.from_array(np.float32(6.0), "hi"),
        init("fc", (dim, c * 16)),
        init("fc_b", (dim,), 0.01),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1] * 4),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"]),
        helper.make_node("PRelu", ["bn", "slope"], ["p"]),
        helper.make_node("Conv", ["p", "wd"], ["dw"], group=c, pads=[1] * 4),
        helper.make_node("Clip", ["dw", "lo", "hi"], ["clip"]),
        helper.make_node("Add", ["clip", "p"], ["res"]),
        helper.make_node("Mul", ["res", "scale"], ["mul"]),
        helper.make_node("Relu", ["mul"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        # A 4×4 grid of averages less their mean keeps where things are: embeddings that
        # tell crops apart.
        helper.make_node("AveragePool", ["pool"], ["avg"], kernel_shape=[7, 7], strides=[7, 7]),
        helper.make_node("GlobalAveragePool", ["pool"], ["gap"]),
        helper.make_node("Sub", ["avg", "gap"], ["feat"]),
        helper.make_node("Flatten", ["feat"], ["flat"]),
        helper.make_node(op_type, ["flat", "fc", "fc_b"], ["embeddings"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-arcface",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path
