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
