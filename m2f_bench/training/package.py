"""A training run → a shipped model folder: weights, ``card.yaml`` and a short README.

The card is what model lookup reads (``inpainter:`` and ``weights:``), and what a reader
needs to trust the weights: the data and split, the config, the command, steps, training
time and hardware, validation figures and, when an evaluation is given, the test figures
with the recognizers they were measured with.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from m2f_bench.errors import M2FError
from m2f_bench.training.checkpoint import best_dir, latest_checkpoint, read_state

#: Summary columns copied into the card's ``test`` section.
_TEST_COLUMNS = (
    "psnr",
    "ssim",
    "psnr_hole",
    "ssim_hole",
    "hole_iou",
    "mask_found",
    "id_sim",
    "acc_clean_clean",
    "acc_masked_clean",
    "acc_inpainted_clean",
    "d_acc_inpainted_clean",
    "d_acc_inpainted_clean_ci_low",
    "d_acc_inpainted_clean_ci_high",
    "auc_inpainted_clean",
)


def _hours(start: str, end: str) -> float:
    fmt = "%Y-%m-%dT%H:%M:%S%z"
    return (datetime.strptime(end, fmt) - datetime.strptime(start, fmt)).total_seconds() / 3600


def _last_validation(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "validation.jsonl"
    if not path.is_file():
        return None
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:  # a line cut off by a stopped run is left out, as a resumed run drops it
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record:
            lines.append(record)
    return lines[-1] if lines else None


def _test_figures(results_path: Path, inpainter: str) -> dict[str, Any]:
    try:
        results = json.loads(Path(results_path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise M2FError(f"{results_path}: not an evaluation's results.json ({exc})") from None
    if not isinstance(results, dict) or not isinstance(results.get("summary") or [], list):
        raise M2FError(f"{results_path}: not an evaluation's results.json (no summary list)")
    rows = [
        r
        for r in results.get("summary") or []
        if isinstance(r, dict) and r.get("inpainter") == inpainter
    ]
    if not rows:
        raise M2FError(f"{results_path} has no summary row for inpainter {inpainter!r}")
    protocol = results.get("protocol") or {}
    out: dict[str, Any] = {
        "protocol": protocol.get("name"),
        "dataset": (protocol.get("dataset") or {}).get("name"),
        "split": (protocol.get("dataset") or {}).get("split"),
        "n_images": rows[0].get("n_images"),
        "n_pairs": rows[0].get("n_pairs"),
        "git_commit": results.get("git_commit"),
        "by_recognizer": {},
    }
    for row in rows:
        figures = {k: row.get(k) for k in _TEST_COLUMNS if row.get(k) is not None}
        out["by_recognizer"][row.get("recognizer") or "-"] = {
            k: round(float(v), 5) for k, v in figures.items()
        }
    return out


def package_model(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    fp16: bool = True,
    results: str | Path | None = None,
    command: str | None = None,
    notes: str | None = None,
    best: bool = False,
) -> Path:
    """Write ``out_dir/model.safetensors``, ``card.yaml``, ``config.yaml`` and ``README.md``.

    Args:
        run_dir: A finished (or stopped) training run folder.
        out_dir: The model folder to write (e.g. ``models/unet-gan-lfw128``).
        fp16: Store the weights as float16 (they load as float32).
        results: An evaluation's ``results.json`` whose rows for this inpainter become the
            card's test figures.
        command: The command that trained it, as it should be repeated.
        notes: Free text for the card (e.g. what the run shared the machine with).
        best: Ship the best-validated generator (``checkpoint.best``) instead of the
            latest checkpoint's.

    Returns:
        The card's path.
    """
    from m2f_bench._download import sha256_file
    from m2f_bench.inpainters._nets import read_generator

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if best:
        checkpoint = best_dir(run_dir)
        if not (checkpoint / "state.json").is_file():
            raise M2FError(
                f"{run_dir} kept no best generator (train with `checkpoint: {{best: true}}`)"
            )
    else:
        checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise M2FError(f"{run_dir} has no checkpoint to package")
    state = read_state(checkpoint)
    config, run = state["config"], state.get("run") or {}
    if (checkpoint / "segmenter.safetensors").is_file():
        return _package_segmenter(run_dir, checkpoint, state, out_dir, fp16, command, notes)
    metadata, tensors = read_generator(checkpoint / "generator.safetensors")
    name = metadata["inpainter"]
    # Before anything is written: the init weights may live in out_dir itself.
    init = run.get("init")  # what the run started from, recorded when it started
    if init is None and config["model"].get("init"):
        init = init_facts(config["model"]["init"], name)
    # Also before: a bad --results must not leave new weights beside an old card.
    test = None if results is None else _test_figures(Path(results), name)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / "model.safetensors"
    _write_fp16(tensors, metadata, weights, fp16)

    from m2f_bench.inpainters import INPAINTERS

    data = config["data"]
    card: dict[str, Any] = {
        "name": out_dir.name,
        "inpainter": name,
        "weights": weights.name,
        "weights_sha256": sha256_file(weights),
        "dtype": "float16" if fp16 else "float32",
        "parameters": int(sum(v.numel() for v in tensors.values())),
        "architecture": json.loads(metadata["arch_args"]) | {"skips": INPAINTERS.get(name).skips},
        "input": "N×3×H×W RGB in [-1, 1] (hole pixels zeroed) + N×1×H×W hole (1 = hole); "
        "H, W multiples of 2^(levels+1); output RGB in [-1, 1], composited into the hole",
        "data": {
            "dataset": "LFW deep-funneled, people folds 1-5 (the train split); validation = a "
            "seeded 10 % identity carve-out; no test-split (pairs folds 6-10) identity seen",
            "prepared": "m2f-bench prepare lfw --split train (128-px crops, 68 landmarks)",
            "train_split": data["train_split"],
            "val_split": data["val_split"],
            "val_crops": data["val_limit"],
            "masks": "a fresh synthetic mask per image per epoch (masks v2, "
            + (", ".join(data["mask_types"]) if data.get("mask_types") else "all types")
            + f"), flips p={data['flip']}, colour jitter "
            f"{data['brightness']}/{data['contrast']}/{data['saturation']}",
        },
        "training": _training_facts(state, command) | {"identity_loss": _identity_facts(config)},
        "validation": (
            {"step": state["step"], **state["validation"]} if best else _last_validation(run_dir)
        ),
    }
    if init is not None:
        card["training"]["init"] = init
    if notes:
        card["training"]["notes"] = notes
    if test is not None:
        card["test"] = test
    return _write_folder(out_dir, card, _readme(card), config)


def _write_folder(
    out_dir: Path, card: dict[str, Any], readme: str, config: dict[str, Any] | None = None
) -> Path:
    """A model folder's ``card.yaml`` (what model lookup reads), ``README.md`` and, given,
    the training ``config.yaml``; returns the card's path."""
    import yaml

    from m2f_bench._io import atomic_write_text

    if config is not None:
        atomic_write_text(
            out_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        )
    atomic_write_text(
        out_dir / "card.yaml", yaml.safe_dump(card, sort_keys=False, allow_unicode=True)
    )
    atomic_write_text(out_dir / "README.md", readme)
    return out_dir / "card.yaml"


