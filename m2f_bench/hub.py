"""Model weights the project knows: where they come from, their sha256 and license.

Weights live in the model home (``--model-home`` / ``M2F_MODEL_HOME`` / cache). A missing
file is downloaded from its published source when there is one and the network is
allowed; every file, downloaded or found, is checked against its sha256 once per process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from m2f_bench._download import RemoteFile, ensure_file, sha256_file
from m2f_bench.errors import DownloadError, ModelNotFoundError
from m2f_bench.settings import Settings

_INSIGHTFACE_ZOO = "https://github.com/deepinsight/insightface/releases/download/model-zoo/"


@dataclass(frozen=True)
class ModelFile:
    """A weight file expected in the model home.

    Attributes:
        filename: Name in the model home.
        sha256: Digest of the file itself.
        source: Where it is published (``None``: no public download).
        origin: Who made it, for messages and the README.
        license: Its license, in a few words.
    """

    filename: str
    sha256: str
    source: RemoteFile | None
    origin: str
    license: str


MODEL_FILES: dict[str, ModelFile] = {
    m.filename: m
    for m in (
        ModelFile(
            filename="scrfd_500m_kps.onnx",
            sha256="5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a",
            # The same network ships as det_500m.onnx in insightface's buffalo_sc pack.
            source=RemoteFile(
                url=_INSIGHTFACE_ZOO + "buffalo_sc.zip",
                sha256="5e4447f50245bbd7966bd6c0fa52938c61474a04ec7def48753668a9d8b4ea3a",
                member="det_500m.onnx",
            ),
            origin="SCRFD-500M with keypoints, insightface buffalo_sc/det_500m.onnx",
            license="insightface models: non-commercial research use",
        ),
        ModelFile(
            filename="mobilefacenet_arcface.onnx",
            sha256="0c9ad2a83969fc82155706f7020e6926b4a1a90a5476fff4a5588dfe207f64a4",
            source=None,
            origin="MobileFaceNet trained with ArcFace loss on MS1M (foamliu/MobileFaceNet), ONNX",
            license="see foamliu/MobileFaceNet (Apache-2.0 code; MS1M-derived weights)",
        ),
    )
}


@cache
def _verified(path: Path, sha256: str) -> bool:
    return sha256_file(path) == sha256


def model_path(filename: str, settings: Settings, *, download: bool = True) -> Path:
    """Path of a known model file in the model home, fetching it if allowed.

    Raises:
        ModelNotFoundError: The file is missing (with where to put it and where it is
            published) or its sha256 does not match.
    """
    spec = MODEL_FILES.get(filename)
    path = settings.model_home / filename
    if spec is None:
        if path.is_file():
            return path
        raise ModelNotFoundError(f"missing model file {filename}: put it at {path}")
    if not path.is_file():
        if spec.source is None or not download or settings.offline:
            where = (
                f"; it is published in {spec.source.url}"
                if spec.source is not None
                else f" ({spec.origin}; it has no public download)"
            )
            raise ModelNotFoundError(
                f"missing model file {filename}: put it at {path}{where}, "
                f"or set --model-home / M2F_MODEL_HOME to the folder that holds it"
            )
        try:
            ensure_file(path, spec.source, offline=settings.offline)
        except DownloadError as exc:
            raise ModelNotFoundError(str(exc)) from None
    if not _verified(path.resolve(), spec.sha256):
        raise ModelNotFoundError(
            f"model file {path} does not match its sha256 {spec.sha256}: replace it"
        )
    return path


def model_available(filename: str, settings: Settings) -> bool:
    """Whether the model file is already present in the model home (no download)."""
    return (settings.model_home / filename).is_file()
