"""Checkpoints: safetensors weights plus optimiser, scheduler and RNG state; no pickles.

Layout of a run folder's ``checkpoints/``::

    step-0000500/generator.safetensors      the generator (loadable as an inpainter)
    step-0000500/discriminator.safetensors
    step-0000500/optimizer.safetensors      optimiser tensors and RNG states
    step-0000500/state.json                 step, optimiser structure, scheduler states,
                                            config, git commit, time
    latest                                  the name of the newest complete checkpoint
    best/generator.safetensors              with checkpoint.best: the generator of the
    best/state.json                         validation with the highest PSNR, its step and
                                            validation figures

A checkpoint is written into a temporary folder that is renamed into place, and
``latest`` is replaced after that, so a crash at any moment leaves the previous
checkpoint intact and ``latest`` pointing at a complete one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from m2f_bench._io import atomic_write_json, atomic_write_text
from m2f_bench.errors import M2FError
from m2f_bench.inpainters._nets import EncoderDecoderGenerator, save_generator

_PREFIX = "step-"

log = logging.getLogger(__name__)


def checkpoint_dir(run_dir: str | Path) -> Path:
    """The folder holding a run's checkpoints."""
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None if it has none."""
    pointer = checkpoint_dir(run_dir) / "latest"
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8", errors="replace").strip()
    path = checkpoint_dir(run_dir) / name
    if not name or "/" in name or not (path / "state.json").is_file():
        raise M2FError(
            f"{pointer} names {name or 'no checkpoint'!r}, which is incomplete or missing"
            f"{_others(pointer)}"
        )
    return path


def read_state(path: str | Path) -> dict[str, Any]:
    """A checkpoint folder's ``state.json`` (or that of ``checkpoints/best``).

    Raises:
        M2FError: Missing, cut off, not JSON or lacking a key training writes (one line; it
            says what to do instead: resume from another checkpoint, or package without
            ``--best``).
    """
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError included
        raise M2FError(f"checkpoint {path} is damaged: {_reason(exc)}{_others(path)}") from None
    state = state if isinstance(state, dict) else {}
    required = ("validation",) if path.name == "best" else ("config", "optimizers", "schedulers")
    missing = [k for k in required if k not in state]
    if not isinstance(state.get("step"), int):
        missing.insert(0, "step")
    if missing:
        raise M2FError(
            f"checkpoint {path} is damaged: state.json lacks {', '.join(missing)}{_others(path)}"
        )
    return state


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename}"
    return f"{type(exc).__name__}: {exc}"


def _others(path: Path) -> str:
    """Where to look next: the run's other checkpoint folders (``latest`` may name one)."""
    if path.name == "best":
        return "; package the run without --best (a resumed run keeps a new best)"
    others = sorted(p.name for p in path.parent.glob("step-*") if p != path)
    if not others:
        return ""
    return (
        f"; the run has {', '.join(others)}: write one of those names into "
        f"{path.parent / 'latest'} to resume from it"
    )


def _split_optimizer(
    prefix: str, state: Mapping[str, Any], tensors: dict[str, torch.Tensor]
) -> dict:
    """Move an optimiser state_dict's tensors into ``tensors``; return the JSON-able rest."""
    rest: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        plain = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                plain[key] = value
        rest["state"][str(index)] = plain
    return rest