def _write_fp16(tensors: dict[str, Any], metadata: dict[str, str], path: Path, fp16: bool) -> None:
    import torch

    from m2f_bench._io import write_safetensors

    dtype = torch.float16 if fp16 else torch.float32
    write_safetensors(path, {k: v.to(dtype).contiguous() for k, v in tensors.items()}, metadata)


def _identity_facts(config: dict[str, Any]) -> str | None:
    """The identity term as the card states it, or ``None`` when the config has none."""
    loss = config.get("loss") or {}
    if not loss.get("identity"):
        return None
    from m2f_bench._download import sha256_file
    from m2f_bench.recognition.arcface_onnx import resolve_model
    from m2f_bench.settings import Settings

    model = str(loss.get("identity_model"))
    try:
        path = resolve_model(model, Settings.resolve(offline=True))  # never downloads here
        model = f"{path.name} (sha256 {sha256_file(path)[:16]}…)"
    except M2FError:  # the recognizer is gone since training: say what the config named
        model = Path(model).name
    return (
        f"weight {loss['identity']} × (1 − cosine) of {model} embeddings "
        "(112-px chip, no mirror) of output and target; identity is also measured with "
        "dlib-resnet, which the generator never saw"
    )


def _training_facts(state: dict[str, Any], command: str | None) -> dict[str, Any]:
    config, run = state["config"], state.get("run") or {}
    steps, batch = state["step"], config["optim"]["batch_size"]
    environment = run.get("environment") or {}
    return {
        "config": "config.yaml",
        "command": command,
        "steps": steps,
        "batch_size": batch,
        "images_seen": steps * batch,
        "started_at": run.get("started_at"),
        "finished_at": state.get("saved_at"),
        "wall_hours": round(_hours(run["started_at"], state["saved_at"]), 2)
        if run.get("started_at") and state.get("saved_at")
        else None,
        "hardware": f"{run.get('device', '?')}: "
        + (f"{run['gpu']}; host " if run.get("gpu") else "")
        + f"{environment.get('cpu', '?')}, {environment.get('cpu_count', '?')} CPUs, "
        f"world size {run.get('world_size', 1)}",
        "torch": run.get("torch"),
        "git_commit": run.get("git_commit"),
    }


