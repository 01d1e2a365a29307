"""Training the mask segmenter (``model.name: mask-unet``).

Each sample is a prepared LFW training crop wearing a fresh synthetic mask (type, colour,
texture and placement drawn per image and epoch, as for the inpainters) — or, with
probability ``negatives``, no mask at all — then flipped, jittered in position and
degraded like a real photo (:mod:`m2f_bench.training.augment`). The target is the mask's
exact hole. Loss: ``bce`` × binary cross-entropy + ``dice`` × (1 − soft Dice).

Validation after every epoch, on fixed validation crops: hole IoU on masked crops (clean
and degraded) and the false-positive rate on the same faces unmasked (share of crops in
which a mask is found), with the thresholds :class:`~m2f_bench.segmenters.Segmenter`
applies at inference. Checkpoints, ``--resume``, NaN and Ctrl-C handling work as for
the GAN loop (:mod:`m2f_bench.training.loop`), whose helpers this module shares.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from m2f_bench._progress import progress_bar
from m2f_bench.errors import M2FError
from m2f_bench.masks import MASK_TYPES, apply_mask
from m2f_bench.segmenters import hole_iou, holes_from_probabilities, mask_found
from m2f_bench.segmenters._net import MaskSegmenterNet, save_segmenter
from m2f_bench.training.augment import degrade, jitter_geometry
from m2f_bench.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from m2f_bench.training.config import SegmenterConfig
from m2f_bench.training.data import (
    _VALIDATION_STREAM,
    EpochBatchSampler,
    PreparedSplit,
    colour_jitter,
    make_loader,
    sample_rng,
)
from m2f_bench.training.distributed import resolve_device
from m2f_bench.training.loop import (
    TrainingDiverged,
    TrainResult,
    _prepare_run_dir,
    _stop_on_interrupt,
    _write_run_info,
    check_fold,
    lr_factor,
    summary_writer,
    truncate_validation,
)

#: Stream of the degraded validation crops (fixed, like the clean validation masks).
_DEGRADED_STREAM = _VALIDATION_STREAM + 1


def make_segment_sample(
    split: PreparedSplit,
    index: int,
    config: SegmenterConfig,
    stream: int,
    augment: bool,
    negative: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One (uint8 crop, bool hole) pair; ``negative`` forces (True) or forbids (False) the
    unmasked case instead of drawing it."""
    spec = config.data
    image_id = split.image_ids[index]
    crop, landmarks = split.load(index)
    rng = sample_rng(config.seed, stream, image_id)
    if augment:
        crop = colour_jitter(crop, rng, spec.brightness, spec.contrast, spec.saturation)
    draw_negative = rng.random() < config.negatives
    negative = draw_negative if negative is None else negative
    types = spec.mask_types or MASK_TYPES
    mask_type = types[int(rng.integers(len(types)))]
    if negative:
        image, hole = crop, np.zeros(crop.shape[:2], bool)
    else:
        tag = f"e{stream}" if stream < _VALIDATION_STREAM else "val"
        masked = apply_mask(
            crop, landmarks, mask_type, image_id=f"{image_id}#{tag}", seed=config.seed
        )
        image, hole = masked.image, masked.hole
    if augment:
        if rng.random() < spec.flip:
            image, hole = image[:, ::-1], hole[:, ::-1]
        image, hole = jitter_geometry(
            np.ascontiguousarray(image), np.ascontiguousarray(hole), rng, config.augment
        )
        image = degrade(image, rng, config.augment)
    return np.ascontiguousarray(image), np.ascontiguousarray(hole)


class SegmentSamples(Dataset):
    """Map-style dataset indexed by ``(epoch, image index)``."""

    def __init__(self, split: PreparedSplit, config: SegmenterConfig) -> None:
        self.split, self.config, self.seed = split, config, config.seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        image, hole = make_segment_sample(self.split, index, self.config, epoch, augment=True)
        return {"image": torch.from_numpy(image), "hole": torch.from_numpy(hole)}


