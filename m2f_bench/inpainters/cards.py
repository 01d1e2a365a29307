"""Model cards: where trained weights are found (no torch here, so listing them is cheap).

A model folder holds ``card.yaml`` (``inpainter:`` or ``segmenter:`` naming the plug-in,
``weights:`` naming the file) beside its weights. Folders are searched in the model home,
then in the checkout's ``models/``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from m2f_bench.errors import M2FError, ModelNotFoundError

log = logging.getLogger(__name__)


def weights_path(weights: object, where: str) -> Path:
    """``weights:`` as a path; anything but text (a number, a list) is refused in one line."""
    if not isinstance(weights, str | Path) or not str(weights).strip():
        raise M2FError(
            f"{where}: weights must be a path (a .safetensors file, a model folder or a "
            f"training run folder), got {weights!r}"
        )
    return Path(weights).expanduser()


def read_card(folder: Path) -> dict:
    """A model folder's ``card.yaml`` as a mapping.

    Raises:
        M2FError: Unreadable, not UTF-8 text, invalid YAML, or not a mapping (one line).
    """
    import yaml

    path = folder / "card.yaml"
    try:
        card = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        from m2f_bench.evaluation.protocol import yaml_problem

        raise M2FError(f"{path}: YAML syntax error{yaml_problem(exc)}") from None
    except UnicodeDecodeError:
        raise M2FError(f"{path}: not a text file (invalid UTF-8)") from None
    except OSError as exc:
        raise M2FError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not isinstance(card, dict):
        raise M2FError(f"{path} must be a mapping of keys")
    return card


def model_folders() -> list[Path]:
    """Folders searched for model cards: the model home's, then the checkout's ``models/``."""
    from m2f_bench.settings import Settings

    roots = [Settings.resolve().model_home, Path(__file__).resolve().parents[2] / "models"]
    return [p.parent for root in roots for p in sorted(root.glob("*/card.yaml"))]


def iter_cards() -> Iterator[tuple[Path, dict | None, M2FError | None]]:
    """Each model folder (:func:`model_folders`) with its card, or with why it is unreadable."""
    for folder in model_folders():
        try:
            yield folder, read_card(folder), None
        except M2FError as exc:
            yield folder, None, exc


def find_model(name: str, kind: str = "inpainter") -> Path:
    """The model folder whose ``card.yaml`` says ``<kind>: <name>`` (the first one found).

    Args:
        name: The registered plug-in name (``unet-gan``, ``mask-unet`` ...).
        kind: The card key naming it: ``inpainter`` or ``segmenter``.

    Raises:
        ModelNotFoundError: No card names that plug-in.
    """
    unreadable = []
    for folder, card, error in iter_cards():
        if card is None:
            # One damaged card of some other model must not hide every other model.
            log.warning("skipping a model card: %s", error)
            unreadable.append(str(folder / "card.yaml"))
        elif card.get(kind) == name:
            return folder
    skipped = f"; unreadable: {', '.join(unreadable)}" if unreadable else ""
    raise ModelNotFoundError(
        f"{kind} {name!r}: no trained weights found (no models/*/card.yaml with "
        f"'{kind}: {name}'{skipped}); pass weights: a .safetensors file, a model folder or a "
        "training run folder"
    )


def resolve_weights(
    weights: str | Path | None, name: str, kind: str = "inpainter", file: str = "generator"
) -> Path:
    """The generator file meant by ``weights``.

    Args:
        weights: A ``.safetensors`` file, a model folder with ``card.yaml``, a training run
            folder (its latest checkpoint's generator), a checkpoint folder, or None for
            the model card that names the inpainter ``name``.
        name: The plug-in asking.
        kind: ``inpainter`` or ``segmenter`` (the card key naming the plug-in).
        file: The network's file name in a checkpoint folder (``generator``, ``segmenter``).

    Raises:
        ModelNotFoundError: Nothing loadable at that path.
    """
    if weights is None:
        return resolve_weights(find_model(name, kind), name, kind, file)
    path = weights_path(weights, f"{kind} {name!r}")
    if path.is_file():
        return path
    if (path / "card.yaml").is_file():
        return path / str(read_card(path).get("weights", "model.safetensors"))
    latest = path / "checkpoints" / "latest"
    if latest.is_file():
        step = latest.read_text(encoding="utf-8", errors="replace").strip()
        found = path / "checkpoints" / step / f"{file}.safetensors"
        other = "segmenter" if file == "generator" else "generator"
        if not found.is_file() and (found.parent / f"{other}.safetensors").is_file():
            raise ModelNotFoundError(
                f"{kind} {name!r}: {path} is a run that trained a {other}, not a {file}"
            )
        return found
    if (path / f"{file}.safetensors").is_file():  # a checkpoint folder
        return path / f"{file}.safetensors"
    raise ModelNotFoundError(
        f"{kind} {name!r}: no weights at {path} (expected a .safetensors file, a model "
        "folder with card.yaml, or a training run folder with checkpoints/latest)"
    )


def weights_network(weights: Path) -> str | None:
    """The network a weights file says it holds (``inpainter`` or ``segmenter`` metadata),
    read from the file's header only, without torch.

    Raises:
        M2FError: Missing, or not a readable safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    if not weights.is_file():
        raise M2FError(f"weight file not found: {weights}")
    try:
        with safe_open(str(weights), framework="numpy") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise M2FError(f"{weights}: not a readable weights file ({exc})") from None
    return metadata.get("inpainter") or metadata.get("segmenter")