def _package_segmenter(
    run_dir: Path,
    checkpoint: Path,
    state: dict[str, Any],
    out_dir: Path,
    fp16: bool,
    command: str | None,
    notes: str | None,
) -> Path:
    """Ship a segmenter run: ``model.safetensors``, ``card.yaml`` (``segmenter:``), config."""

    from m2f_bench._download import sha256_file

    config = state["config"]
    from m2f_bench.inpainters._nets import read_weights
    from m2f_bench.segmenters._net import WEIGHTS_FORMAT as SEGMENTER_FORMAT

    path = checkpoint / "segmenter.safetensors"
    metadata, tensors = read_weights(path, SEGMENTER_FORMAT, "segmenter")
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / "model.safetensors"
    _write_fp16(tensors, metadata, weights, fp16)
    augment = config["augment"]
    card: dict[str, Any] = {
        "name": out_dir.name,
        "segmenter": metadata["segmenter"],
        "weights": weights.name,
        "weights_sha256": sha256_file(weights),
        "dtype": "float16" if fp16 else "float32",
        "parameters": int(sum(v.numel() for v in tensors.values())),
        "architecture": json.loads(metadata["arch_args"]),
        "input": "N×3×H×W RGB in [-1, 1], H, W multiples of 2^(levels+1); output N×1×H×W "
        "hole logits (sigmoid > 0.5: covered by a face mask)",
        "data": {
            "dataset": "LFW deep-funneled, people folds 1-5 (the train split); validation = a "
            "seeded 10 % identity carve-out; no test-split (pairs folds 6-10) identity seen",
            "prepared": "m2f-bench prepare lfw --split train (128-px crops, 68 landmarks)",
            "targets": "the exact hole of a fresh synthetic mask per image per epoch (masks "
            f"v2, all types); {config['negatives']:.0%} of samples unmasked (empty hole)",
            "augmentation": "flips, colour jitter, and real-photo degradations with these "
            "probabilities: " + ", ".join(f"{k} {v}" for k, v in augment.items()),
        },
        "training": _training_facts(state, command),
        "validation": _last_validation(run_dir),
    }
    if notes:
        card["training"]["notes"] = notes
    return _write_folder(out_dir, card, _segmenter_readme(card), config)