def _inputs(images: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(images).to(device).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last)


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, bce: float, dice: float
) -> dict[str, torch.Tensor]:
    """The loss terms, unweighted (the caller applies the config's weights).

    Dice is computed over the whole batch, so unmasked crops (empty targets) count through
    their false positives instead of a 0/0.
    """
    terms = {}
    if bce:
        terms["bce"] = F.binary_cross_entropy_with_logits(logits, target)
    if dice:
        p = torch.sigmoid(logits)
        inter = (p * target).sum()
        terms["dice"] = 1 - (2 * inter + 1) / (p.sum() + target.sum() + 1)
    return terms


@dataclass(frozen=True)
class SegmentValidation:
    """Fixed validation crops: masked (clean and degraded) and the same faces unmasked."""

    masked: np.ndarray
    holes: np.ndarray
    degraded: np.ndarray
    degraded_holes: np.ndarray
    clean: np.ndarray

    @classmethod
    def build(cls, split: PreparedSplit, config: SegmenterConfig) -> SegmentValidation:
        limit = config.data.val_limit
        count = len(split) if limit is None else min(limit, len(split))
        masked = [
            make_segment_sample(split, i, config, _VALIDATION_STREAM, False, False)
            for i in range(count)
        ]
        degraded = [
            make_segment_sample(split, i, config, _DEGRADED_STREAM, True, False)
            for i in range(count)
        ]
        return cls(
            masked=np.stack([m[0] for m in masked]),
            holes=np.stack([m[1] for m in masked]),
            degraded=np.stack([m[0] for m in degraded]),
            degraded_holes=np.stack([m[1] for m in degraded]),
            clean=np.stack([split.load(i)[0] for i in range(count)]),
        )


def predict_probabilities(
    network: MaskSegmenterNet, images: np.ndarray, device: torch.device, batch_size: int = 64
) -> np.ndarray:
    """Sigmoid outputs, float32 N×H×W."""
    out = []
    network.eval()
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            logits = network(_inputs(images[i : i + batch_size], device))
            out.append(torch.sigmoid(logits.float())[:, 0].cpu().numpy())
    network.train()
    return np.concatenate(out)


def validate(
    network: MaskSegmenterNet, val: SegmentValidation, device: torch.device
) -> dict[str, float]:
    """Mean hole IoU (clean and degraded masked crops) and false-positive rate (unmasked)."""
    from m2f_bench.segmenters import Segmenter

    defaults = Segmenter.__init__.__defaults__  # threshold, dilate, min_coverage
    threshold, _, min_coverage = defaults
    results = {}
    for key, images, holes in (
        ("iou", val.masked, val.holes),
        ("iou_degraded", val.degraded, val.degraded_holes),
    ):
        found = holes_from_probabilities(
            predict_probabilities(network, images, device), threshold, 0, min_coverage
        )
        results[key] = float(hole_iou(found, holes).mean())
    clean = holes_from_probabilities(
        predict_probabilities(network, val.clean, device), threshold, 0, min_coverage
    )
    results["false_positive_rate"] = float(mask_found(clean).mean())
    return results


