"""The training loop: generator and discriminator steps, validation, logging, checkpoints.

One step: the generator fills the holes of a batch; the discriminator (every
``discriminator.every`` steps, once ``loss.gan_start_step`` is reached) learns to tell the
composited crops from the clean ones; the generator then takes one step on
``Σ weight × term`` over the terms named in the config's ``loss`` section. Validation PSNR
and SSIM are computed after every epoch with :mod:`m2f_bench.metrics.pixel`, the
benchmark's own metric code, on composited uint8 crops.

Stopping: a non-finite loss raises :class:`TrainingDiverged` before any optimiser step
takes it in, so the last checkpoint stays the last good state; Ctrl-C finishes the current
step, saves a checkpoint and returns.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from m2f_bench import __version__
from m2f_bench._io import atomic_write_json, atomic_write_text
from m2f_bench._progress import progress_bar
from m2f_bench.errors import M2FError
from m2f_bench.inpainters import INPAINTERS
from m2f_bench.inpainters._nets import EncoderDecoderGenerator, to_tensors, to_uint8
from m2f_bench.metrics.pixel import psnr, psnr_hole, ssim
from m2f_bench.training import losses
from m2f_bench.training.checkpoint import (
    best_validation,
    latest_checkpoint,
    load_checkpoint,
    read_state,
    save_best,
    save_checkpoint,
)
from m2f_bench.training.config import OptimSpec, SegmenterConfig, TrainConfig, config_to_yaml
from m2f_bench.training.data import (
    EpochBatchSampler,
    PreparedSplit,
    TrainingSamples,
    ValidationSet,
    make_loader,
    to_device,
)
from m2f_bench.training.discriminator import PatchDiscriminator
from m2f_bench.training.distributed import (
    DistContext,
    any_rank,
    init_distributed,
    mean_over_ranks,
    shutdown,
    unwrap,
    wrap,
)

log = logging.getLogger(__name__)

#: Config sections that may change between a run and its resumption: they change how a
#: run is observed or fed, not what it computes.
_RESUMABLE_CHANGES = ("checkpoint", "log", "description")
_RESUMABLE_DATA_CHANGES = ("root", "workers")


class TrainingDiverged(M2FError):
    """A loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What a call to :func:`train` did."""

    run_dir: Path
    step: int
    stopped: str  # "done" or "interrupted"
    checkpoint: Path | None
    images_per_second: float
    validation: dict[str, float] = field(default_factory=dict)


def lr_factor(spec: OptimSpec) -> Callable[[int], float]:
    """The learning-rate multiplier of each step: linear warm-up, then constant or cosine."""

    def factor(step: int) -> float:
        if step < spec.warmup_steps:
            return (step + 1) / spec.warmup_steps
        if spec.schedule == "constant":
            return 1.0
        span = max(1, spec.steps - spec.warmup_steps)
        progress = min(1.0, (step - spec.warmup_steps) / span)
        return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )

    return factor


@contextmanager
def _stop_on_interrupt():
    """Turn the first Ctrl-C into a request to stop after the current step."""
    requested = {"stop": False}
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if requested["stop"]:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        requested["stop"] = True
        log.warning("interrupt: saving a checkpoint after this step (Ctrl-C again to abort)")

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: leave Ctrl-C as it is
        yield requested
        return
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


def _comparable(config: TrainConfig | SegmenterConfig) -> dict[str, Any]:
    dumped = config.model_dump(mode="json", exclude=set(_RESUMABLE_CHANGES))
    for key in _RESUMABLE_DATA_CHANGES:
        dumped["data"].pop(key)
    return dumped


def _check_resumable(
    saved: dict[str, Any], config: TrainConfig | SegmenterConfig, where: Path
) -> None:
    from m2f_bench.training.config import parse_config

    previous = parse_config(saved, str(where))
    if type(previous) is not type(config):
        kinds = {TrainConfig: "an inpainter", SegmenterConfig: "a segmenter"}
        raise M2FError(
            f"cannot resume {where}: it is {kinds[type(previous)]} run and this config "
            f"trains {kinds[type(config)]}; train into a new --out folder instead"
        )
    before, now = _comparable(previous), _comparable(config)
    changed = []
    for section, value in now.items():
        if isinstance(value, dict):
            old = before.get(section)
            old = old if isinstance(old, dict) else {}
            changed += [f"{section}.{k}" for k in value if old.get(k) != value[k]]
        elif before.get(section) != value:
            changed.append(section)
    if changed:
        raise M2FError(
            f"cannot resume {where}: the config changed ({', '.join(changed)}); "
            "train into a new --out folder instead"
        )


class Trainer:
    """Holds the networks, optimisers and data of one run; :meth:`run` trains.

    Args:
        config: The validated training config.
        run_dir: The run folder (checkpoints, TensorBoard logs, config copy).
        ctx: This process's place in the (possibly distributed) job.
    """

    def __init__(self, config: TrainConfig, run_dir: Path, ctx: DistContext) -> None:
        self.config, self.run_dir, self.ctx = config, run_dir, ctx
        torch.manual_seed(config.seed)
        build = INPAINTERS.get(config.model.name).build_network
        cl = torch.channels_last
        self.generator: EncoderDecoderGenerator = build(**config.model.arch_args()).to(
            ctx.device, memory_format=cl
        )
        self.discriminator = PatchDiscriminator(
            config.discriminator.widths, config.discriminator.unshuffle
        ).to(ctx.device, memory_format=cl)
        optim = config.optim
        self.optimizers = {
            "generator": torch.optim.Adam(self.generator.parameters(), optim.lr, betas=optim.betas),
            "discriminator": torch.optim.Adam(
                self.discriminator.parameters(), config.discriminator.lr, betas=optim.betas
            ),
        }
        # Both schedules follow one clock (the step), whether or not D trained this step.
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(optim))
            for name, opt in self.optimizers.items()
        }
        # holes: predicted — the frozen segmenter finds the hole the generator fills, in
        # training and validation alike, as unet-gan-blind runs on photos.
        self.segmenter = None
        if config.data.holes == "predicted":
            from m2f_bench.segmenters.mask_unet import MaskUNetSegmenter

            self.segmenter = MaskUNetSegmenter(
                config.data.segmenter, device=ctx.device.type, batch_size=256
            )
        # The identity term's recognizer: frozen, not part of any checkpoint.
        self.identity = None
        if config.loss.identity > 0:
            from m2f_bench.training.identity import build_identity_loss

            self.identity = build_identity_loss(config.loss.identity_model).to(ctx.device)
        self.g_model = wrap(self.generator, ctx)
        self.d_model = wrap(self.discriminator, ctx)
        self.step = 0
        amp = config.amp and ctx.device.type == "cuda"
        self.autocast = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else nullcontext
        )

    def check_size(self, height: int, width: int) -> None:
        """Refuse crops the generator or the discriminator cannot fold (:func:`check_fold`)."""
        check_fold(height, width, self.generator.multiple)
        check_fold(
            height, width, self.config.discriminator.unshuffle, keys="discriminator.unshuffle"
        )

    def init_from(self, weights: str) -> Path:
        """Load the generator weights a second training stage starts from.

        Raises:
            M2FError: The weights belong to another inpainter or another architecture.
        """
        from m2f_bench.inpainters import INPAINTERS
        from m2f_bench.inpainters._nets import load_network
        from m2f_bench.inpainters.cards import resolve_weights

        name = self.config.model.name
        try:
            path = resolve_weights(weights, name)
            loaded = load_network(path, name, INPAINTERS.get(name).skips)
        except M2FError as exc:
            raise M2FError(f"model.init: {exc}") from None
        if self.config.model.init_widen:
            from m2f_bench.training.widen import widen_into

            widen_into(loaded, self.generator)
        elif loaded.arch_args != self.generator.arch_args:
            raise M2FError(
                f"model.init: {path} has architecture {json.dumps(loaded.arch_args)}, the "
                f"config asks for {json.dumps(self.generator.arch_args)} (model.init_widen: "
                "true starts wider widths from narrower weights)"
            )
        else:
            self.generator.load_state_dict(loaded.state_dict())
        log.info(
            "generator initialised from %s%s",
            path,
            f" (widened from widths {loaded.arch_args['widths']})"
            if loaded.arch_args != self.generator.arch_args
            else "",
        )
        return path

    # -- one step ---------------------------------------------------------------------

    def _check_finite(self, values: dict[str, torch.Tensor]) -> None:
        bad = [name for name, v in values.items() if not torch.isfinite(v).all()]
        if bad:
            last = latest_checkpoint(self.run_dir)
            kept = f"last good checkpoint: {last}" if last else "no checkpoint was saved yet"
            raise TrainingDiverged(
                f"{' and '.join(bad)} loss is not finite at step {self.step + 1}; "
                f"stopped without updating the weights ({kept})"
            )

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One generator step, preceded by a discriminator step when it is due.

        Returns:
            The step's loss terms (detached), ``g_total`` and, on D steps, ``d``.
        """
        spec, weights = self.config, self.config.loss
        if self.segmenter is not None:
            batch = dict(
                batch, hole=torch.from_numpy(self.segmenter.holes(batch["masked"].numpy()))
            )
        masked, hole, target = to_device(batch, self.ctx.device)
        with self.autocast():
            output = self.g_model(masked, hole)
        output = output.float()
        composite = hole * output + (1 - hole) * masked
        gan_on = weights.uses_gan and self.step >= weights.gan_start_step
        logged: dict[str, torch.Tensor] = {}

        if gan_on and self.step % spec.discriminator.every == 0:
            self.discriminator.requires_grad_(True)
            with self.autocast():
                # Real and fake in one pass: one DDP forward and backward per D step.
                logits, _ = self.d_model(
                    torch.cat([target, composite.detach()]),
                    torch.cat([masked, masked]),
                    torch.cat([hole, hole]),
                )
            real_logits, fake_logits = logits.float().chunk(2)
            d_loss = losses.d_loss(real_logits, fake_logits, weights.adversarial_type)
            self._check_finite({"discriminator": d_loss})
            opt = self.optimizers["discriminator"]
            opt.zero_grad(set_to_none=True)
            d_loss.backward()
            opt.step()
            logged["d"] = d_loss.detach()

        terms = {
            "l1": losses.hole_weighted_l1(
                output, target, hole, weights.l1_hole_weight, weights.l1_valid_weight
            ),
            "ssim": losses.ssim_loss(composite, target),
        }
        if weights.mse > 0:
            terms["mse"] = losses.hole_weighted_mse(
                output, target, hole, weights.l1_hole_weight, weights.l1_valid_weight
            )
        if self.identity is not None:
            terms["identity"] = self.identity(composite, target)
        if gan_on:
            # The plain module, not the DDP wrapper: no D gradients, so no D all-reduce.
            critic = unwrap(self.d_model)
            critic.requires_grad_(False)
            with self.autocast():
                fake_logits, fake_features = critic(composite, masked, hole)
                with torch.no_grad():
                    _, real_features = critic(target, masked, hole)
            terms["adversarial"] = losses.g_adversarial_loss(
                fake_logits.float(), weights.adversarial_type
            )
            terms["feature_matching"] = losses.feature_matching_loss(
                [f.float() for f in fake_features], [f.float() for f in real_features]
            )
        total = sum(getattr(weights, name) * term for name, term in terms.items())
        self._check_finite({"generator": total})
        opt = self.optimizers["generator"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        if spec.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.generator.parameters(), spec.optim.grad_clip)
        opt.step()
        with warnings.catch_warnings():
            # Before the GAN starts D's optimiser has not stepped; its schedule still
            # advances, which PyTorch would warn about as if it were a mistake.
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            for scheduler in self.schedulers.values():
                scheduler.step()
        self.step += 1
        logged.update({name: t.detach() for name, t in terms.items()})
        logged["g_total"] = total.detach()
        return logged

    # -- validation -------------------------------------------------------------------

    def predict(self, masked: np.ndarray, holes: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Composited uint8 restorations of uint8 masked crops, as an inpainter returns them."""
        outputs = []
        with torch.inference_mode():
            for i in range(0, len(masked), batch_size):
                image, hole = to_tensors(masked[i : i + batch_size], holes[i : i + batch_size])
                with self.autocast():
                    out = self.generator(image.to(self.ctx.device), hole.to(self.ctx.device))
                outputs.append(to_uint8(out.cpu()))
        return np.where(holes[..., None], np.concatenate(outputs), masked)

    def validate(self, val: ValidationSet) -> tuple[dict[str, float], np.ndarray]:
        """Mean PSNR/SSIM (whole crop) and hole PSNR on the validation set, and the outputs."""
        holes = val.holes if self.segmenter is None else self.segmenter.holes(val.masked)
        restored = self.predict(val.masked, holes)
        values = {
            "psnr": psnr(restored, val.targets),
            "ssim": ssim(restored, val.targets),
            "psnr_hole": psnr_hole(restored, val.targets, val.holes),
        }
        if self.identity is not None:
            values["id_sim"] = self._identity_similarity(restored, val.targets)
        # An exactly restored crop has PSNR +inf; means leave such values out, as reports do.
        return {k: float(np.mean(v[np.isfinite(v)])) for k, v in values.items()}, restored

    def _identity_similarity(self, restored: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Cosine of the identity term's embeddings (chip alone) of restored and clean crops."""

        def tensor(images: np.ndarray) -> torch.Tensor:
            image = torch.from_numpy(images).to(self.ctx.device).permute(0, 3, 1, 2)
            return image.float().div(127.5).sub(1.0)

        sims = []
        with torch.inference_mode():
            for i in range(0, len(restored), 64):
                out, ref = tensor(restored[i : i + 64]), tensor(targets[i : i + 64])
                sims.append(self.identity.similarity(out, ref).cpu().numpy())
        return np.concatenate(sims)


def _sample_grid(val: ValidationSet, restored: np.ndarray, count: int) -> np.ndarray:
    """Rows of (masked input | restoration | clean crop), uint8 H×W×3."""
    rows = [
        np.concatenate([val.masked[i], restored[i], val.targets[i]], axis=1)
        for i in range(min(count, len(restored)))
    ]
    return np.concatenate(rows, axis=0)


def check_fold(
    height: int, width: int, multiple: int, keys: str = "model.unshuffle × 2^(levels − 1)"
) -> None:
    """Refuse crops a network cannot fold into its pixel blocks and levels.

    Raises:
        M2FError: A side is not a multiple of ``multiple`` (one line naming ``keys``).
    """
    if height % multiple or width % multiple:
        raise M2FError(
            f"the crops are {height}×{width} px: their sides must be multiples of "
            f"{multiple} ({keys}); change those keys or the crop size"
        )


def summary_writer(run_dir: Path, step: int):
    """The run's TensorBoard writer; events an interrupted attempt logged from ``step`` on
    are purged (they are logged again)."""
    # TensorBoard imports TensorFlow when it is installed: keep its start-up notices
    # (CPU features, absl) off stderr, where they would bury one-line errors.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=step)


def _prepare_run_dir(
    config: TrainConfig | SegmenterConfig, run_dir: Path, resume: bool, is_main: bool = True
) -> Path | None:
    """Check the run folder against ``--resume``; return the checkpoint to resume from.

    Starting afresh in a folder a stopped attempt left without a checkpoint drops that
    attempt's validation lines (the main process does; TensorBoard's are purged when its
    writer opens).
    """
    if (run_dir / "card.yaml").is_file() or any(run_dir.glob("*.safetensors")):
        raise M2FError(
            f"{run_dir} is a model folder (card.yaml or weights), not a run; train into "
            "another --out and package it with package-model"
        )
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None and not resume:
        raise M2FError(
            f"{run_dir} already holds a training run (checkpoint {checkpoint.name}); "
            "pass --resume to continue it, or choose another --out"
        )
    if checkpoint is not None:
        _check_resumable(read_state(checkpoint)["config"], config, checkpoint)
        return checkpoint
    if is_main:
        if resume:
            log.warning("nothing to resume in %s (no checkpoint); starting at step 0", run_dir)
        truncate_validation(run_dir, 0)
    return None


def truncate_validation(run_dir: Path, step: int) -> None:
    """On resume: drop the validation lines an interrupted attempt wrote after the step it
    resumes from (they are written again), and any half-written last line."""
    path = run_dir / "validation.jsonl"
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    atomic_write_text(path, "".join(kept))


def _write_run_info(
    config: TrainConfig, run_dir: Path, ctx: DistContext, init: dict[str, Any] | None = None
) -> dict[str, Any]:
    from m2f_bench.evaluation.runner import environment, git_commit

    info = {
        "version": __version__,
        "git_commit": git_commit(),
        "environment": environment(),
        "world_size": ctx.world_size,
        "device": str(ctx.device),
        "torch": torch.__version__,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if ctx.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(ctx.device)
    if init is not None:
        info["init"] = init
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))
    atomic_write_json(run_dir / "run.json", info)
    return info


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    on_step: Callable[[Trainer, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train the config's generator into ``run_dir``.

    Args:
        config: The validated training config.
        run_dir: Run folder; with ``resume``, its latest checkpoint is continued (an empty
            folder starts from step 0).
        resume: Continue the run in ``run_dir``.
        device: ``cpu``, ``cuda`` or ``auto``.
        progress: Show a progress bar (images/s and ETA) on rank 0.
        on_step: Called after every step with the trainer and the step's losses.

    Raises:
        TrainingDiverged: A loss became NaN or infinite; the last checkpoint is kept.
        M2FError: The run folder holds another run, the data is missing, ...
    """
    run_dir = Path(run_dir)
    ctx = init_distributed(device)
    finished = False
    try:
        result = _train(config, run_dir, ctx, resume, progress, on_step)
        finished = True
        return result
    finally:
        shutdown(ctx, finished=finished)


def _train(config, run_dir, ctx, resume, progress, on_step) -> TrainResult:
    spec = config.data
    checkpoint = _prepare_run_dir(config, run_dir, resume, ctx.is_main)
    train_split = PreparedSplit(spec.root, spec.train_split)
    trainer = Trainer(config, run_dir, ctx)
    trainer.check_size(*train_split.load(0)[0].shape[:2])
    if checkpoint is not None:
        state = load_checkpoint(
            checkpoint,
            generator=trainer.generator,
            discriminator=trainer.discriminator,
            optimizers=trainer.optimizers,
            schedulers=trainer.schedulers,
        )
        trainer.step = state["step"]
        run_info = state["run"]
        if ctx.is_main:
            truncate_validation(run_dir, trainer.step)
    init = None
    if checkpoint is None and config.model.init:
        from m2f_bench.training.package import init_facts

        path = trainer.init_from(config.model.init)
        if ctx.is_main:
            # Recorded now, not when packaging: the weights at that path may change later.
            init = init_facts(config.model.init, config.model.name) | {"path": str(path.resolve())}
    info = _write_run_info(config, run_dir, ctx, init) if ctx.is_main else {}
    if checkpoint is None:
        run_info = info
    val = val_degraded = None
    if ctx.is_main:
        val_split = PreparedSplit(spec.root, spec.val_split)
        val = ValidationSet.build(val_split, spec, config.seed)
        if spec.degrade is not None:
            # Runs that train on degraded crops are also validated on them ("*_degraded").
            val_degraded = ValidationSet.build(val_split, spec, config.seed, degraded=True)

    sampler = EpochBatchSampler(
        len(train_split),
        config.optim.batch_size,
        config.optim.steps,
        config.seed,
        start_step=trainer.step,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    loader = make_loader(TrainingSamples(train_split, spec, config.seed), sampler, spec.workers)
    writer = None
    if ctx.is_main:
        writer = summary_writer(run_dir, trainer.step)

    def save() -> Path | None:
        if not ctx.is_main:
            return None
        return save_checkpoint(
            run_dir,
            trainer.step,
            generator=trainer.generator,
            generator_name=config.model.name,
            discriminator=trainer.discriminator,
            optimizers=trainer.optimizers,
            schedulers=trainer.schedulers,
            extra={"config": config.model_dump(mode="json"), "run": run_info},
            keep=config.checkpoint.keep,
        )

    # checkpoint.best: the highest validation PSNR so far (a resumed run's from its folder).
    kept = (
        best_validation(run_dir, trainer.step) if ctx.is_main and config.checkpoint.best else None
    )
    best = {"psnr": kept["psnr"] if kept else -math.inf}

    def run_validation() -> None:
        metrics, restored = trainer.validate(val)
        if config.checkpoint.best and metrics["psnr"] > best["psnr"]:
            best["psnr"] = metrics["psnr"]
            save_best(
                run_dir,
                trainer.step,
                generator=trainer.generator,
                generator_name=config.model.name,
                validation=metrics,
                extra={"config": config.model_dump(mode="json"), "run": run_info},
            )
        if val_degraded is not None:
            degraded, _ = trainer.validate(val_degraded)
            metrics.update({f"{name}_degraded": value for name, value in degraded.items()})
        epoch = trainer.step / sampler.steps_per_epoch
        for name, value in metrics.items():
            writer.add_scalar(f"val/{name}", value, trainer.step)
        if config.log.images:
            grid = _sample_grid(val, restored, config.log.images)
            writer.add_image("val/samples", grid, trainer.step, dataformats="HWC")
        line = {"step": trainer.step, "epoch": round(epoch, 3), **metrics}
        with open(run_dir / "validation.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
        validation.update(metrics)
        text = (
            f"step {trainer.step} (epoch {epoch:.1f}): val PSNR {metrics['psnr']:.2f} dB, "
            f"SSIM {metrics['ssim']:.4f}, hole PSNR {metrics['psnr_hole']:.2f} dB"
            + (f", id_sim {metrics['id_sim']:.3f}" if "id_sim" in metrics else "")
            + (
                f"; degraded crops PSNR {metrics['psnr_degraded']:.2f} dB, "
                f"SSIM {metrics['ssim_degraded']:.4f}"
                if "psnr_degraded" in metrics
                else ""
            )
        )
        if bar is not None:
            bar.write(text)
        else:  # results, not progress: printed with or without a bar
            print(text, file=sys.stderr, flush=True)

    batch = config.optim.batch_size
    bar = None
    if ctx.is_main and progress:
        bar = progress_bar(config.optim.steps * batch, config.name, initial=trainer.step * batch)
    validation: dict[str, float] = {}
    last_saved: Path | None = checkpoint
    stopped = "done"
    started, start_step = time.perf_counter(), trainer.step
    window: dict[str, list[float]] = {}
    try:
        with _stop_on_interrupt() as interrupt:
            for item in loader:
                logged = trainer.train_step(item)
                step = trainer.step
                values = {k: float(v) for k, v in logged.items()}
                for name, value in values.items():
                    window.setdefault(name, []).append(value)
                if bar is not None:
                    bar.update(batch)
                    bar.set_postfix(loss=f"{values['g_total']:.4f}", refresh=False)
                if step % config.log.every == 0:
                    means = {k: float(np.mean(v)) for k, v in window.items()}
                    names = sorted(means)
                    reduced = mean_over_ranks(torch.tensor([means[k] for k in names]), ctx)
                    if writer is not None:
                        for name, value in zip(names, reduced.tolist(), strict=True):
                            writer.add_scalar(f"loss/{name}", value, step)
                        writer.add_scalar(
                            "lr/generator", trainer.schedulers["generator"].get_last_lr()[0], step
                        )
                        elapsed = time.perf_counter() - started
                        writer.add_scalar(
                            "speed/images_per_s", (step - start_step) * batch / elapsed, step
                        )
                    window.clear()
                if ctx.is_main and (
                    step % (sampler.steps_per_epoch * config.log.validate_every) == 0
                    or step == config.optim.steps
                ):
                    run_validation()
                if step % config.checkpoint.every == 0 or step == config.optim.steps:
                    last_saved = save() or last_saved
                if on_step is not None:
                    on_step(trainer, values)
                if any_rank(interrupt["stop"], ctx):
                    if last_saved is None or not last_saved.name.endswith(f"{step:07d}"):
                        last_saved = save() or last_saved
                    stopped = "interrupted"
                    break
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    elapsed = time.perf_counter() - started
    rate = (trainer.step - start_step) * batch / elapsed if elapsed > 0 else float("nan")
    return TrainResult(run_dir, trainer.step, stopped, last_saved, rate, validation)