def _join_optimizer(
    prefix: str, rest: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
) -> dict:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in rest["state"].items()}
    for key, value in tensors.items():
        head, _, tail = key.partition(".")
        if head == prefix:
            index, _, name = tail.partition(".")
            state.setdefault(int(index), {})[name] = value
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in group.items()}
        for group in rest["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    generator: EncoderDecoderGenerator | None = None,
    generator_name: str | None = None,
    discriminator: torch.nn.Module | None = None,
    weights: Mapping[str, Callable[[Path], None]] | None = None,
    optimizers: Mapping[str, torch.optim.Optimizer],
    schedulers: Mapping[str, Any],
    extra: Mapping[str, Any],
    keep: int,
) -> Path:
    """Write a checkpoint atomically, point ``latest`` at it and prune old ones.

    Args:
        run_dir: The run folder.
        step: Completed optimisation steps.
        generator: The generator network (unwrapped from DDP).
        generator_name: Its inpainter name, stored in the weight file.
        discriminator: The discriminator network (unwrapped).
        weights: Other networks: file name (``segmenter``) → a writer of that
            ``.safetensors`` file at the path it is given.
        optimizers: Optimisers by name.
        schedulers: Learning-rate schedulers by name.
        extra: JSON-able run information (config, git commit ...).
        keep: Most recent checkpoints to keep.

    Returns:
        The checkpoint folder.
    """
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{step:07d}"
    tmp = root / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if generator is not None:
            save_generator(tmp / "generator.safetensors", generator, str(generator_name))
        if discriminator is not None:
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in discriminator.state_dict().items()},
                str(tmp / "discriminator.safetensors"),
            )
        for name, write in (weights or {}).items():
            write(tmp / f"{name}.safetensors")
        tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda{i}"] = s
        optim_rest = {
            name: _split_optimizer(name, opt.state_dict(), tensors)
            for name, opt in optimizers.items()
        }
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        state = {
            "step": step,
            "optimizers": optim_rest,
            "schedulers": {name: s.state_dict() for name, s in schedulers.items()},
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **extra,
        }
        atomic_write_json(tmp / "state.json", state)
        if final.exists():  # the same step saved again (e.g. Ctrl-C right after a save)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / "latest", final.name + "\n")
    old = sorted(p for p in root.glob(f"{_PREFIX}*") if p.is_dir() and p != final)
    for path in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def load_checkpoint(
    path: str | Path,
    *,
    generator: torch.nn.Module | None = None,
    discriminator: torch.nn.Module | None = None,
    networks: Mapping[str, torch.nn.Module] | None = None,
    optimizers: Mapping[str, torch.optim.Optimizer],
    schedulers: Mapping[str, Any],
) -> dict[str, Any]:
    """Restore every piece of training state from a checkpoint folder.

    Returns:
        The checkpoint's ``state.json`` (``step`` among it).

    Raises:
        M2FError: The checkpoint does not fit the networks or optimisers built from the
            config.
    """
    from safetensors import SafetensorError

    path = Path(path)
    state = read_state(path)
    try:
        modules = dict(networks or {})
        if generator is not None:
            modules["generator"] = generator
        if discriminator is not None:
            modules["discriminator"] = discriminator
        for name, module in modules.items():
            module.load_state_dict(load_file(str(path / f"{name}.safetensors")))
        tensors = load_file(str(path / "optimizer.safetensors"))
        for name, opt in optimizers.items():
            opt.load_state_dict(_join_optimizer(name, state["optimizers"][name], tensors))
    except SafetensorError as exc:
        raise M2FError(f"checkpoint {path} is damaged: {exc}{_others(path)}") from None
    except (RuntimeError, KeyError, ValueError) as exc:
        raise M2FError(f"checkpoint {path} does not fit this config: {exc}") from None
    for name, scheduler in schedulers.items():
        scheduler.load_state_dict(state["schedulers"][name])
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    return state


def best_dir(run_dir: str | Path) -> Path:
    """Where ``checkpoint.best`` keeps the best-validated generator."""
    return checkpoint_dir(run_dir) / "best"


def best_validation(run_dir: str | Path, up_to_step: int | None = None) -> dict[str, Any] | None:
    """The validation figures of the kept best generator, or None (none kept, or kept at a
    step after ``up_to_step``: an interrupted attempt's, which a resumed run redoes)."""
    path = best_dir(run_dir) / "state.json"
    if not path.is_file():
        return None
    try:
        state = read_state(path.parent)
    except M2FError as exc:
        # Only the record of the best so far: the run goes on and keeps a new best.
        log.warning("%s; starting a new best", exc)
        return None
    if up_to_step is not None and state["step"] > up_to_step:
        return None
    return state["validation"]


def save_best(
    run_dir: str | Path,
    step: int,
    *,
    generator: EncoderDecoderGenerator,
    generator_name: str,
    validation: Mapping[str, float],
    extra: Mapping[str, Any],
) -> Path:
    """Replace ``checkpoints/best`` with this generator (written aside, then swapped in)."""
    final = best_dir(run_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".best.{os.getpid()}.tmp"
    old = final.parent / f".best.{os.getpid()}.old"
    for path in (tmp, old):
        shutil.rmtree(path, ignore_errors=True)
    tmp.mkdir()
    try:
        save_generator(tmp / "generator.safetensors", generator, generator_name)
        state = {
            "step": step,
            "validation": dict(validation),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **extra,
        }
        atomic_write_json(tmp / "state.json", state)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final
