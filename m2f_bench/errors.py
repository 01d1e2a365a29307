"""User-facing errors.

Every error a user can cause (missing data, bad input, bad protocol) is an
:class:`M2FError`; the CLI prints its message as one line and exits non-zero.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class M2FError(Exception):
    """An error whose message is meant for the user, in one line."""


class DataNotFoundError(M2FError):
    """A dataset or one of its files is missing."""


class ModelNotFoundError(M2FError):
    """A model file is missing from the model home."""


class DownloadError(M2FError):
    """A download failed or its checksum did not match."""


class UnreachableError(DownloadError):
    """A file could not be fetched at all (no network, host down, downloads disabled)."""


class BadImageError(M2FError):
    """An image file cannot be decoded into an RGB picture."""


class NoFaceError(M2FError):
    """No face was found in an image."""


class ImageTooSmallError(NoFaceError):
    """An image is too small to hold a detectable face (a kind of no-face)."""


class UnknownNameError(M2FError, KeyError):
    """A registry lookup found no entry of that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