def package_blind(
    generator: str | Path,
    segmenter: str | Path,
    out_dir: str | Path,
    notes: str | None = None,
    results: str | Path | None = None,
) -> Path:
    """Assemble ``unet-gan-blind`` from a shipped ``unet-gan`` and a shipped ``mask-unet``
    model folder: both weight files copied in, and a card naming them and their sources.

    Returns:
        The card's path.
    """
    import shutil

    from m2f_bench._download import sha256_file
    from m2f_bench._io import atomic_write_text
    from m2f_bench.inpainters.cards import read_card

    generator, segmenter, out_dir = Path(generator), Path(segmenter), Path(out_dir)
    g_card, s_card = read_card(generator), read_card(segmenter)
    if g_card.get("inpainter") != "unet-gan" or s_card.get("segmenter") != "mask-unet":
        raise M2FError(
            f"package-blind needs a unet-gan model folder and a mask-unet model folder; got "
            f"{generator} ({g_card.get('inpainter')!r}) and {segmenter} "
            f"({s_card.get('segmenter')!r})"
        )
    test = None if results is None else _test_figures(Path(results), "unet-gan-blind")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, folder, card in (("generator", generator, g_card), ("segmenter", segmenter, s_card)):
        target = out_dir / f"{key}.safetensors"
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(folder / str(card["weights"]), tmp)
        tmp.replace(target)
        files[key] = target
    card: dict[str, Any] = {
        "name": out_dir.name,
        "inpainter": "unet-gan-blind",
        "generator_weights": files["generator"].name,
        "generator_sha256": sha256_file(files["generator"]),
        "segmenter_weights": files["segmenter"].name,
        "segmenter_sha256": sha256_file(files["segmenter"]),
        "input": "a masked face crop only (uint8 RGB); the segmenter finds the hole "
        "(probability > threshold, holes under min_coverage of the crop dropped, dilated by "
        "`dilate` px), the generator fills it",
        "components": {
            "generator": {
                "from": generator.name,
                "training": g_card.get("training"),
                "validation": g_card.get("validation"),
            },
            "segmenter": {
                "from": segmenter.name,
                "training": s_card.get("training"),
                "validation": s_card.get("validation"),
                "data": s_card.get("data"),
            },
        },
        "assembled": "m2f-bench package-blind "
        f"{generator.as_posix()} {segmenter.as_posix()} {out_dir.as_posix()}",
    }
    for key, folder in (("generator", generator), ("segmenter", segmenter)):
        config = folder / "config.yaml"
        training = card["components"][key].get("training")
        if config.is_file() and isinstance(training, dict):
            name = f"{key}-config.yaml"
            atomic_write_text(out_dir / name, config.read_text(encoding="utf-8"))
            card["components"][key]["training"] = training | {"config": name}
    if notes:
        card["notes"] = notes
    if test is not None:
        card["test"] = test
    return _write_folder(out_dir, card, _blind_readme(card))


def _segmenter_readme(card: dict[str, Any]) -> str:
    t, v = card["training"], card.get("validation") or {}
    lines = [
        f"# {card['name']}",
        "",
        f"`{card['segmenter']}` face-mask segmenter of m2f-bench ({card['parameters']:,} "
        f"parameters, {card['dtype']} safetensors): which pixels of a 128-px aligned face "
        "crop a face mask covers. Used by `unet-gan-blind`, `hole: predicted` in protocols "
        "and `m2f-bench unmask`.",
        "",
        f"- Data: {card['data']['dataset']}; {card['data']['targets']}.",
        f"- Augmentation: {card['data']['augmentation']}.",
        f"- Trained with `{t.get('command')}`: {t['steps']} steps of {t['batch_size']} "
        f"crops, {t.get('wall_hours')} h on {t.get('hardware')}.",
    ]
    if v:
        lines.append(
            f"- Validation (step {v.get('step')}): hole IoU {v.get('iou', float('nan')):.4f} on "
            f"masked crops, {v.get('iou_degraded', float('nan')):.4f} on degraded ones; "
            f"masks found on {100 * v.get('false_positive_rate', float('nan')):.2f} % of "
            "unmasked crops."
        )
    lines += ["", "Card: `card.yaml`; config: `config.yaml`.", ""]
    return "\n".join(lines)


def _blind_readme(card: dict[str, Any]) -> str:
    c = card["components"]
    training = c["generator"].get("training") or {}
    # Stages: this run plus every earlier one its card's ``init`` chain records.
    stages, earlier = 1, training.get("init")
    while isinstance(earlier, dict):
        stages, earlier = stages + 1, earlier.get("init")
    how = (
        f"training stage {stages}, {training.get('steps')} steps from "
        f"`{training['init'].get('weights')}` ({stages - 1} earlier "
        f"stage{'s' if stages > 2 else ''})"
        if stages > 1
        else f"{training.get('steps')} steps"
    )
    return "\n".join(
        [
            f"# {card['name']}",
            "",
            "`unet-gan-blind`: Mask2Face for photos with no known hole. The `mask-unet` "
            f"segmenter (from `{c['segmenter']['from']}`) finds the mask in the crop; the "
            f"`unet-gan` generator (from `{c['generator']['from']}`: {how}) fills it. "
            "Each component's training and validation figures are in `card.yaml`.",
            "",
            f"Assembled with `{card['assembled']}`.",
            "",
        ]
    )


def init_facts(init: str, name: str) -> dict[str, Any]:
    """What a second training stage started from: the weights and, from their card, how
    they were trained (a copy, since packaging may overwrite that folder)."""
    import yaml

    from m2f_bench._download import sha256_file
    from m2f_bench.inpainters.cards import resolve_weights

    facts: dict[str, Any] = {"weights": init}
    try:
        path = resolve_weights(init, name)
    except M2FError:
        return facts
    if path.is_file():
        facts["sha256"] = sha256_file(path)
    card_path = path.parent / "card.yaml"
    if card_path.is_file():
        before = yaml.safe_load(card_path.read_text(encoding="utf-8")) or {}
        training = before.get("training") or {}
        facts |= {
            k: training[k]
            for k in ("command", "steps", "batch_size", "images_seen", "wall_hours", "hardware")
            if k in training
        }
        if "init" in training:
            facts["init"] = training["init"]
    return facts


