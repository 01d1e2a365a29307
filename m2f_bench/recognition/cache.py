"""Embeddings on disk, so each (image, variant, recognizer) is embedded once."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from m2f_bench._io import atomic_write_bytes, atomic_write_json
from m2f_bench.recognition.base import Recognizer

log = logging.getLogger(__name__)


class EmbeddingCache:
    """One ``.npz`` (``ids`` and a float32 ``embeddings`` matrix) per recognizer and variant.

    Layout: ``root/<recognizer.key>/<variant>.npz``, with the recognizer's config beside it
    in ``config.json``. The key hashes :meth:`Recognizer.config`, so changing anything that
    changes the embeddings starts a new file. Files are rewritten whole and atomically:
    pass all ids of a variant in one call rather than batch by batch.

    Args:
        root: Folder holding the cache.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, recognizer: Recognizer, variant: str) -> Path:
        """The file holding ``variant``'s embeddings by ``recognizer``."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", variant)
        if stem != variant or not stem or stem.startswith("."):
            # Keep distinct variants apart once they are made file-name safe.
            stem = f"{stem}-{hashlib.sha256(variant.encode()).hexdigest()[:8]}"
        return self.root / recognizer.key / f"{stem}.npz"

    def get_or_compute(
        self,
        recognizer: Recognizer,
        variant: str,
        ids: Sequence[str],
        compute: Callable[[list[str]], np.ndarray],
    ) -> np.ndarray:
        """Embeddings of ``ids`` (in that order), computing and storing only the missing ones.

        Args:
            recognizer: The recognizer the embeddings come from (its key names the file).
            variant: Which version of the images (e.g. ``clean``, ``masked/surgical``,
                ``inpainted/lama``), crop size included where it varies.
            ids: Image ids.
            compute: Embeds the given ids with ``recognizer`` (float32 len(ids)×D).

        Returns:
            float32 len(ids)×D.
        """
        path = self.path(recognizer, variant)
        dim = recognizer.embedding_dim
        known_ids, known = self._read(path, dim)
        index = {image_id: i for i, image_id in enumerate(known_ids)}
        missing = [i for i in dict.fromkeys(ids) if i not in index]
        if missing:
            new = np.asarray(compute(missing), dtype=np.float32)
            if new.shape != (len(missing), dim):
                raise ValueError(f"compute returned {new.shape} for {len(missing)} ids, D={dim}")
            index.update({image_id: len(known_ids) + k for k, image_id in enumerate(missing)})
            known_ids = known_ids + missing
            known = np.concatenate([known, new])
            self._write(path, known_ids, known, recognizer)
        return known[[index[i] for i in ids]] if ids else np.empty((0, dim), np.float32)

    @staticmethod
    def _read(path: Path, dim: int) -> tuple[list[str], np.ndarray]:
        empty: tuple[list[str], np.ndarray] = ([], np.empty((0, dim), np.float32))
        if not path.is_file():
            return empty
        try:
            with np.load(path, allow_pickle=False) as data:
                ids = [str(i) for i in data["ids"]]
                embeddings = np.asarray(data["embeddings"], dtype=np.float32)
            if embeddings.shape != (len(ids), dim):
                raise ValueError(f"{len(ids)} ids but embeddings of shape {embeddings.shape}")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("unreadable embedding cache %s (%s); recomputing", path, exc)
            return empty
        return ids, embeddings

    @staticmethod
    def _write(path: Path, ids: list[str], embeddings: np.ndarray, recognizer: Recognizer) -> None:
        buf = io.BytesIO()
        np.savez(buf, ids=np.asarray(ids, dtype=str), embeddings=embeddings)
        atomic_write_bytes(path, buf.getvalue())
        atomic_write_json(
            path.parent / "config.json", {"name": recognizer.name, "config": recognizer.config()}
        )
