"""LFW download from a local HTTP server: verification, cleanup and one-line errors."""

from __future__ import annotations

import http.server
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from test_data_lfw import write_fake_lfw

from m2f_bench._download import RemoteFile, sha256_file
from m2f_bench.data import lfw
from m2f_bench.data.lfw import LFW, lfw_tree_digest
from m2f_bench.errors import DataNotFoundError, DownloadError
from m2f_bench.settings import Settings


class _Server:
    """A static file server on 127.0.0.1 that counts the requests it gets."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(Handler, directory=str(directory))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # A short poll keeps shutdown() from costing half a second per test.
        serve = partial(self.httpd.serve_forever, poll_interval=0.01)
        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What UMass publishes, in miniature: the archive and the two text files."""
    release = tmp_path_factory.mktemp("release")
    write_fake_lfw(release)
    site = tmp_path_factory.mktemp("site")
    with tarfile.open(site / "lfw-deepfunneled.tgz", "w:gz") as tar:
        tar.add(release / "lfw-deepfunneled", arcname="lfw-deepfunneled")
    for name in ("pairs.txt", "people.txt"):
        (site / name).write_bytes((release / name).read_bytes())
    (site / "tree.sha256").write_text(lfw_tree_digest(release / "lfw-deepfunneled"))
    return site


@pytest.fixture
def server(published: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    """The miniature release served locally, with the LFW sources pointing at it."""
    srv = _Server(published)
    for name in ("pairs.txt", "people.txt"):
        remote = RemoteFile(f"{srv.url}/{name}", sha256_file(published / name))
        monkeypatch.setitem(lfw.SOURCES, name, remote)
    monkeypatch.setitem(
        lfw.SOURCES, "lfw-deepfunneled", RemoteFile(f"{srv.url}/lfw-deepfunneled.tgz", None)
    )
    monkeypatch.setattr(lfw, "DEEPFUNNELED_TREE_SHA256", (published / "tree.sha256").read_text())
    yield srv
    srv.close()


def _settings(tmp_path: Path, offline: bool = False) -> Settings:
    return Settings(data_home=tmp_path / "home", model_home=tmp_path / "models", offline=offline)


def test_open_downloads_verifies_and_unpacks(server: _Server, tmp_path: Path) -> None:
    ds = LFW.open(_settings(tmp_path))
    root = tmp_path / "home" / "lfw"
    assert ds.root == root
    assert sorted(p.name for p in root.iterdir()) == [
        "lfw-deepfunneled",
        "pairs.txt",
        "people.txt",
    ]
    assert len(ds.records()) == 90
    assert len(ds.pairs()) == 40
    assert sorted(server.requests) == ["/lfw-deepfunneled.tgz", "/pairs.txt", "/people.txt"]
    LFW.open(_settings(tmp_path))
    assert len(server.requests) == 3, "files already present must not be fetched again"


def test_only_the_missing_file_is_fetched(server: _Server, tmp_path: Path) -> None:
    LFW.open(_settings(tmp_path))
    (tmp_path / "home" / "lfw" / "people.txt").unlink()
    LFW.open(_settings(tmp_path))
    assert server.requests[3:] == ["/people.txt"]


def test_wrong_sha256_leaves_nothing_behind(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(lfw.SOURCES, "pairs.txt", RemoteFile(f"{server.url}/pairs.txt", "0" * 64))
    with pytest.raises(DownloadError, match=r"sha256 mismatch for pairs\.txt"):
        LFW.open(_settings(tmp_path))
    assert list((tmp_path / "home" / "lfw").iterdir()) == []


def test_wrong_tree_digest_deletes_the_unpacked_images(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lfw, "DEEPFUNNELED_TREE_SHA256", "0" * 64)
    with pytest.raises(DownloadError, match="tree digest mismatch for lfw-deepfunneled/"):
        LFW.open(_settings(tmp_path))
    assert "/lfw-deepfunneled.tgz" in server.requests
    # The verified text files stay; no image tree or temporary folder does.
    remaining = sorted(p.name for p in (tmp_path / "home" / "lfw").iterdir())
    assert remaining == ["pairs.txt", "people.txt"]


def test_unreachable_text_file_says_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_port_url: str
) -> None:
    url = closed_port_url
    monkeypatch.setitem(lfw.SOURCES, "pairs.txt", RemoteFile(url, "0" * 64))
    with pytest.raises(DataNotFoundError) as err:
        LFW.open(_settings(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    # A failed download says all that is missing, as --offline does: the image folder
    # first, then why the download did not help.
    with pytest.raises(DataNotFoundError) as offline:
        LFW(tmp_path / "home" / "lfw")
    assert message.startswith(str(offline.value))
    assert "download failed: missing pairs.txt:" in message
    assert not (tmp_path / "home").exists()  # the failed attempt left no empty folders
    assert f"Put the file at {tmp_path / 'home' / 'lfw' / 'pairs.txt'}" in message
    assert url in message


def test_failed_download_into_a_default_cache_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_port_url: str
) -> None:
    """The default data home is <user cache>/m2f-bench/data: a failed first download
    must not leave m2f-bench/ (nor data/, lfw/) behind in the user's cache."""
    monkeypatch.setitem(lfw.SOURCES, "pairs.txt", RemoteFile(closed_port_url, "0" * 64))
    cache = tmp_path / "cache"
    cache.mkdir()
    settings = Settings(data_home=cache / "m2f-bench" / "data", model_home=tmp_path / "m")
    with pytest.raises(DataNotFoundError):
        LFW.open(settings)
    assert list(cache.iterdir()) == []


def test_unreachable_archive_says_where_to_put_the_images(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, closed_port_url: str
) -> None:
    url = closed_port_url
    monkeypatch.setitem(lfw.SOURCES, "lfw-deepfunneled", RemoteFile(url, None))
    with pytest.raises(DataNotFoundError) as err:
        LFW.open(_settings(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("missing LFW images: no lfw-deepfunneled/")
    assert "download failed: missing lfw-deepfunneled/:" in message
    assert str(tmp_path / "home" / "lfw" / "lfw-deepfunneled") in message
    assert url in message
    remaining = sorted(p.name for p in (tmp_path / "home" / "lfw").iterdir())
    assert remaining == ["pairs.txt", "people.txt"]


@pytest.mark.parametrize(("offline", "download"), [(True, True), (False, False)])
def test_no_network_when_offline_or_download_is_off(
    server: _Server, tmp_path: Path, offline: bool, download: bool
) -> None:
    with pytest.raises(DataNotFoundError, match="missing LFW images") as err:
        LFW.open(_settings(tmp_path, offline=offline), download=download)
    assert f"{server.url}/lfw-deepfunneled.tgz" in str(err.value)
    assert server.requests == []


def test_forced_variant_other_than_deepfunneled_is_not_downloaded(
    server: _Server, tmp_path: Path
) -> None:
    with pytest.raises(DataNotFoundError, match="no lfw-funneled/"):
        LFW.open(_settings(tmp_path), variant="lfw-funneled")
    assert "/lfw-deepfunneled.tgz" not in server.requests