def _stage_facts(init: dict[str, Any]) -> str:
    """How an earlier stage was trained, from the facts :func:`init_facts` copied."""
    if "steps" not in init:
        return ""
    return (
        f" ({init['steps']:,} steps × batch {init.get('batch_size', '?')}, "
        f"{init.get('wall_hours', '?')} h on {init.get('hardware', '?')}: "
        f"`{init.get('command', '?')}`)"
    )


def _readme(card: dict[str, Any]) -> str:
    t, v = card["training"], card.get("validation") or {}
    lines = [
        f"# {card['name']}",
        "",
        f"`{card['inpainter']}` generator, {card['parameters']:,} parameters, "
        f"{card['dtype']} safetensors (`{card['weights']}`, sha256 "
        f"`{card['weights_sha256'][:16]}…`). Written by `m2f-bench package-model`; "
        "`card.yaml` holds every figure below.",
        "",
        f"- **Data**: {card['data']['dataset']}. {card['data']['masks']}.",
        "- **Config**: `config.yaml` (a copy of the training config).",
        f"- **Command**: `{t['command']}`" if t.get("command") else "- **Command**: —",
        f"- **Steps**: {t['steps']:,} × batch {t['batch_size']} = {t['images_seen']:,} images; "
        f"{t.get('wall_hours')} h wall on {t['hardware']} (torch {t.get('torch')}).",
        f"- **Identity loss**: {t.get('identity_loss') or 'none'}.",
    ]
    init, first = t.get("init"), True
    while isinstance(init, dict):
        lines.append(
            f"- **Earlier stage**: initialised from `{init['weights']}`{_stage_facts(init)}; "
            "the steps above are this stage's."
            if first
            else f"  - which was initialised from `{init['weights']}`{_stage_facts(init)}."
        )
        init, first = init.get("init"), False
    if t.get("notes"):
        lines.append(f"- **Notes**: {t['notes']}")
    if v:
        lines.append(
            f"- **Validation** (step {v.get('step')}, {card['data']['val_crops']} val crops): "
            f"PSNR {v['psnr']:.2f} dB, "
            f"SSIM {v['ssim']:.4f}, hole PSNR {v['psnr_hole']:.2f} dB"
            + (
                f"; the same crops degraded as in training: PSNR {v['psnr_degraded']:.2f} dB, "
                f"SSIM {v['ssim_degraded']:.4f}, hole PSNR {v['psnr_hole_degraded']:.2f} dB"
                if "psnr_degraded" in v
                else ""
            )
            + "."
        )
    test = card.get("test")
    if test:
        lines += [
            "",
            f"## Test: `{test['protocol']}` ({test['dataset']} {test['split']} split, "
            f"{test['n_images']} images, {test['n_pairs']} pairs)",
            "",
            "| recognizer | PSNR | SSIM | PSNR hole | SSIM hole | id_sim | "
            "inpainted↔clean acc | masked↔clean acc | Δ acc [95 % CI] |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for rec, f in test["by_recognizer"].items():

            def pct(key: str, figures: dict = f) -> str:
                return f"{100 * figures[key]:.2f}" if key in figures else "—"

            ci = (
                f"{100 * f['d_acc_inpainted_clean']:+.2f} "
                f"[{100 * f['d_acc_inpainted_clean_ci_low']:+.2f}, "
                f"{100 * f['d_acc_inpainted_clean_ci_high']:+.2f}]"
                if "d_acc_inpainted_clean_ci_low" in f
                else "—"
            )
            nan = float("nan")
            lines.append(
                f"| {rec} | {f.get('psnr', nan):.2f} | {f.get('ssim', nan):.4f} "
                f"| {f.get('psnr_hole', nan):.2f} | {f.get('ssim_hole', nan):.4f} "
                f"| {f.get('id_sim', nan):.3f} | {pct('acc_inpainted_clean')} "
                f"| {pct('acc_masked_clean')} | {ci} |"
            )
    return "\n".join(lines) + "\n"
