from __future__ import annotations

import hashlib
import zipfile

import pytest

from m2f_bench import hub
from m2f_bench._download import RemoteFile
from m2f_bench.errors import ModelNotFoundError
from m2f_bench.settings import Settings

PAYLOAD = b"pretend onnx weights"
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


def _settings(tmp_path, offline=False):
    return Settings(data_home=tmp_path / "d", model_home=tmp_path / "m", offline=offline)


@pytest.fixture
def fake_model(monkeypatch, serve_dir):
    root, url = serve_dir
    with zipfile.ZipFile(root / "pack.zip", "w") as zf:
        zf.writestr("pack/det.onnx", PAYLOAD)
        zf.writestr("pack/other.onnx", b"something else")
    spec = hub.ModelFile(
        filename="fake.onnx",
        sha256=DIGEST,
        source=RemoteFile(url=url + "pack.zip", sha256=DIGEST, member="det.onnx"),
        origin="test",
        license="test",
    )
    monkeypatch.setitem(hub.MODEL_FILES, "fake.onnx", spec)
    return spec


def test_missing_model_is_downloaded_from_its_archive_and_verified(tmp_path, fake_model):
    path = hub.model_path("fake.onnx", _settings(tmp_path))
    assert path == tmp_path / "m" / "fake.onnx"
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in path.parent.iterdir()) == ["fake.onnx"]


def test_checksum_mismatch_saves_nothing(tmp_path, monkeypatch, fake_model):
    bad = hub.ModelFile(
        filename="fake.onnx",
        sha256="0" * 64,
        source=RemoteFile(fake_model.source.url, "0" * 64, "det.onnx"),
        origin="t",
        license="t",
    )
    monkeypatch.setitem(hub.MODEL_FILES, "fake.onnx", bad)
    with pytest.raises(ModelNotFoundError, match="sha256 mismatch"):
        hub.model_path("fake.onnx", _settings(tmp_path))
    assert not (tmp_path / "m" / "fake.onnx").exists()


def test_unreachable_source_names_the_file_and_where_to_put_it(
    tmp_path, monkeypatch, closed_port_url
):
    spec = hub.ModelFile("fake.onnx", DIGEST, RemoteFile(closed_port_url, DIGEST), "t", "t")
    monkeypatch.setitem(hub.MODEL_FILES, "fake.onnx", spec)
    with pytest.raises(ModelNotFoundError) as info:
        hub.model_path("fake.onnx", _settings(tmp_path))
    message = str(info.value)
    assert "fake.onnx" in message and str(tmp_path / "m" / "fake.onnx") in message
    assert "\n" not in message


def test_offline_model_without_source_says_where_to_put_it(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        hub.model_path("mobilefacenet_arcface.onnx", _settings(tmp_path, offline=True))
    assert "put it at" in str(info.value) and "M2F_MODEL_HOME" in str(info.value)


def test_corrupted_model_file_is_refused(tmp_path, fake_model):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "fake.onnx").write_bytes(b"tampered")
    with pytest.raises(ModelNotFoundError, match="does not match its sha256"):
        hub.model_path("fake.onnx", _settings(tmp_path))


@pytest.mark.data
def test_shared_models_match_their_digests(model_home):
    settings = Settings(data_home=model_home, model_home=model_home, offline=True)
    for name in hub.MODEL_FILES:
        assert hub.model_path(name, settings).is_file()
