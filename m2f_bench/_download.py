"""Downloads verified by sha256, with one-line errors that say where to put the file.

Used for the LFW files and for model weights. Nothing here runs unless a file is
missing; offline (``Settings.offline`` or no network) the error names the missing
file, where it is expected, and where it can be obtained.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from m2f_bench.errors import DownloadError, UnreachableError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file published at ``url`` whose content has the given sha256.

    Attributes:
        url: Where the file (or the archive holding it) is published.
        sha256: Hex digest of the file itself; ``None`` only where the publisher gives
            no stable digest (then the caller verifies the unpacked content instead).
        member: For an archive, the path of the wanted file inside it.
    """

    url: str
    sha256: str | None
    member: str | None = None


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _missing_message(dest: Path, remote: RemoteFile | None, reason: str) -> str:
    where = f"; it is published at {remote.url}" if remote is not None else ""
    return f"missing {dest.name}: {reason}. Put the file at {dest}{where}"


def fetch_url(url: str, dest: Path, *, timeout: float = 60.0) -> Path:
    """Stream ``url`` into ``dest`` atomically (no verification).

    Raises:
        DownloadError: Any network or HTTP failure, in one line.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "m2f-bench"})
        with (
            urllib.request.urlopen(request, timeout=timeout) as response,
            os.fdopen(fd, "wb") as out,
        ):
            shutil.copyfileobj(response, out, _CHUNK)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        Path(tmp).unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise UnreachableError(f"could not download {url}: {reason}") from None
    return dest


def ensure_file(
    dest: str | os.PathLike,
    remote: RemoteFile | None,
    *,
    offline: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Return ``dest``, downloading and verifying it first if it is missing.

    Args:
        dest: Where the file must end up.
        remote: Where it is published; ``None`` when it cannot be downloaded.
        offline: Do not try the network.
        timeout: Seconds before a stalled connection is abandoned.

    Raises:
        DownloadError: The file is missing and could not be fetched, or the fetched
            file's sha256 differs from the published one. The message names the file
            and where to put it.
    """
    dest = Path(dest)
    if dest.is_file():
        return dest
    if remote is None:
        raise UnreachableError(_missing_message(dest, None, "it has no download source"))
    if offline:
        raise UnreachableError(_missing_message(dest, remote, "downloads are disabled (offline)"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmpdir:
        name = Path(remote.url.split("?")[0]).name or dest.name
        try:
            fetched = fetch_url(remote.url, Path(tmpdir) / name, timeout=timeout)
        except UnreachableError as exc:
            raise UnreachableError(_missing_message(dest, remote, str(exc))) from None
        candidate = (
            extract_member(fetched, remote.member, Path(tmpdir) / "member")
            if remote.member
            else fetched
        )
        if remote.sha256 is not None:
            got = sha256_file(candidate)
            if got != remote.sha256:
                raise DownloadError(
                    f"sha256 mismatch for {dest.name} from {remote.url}: expected "
                    f"{remote.sha256}, got {got}; the file was not saved"
                )
        os.replace(candidate, dest)
    return dest


def extract_member(archive: Path, member: str, dest: Path) -> Path:
    """Copy one member of a zip or tar archive to ``dest``.

    Raises:
        DownloadError: The archive is unreadable or lacks the member.
    """
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
                match = next((n for n in names if n == member or n.endswith("/" + member)), None)
                if match is None:
                    raise KeyError(member)
                with zf.open(match) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
        else:
            with tarfile.open(archive) as tf:
                info = next(
                    (
                        m
                        for m in tf.getmembers()
                        if m.name == member or m.name.endswith("/" + member)
                    ),
                    None,
                )
                src = tf.extractfile(info) if info is not None else None
                if src is None:
                    raise KeyError(member)
                with src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
    except KeyError:
        raise DownloadError(f"{archive.name} has no member {member!r}") from None
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise DownloadError(f"cannot read archive {archive.name}: {exc}") from None
    return dest


def extract_archive(archive: Path, dest_dir: Path) -> None:
    """Unpack a tar or zip archive into ``dest_dir``, refusing paths that escape it."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                root = dest_dir.resolve()
                for name in zf.namelist():
                    if not (dest_dir / name).resolve().is_relative_to(root):
                        raise DownloadError(f"{archive.name}: unsafe path {name!r}")
                zf.extractall(dest_dir)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(dest_dir, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise DownloadError(f"cannot unpack {archive.name}: {exc}") from None