def train_segmenter(
    config: SegmenterConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    on_step=None,
) -> TrainResult:
    """Train the config's segmenter into ``run_dir`` (one process).

    ``on_step(step, losses)`` is called after every step (tests interrupt runs with it).

    Raises:
        TrainingDiverged: The loss became NaN or infinite; the last checkpoint is kept.
        M2FError: The run folder holds another run, the data is missing, ...
    """

    from m2f_bench.training.distributed import DistContext

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise M2FError("segmenter training runs in one process; start it without torchrun")
    run_dir = Path(run_dir)
    kind = resolve_device(device)
    ctx = DistContext(0, 1, kind)
    checkpoint = _prepare_run_dir(config, run_dir, resume)
    spec = config.data
    train_split = PreparedSplit(spec.root, spec.train_split)
    torch.manual_seed(config.seed)
    network = MaskSegmenterNet(**config.model.arch_args()).to(
        kind, memory_format=torch.channels_last
    )
    check_fold(*train_split.load(0)[0].shape[:2], network.multiple)
    optimizer = torch.optim.Adam(network.parameters(), config.optim.lr, betas=config.optim.betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config.optim))
    step = 0
    if checkpoint is not None:
        state = load_checkpoint(
            checkpoint,
            networks={"segmenter": network},
            optimizers={"segmenter": optimizer},
            schedulers={"segmenter": scheduler},
        )
        step, run_info = state["step"], state["run"]
        truncate_validation(run_dir, step)
    info = _write_run_info(config, run_dir, ctx)
    if checkpoint is None:
        run_info = info
    val = SegmentValidation.build(PreparedSplit(spec.root, spec.val_split), config)
    sampler = EpochBatchSampler(
        len(train_split), config.optim.batch_size, config.optim.steps, config.seed, start_step=step
    )
    loader = make_loader(SegmentSamples(train_split, config), sampler, spec.workers)
    writer = summary_writer(run_dir, step)
    autocast = config.amp and kind.type == "cuda"
    name = config.model.name

    def save() -> Path:
        return save_checkpoint(
            run_dir,
            step,
            weights={"segmenter": lambda path: save_segmenter(path, network, name)},
            optimizers={"segmenter": optimizer},
            schedulers={"segmenter": scheduler},
            extra={"config": config.model_dump(mode="json"), "run": run_info},
            keep=config.checkpoint.keep,
        )

    batch = config.optim.batch_size
    bar = progress_bar(
        config.optim.steps * batch, config.name, initial=step * batch, enabled=progress
    )
    validation: dict[str, float] = {}
    last_saved, stopped = checkpoint, "done"
    started, start_step = time.perf_counter(), step
    window: dict[str, list[float]] = {}
    network.train()
    try:
        with _stop_on_interrupt() as interrupt:
            for item in loader:
                images = _inputs(item["image"], kind)
                target = item["hole"].to(kind).unsqueeze(1).float()
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                    logits = network(images)
                terms = segmentation_loss(logits.float(), target, config.loss.bce, config.loss.dice)
                total = sum(getattr(config.loss, k) * v for k, v in terms.items())
                if not torch.isfinite(total):
                    last = latest_checkpoint(run_dir)
                    kept = (
                        f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"
                    )
                    raise TrainingDiverged(
                        f"segmentation loss is not finite at step {step + 1}; stopped without "
                        f"updating the weights ({kept})"
                    )
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                values = {k: float(v.detach()) for k, v in {**terms, "total": total}.items()}
                for k, v in values.items():
                    window.setdefault(k, []).append(v)
                bar.update(batch)
                bar.set_postfix(loss=f"{float(total.detach()):.4f}", refresh=False)
                if step % config.log.every == 0:
                    for k, v in window.items():
                        writer.add_scalar(f"loss/{k}", float(np.mean(v)), step)
                    writer.add_scalar("lr/segmenter", scheduler.get_last_lr()[0], step)
                    elapsed = time.perf_counter() - started
                    writer.add_scalar(
                        "speed/images_per_s", (step - start_step) * batch / elapsed, step
                    )
                    window.clear()
                every = sampler.steps_per_epoch * config.log.validate_every
                if step % every == 0 or step == config.optim.steps:
                    metrics = validate(network, val, kind)
                    epoch = step / sampler.steps_per_epoch
                    for k, v in metrics.items():
                        writer.add_scalar(f"val/{k}", v, step)
                    with open(run_dir / "validation.jsonl", "a", encoding="utf-8") as fh:
                        fh.write(
                            json.dumps({"step": step, "epoch": round(epoch, 3), **metrics}) + "\n"
                        )
                    validation.update(metrics)
                    text = (
                        f"step {step} (epoch {epoch:.1f}): val hole IoU {metrics['iou']:.4f} "
                        f"(degraded {metrics['iou_degraded']:.4f}), false positives "
                        f"{100 * metrics['false_positive_rate']:.2f} %"
                    )
                    if progress:
                        bar.write(text)
                    else:
                        print(text, file=sys.stderr, flush=True)
                if step % config.checkpoint.every == 0 or step == config.optim.steps:
                    last_saved = save()
                if on_step is not None:
                    on_step(step, values)
                if interrupt["stop"]:
                    if last_saved is None or not last_saved.name.endswith(f"{step:07d}"):
                        last_saved = save()
                    stopped = "interrupted"
                    break
    finally:
        bar.close()
        writer.close()
    elapsed = time.perf_counter() - started
    rate = (step - start_step) * batch / elapsed if elapsed > 0 else float("nan")
    return TrainResult(run_dir, step, stopped, last_saved, rate, validation)
