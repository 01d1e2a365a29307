"""Where datasets and model weights live.

Resolution order, for each home: the explicit argument (CLI ``--data-home`` /
``--model-home``), then the environment (``M2F_DATA_HOME`` / ``M2F_MODEL_HOME``),
then a per-user cache directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

DATA_HOME_ENV = "M2F_DATA_HOME"
MODEL_HOME_ENV = "M2F_MODEL_HOME"
OFFLINE_ENV = "M2F_OFFLINE"


def cache_dir() -> Path:
    """The per-user cache directory used when no home is configured."""
    return platformdirs.user_cache_path("m2f-bench")


def _resolve(explicit: str | os.PathLike | None, env: str, default: Path) -> Path:
    value = explicit if explicit not in (None, "") else os.environ.get(env) or None
    path = Path(value) if value is not None else default
    return path.expanduser().resolve()


@dataclass(frozen=True)
class Settings:
    """Resolved locations and network policy.

    Attributes:
        data_home: Root under which each dataset has its own folder (``lfw/`` ...).
        model_home: Folder holding detector and recognizer weights.
        offline: Never try to download; report what is missing instead.
    """

    data_home: Path
    model_home: Path
    offline: bool = False

    @classmethod
    def resolve(
        cls,
        data_home: str | os.PathLike | None = None,
        model_home: str | os.PathLike | None = None,
        offline: bool | None = None,
    ) -> Settings:
        """Build settings from explicit values, the environment and defaults."""
        if offline is None:
            offline = os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}
        return cls(
            data_home=_resolve(data_home, DATA_HOME_ENV, cache_dir() / "data"),
            model_home=_resolve(model_home, MODEL_HOME_ENV, cache_dir() / "models"),
            offline=offline,
        )
