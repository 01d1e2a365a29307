"""Training and inference throughput of the learned inpainters, with peak memory.

What ``m2f-bench benchmark train`` prints. Each figure is measured on synthetic batches of
the config's size (the data loader's cost is left out: it runs in worker processes beside
the step), after warm-up steps that are not timed:

- training: full generator steps with the GAN terms on and a discriminator step as often
  as the config says (``discriminator.every``), AMP on CUDA when the config asks for it;
- inference: the generator's forward pass at batch 32 in PyTorch (channels-last, no
  grad), and the same network exported to ONNX in ONNX Runtime.

Peak memory is the process's peak resident set on CPU (it only grows, so each line gives
the peak so far) and ``torch.cuda.max_memory_allocated`` per phase on CUDA.
"""

from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from m2f_bench.training.config import TrainConfig
from m2f_bench.training.distributed import DistContext, resolve_device


@dataclass(frozen=True)
class Throughput:
    """One measured figure."""

    what: str
    runtime: str
    images_per_second: float
    peak_mib: float


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(size: int, n: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(n, 3, size, size, generator=gen) * 2 - 1
    hole = torch.zeros(n, 1, size, size)
    hole[:, :, size // 2 :, size // 5 : size - size // 5] = 1  # a lower-face-sized hole
    masked = target * (1 - hole)
    return {"masked": masked, "hole": hole, "target": target}


def _time(fn, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return time.perf_counter() - start


def benchmark_training(
    config: TrainConfig,
    *,
    device: str = "cpu",
    size: int = 128,
    steps: int = 6,
    warmup: int = 2,
) -> Throughput:
    """Images/s of full training steps (GAN on) at the config's batch size."""
    from m2f_bench.training.loop import Trainer

    kind = resolve_device(device)
    with tempfile.TemporaryDirectory(prefix="m2f-bench-train-") as tmp:
        trainer = Trainer(config, Path(tmp), DistContext(0, 1, kind))
        trainer.check_size(size, size)
        trainer.step = config.loss.gan_start_step  # time the steps with the GAN terms on
        # What the data loader yields: uint8 NHWC crops and an N×H×W hole.
        floats = _batch(size, config.optim.batch_size)
        batch = {
            k: ((floats[k].permute(0, 2, 3, 1) + 1) * 127.5).round().to(torch.uint8)
            for k in ("masked", "target")
        }
        batch["hole"] = floats["hole"][:, 0].to(torch.uint8)
        _reset_peak(kind)
        seconds = _time(lambda: trainer.train_step(batch), steps, warmup, kind)
    rate = steps * config.optim.batch_size / seconds
    amp = " AMP" if config.amp and kind.type == "cuda" else ""
    return Throughput(
        f"train {config.model.name}", f"torch {kind.type}{amp}", rate, _peak_mib(kind)
    )


def benchmark_inference(
    config: TrainConfig,
    *,
    device: str = "cpu",
    size: int = 128,
    batch_size: int = 32,
    steps: int = 8,
    warmup: int = 2,
    onnx: bool = True,
) -> list[Throughput]:
    """Images/s of the generator's forward pass in PyTorch and (optionally) ONNX Runtime."""
    from m2f_bench.inpainters import INPAINTERS

    kind = resolve_device(device)
    torch.manual_seed(config.seed)
    network = INPAINTERS.get(config.model.name).build_network(**config.model.arch_args())
    network = network.eval().to(kind, memory_format=torch.channels_last)
    batch = _batch(size, batch_size)
    image = batch["masked"].to(kind, memory_format=torch.channels_last)
    hole = batch["hole"].to(kind, memory_format=torch.channels_last)
    name = config.model.name
    results = []
    _reset_peak(kind)
    with torch.inference_mode():
        seconds = _time(lambda: network(image, hole), steps, warmup, kind)
    results.append(
        Throughput(
            f"infer {name}", f"torch {kind.type}", steps * batch_size / seconds, _peak_mib(kind)
        )
    )
    if onnx:
        results.append(_onnx_inference(network.cpu().float(), name, kind, batch, steps, warmup))
    return results


def _onnx_inference(network, name, kind, batch, steps, warmup) -> Throughput:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if kind.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    image, hole = batch["masked"].cpu(), batch["hole"].cpu()
    from m2f_bench.training.export import trace_to_onnx

    with tempfile.TemporaryDirectory(prefix="m2f-bench-onnx-") as tmp:
        path = Path(tmp) / f"{name}.onnx"
        trace_to_onnx(network, image, hole, path)
        session = ort.InferenceSession(str(path), providers=providers)
    feeds = {"image": image.numpy(), "mask": hole.numpy()}
    seconds = _time(lambda: session.run(None, feeds), steps, warmup, torch.device("cpu"))
    used = session.get_providers()[0].replace("ExecutionProvider", "")
    rate = steps * len(image) / seconds
    return Throughput(f"infer {name}", f"onnxruntime {used}", rate, _peak_mib(torch.device("cpu")))


def format_line(t: Throughput) -> str:
    """One aligned line of the benchmark's output."""
    return (
        f"{t.what:<22} {t.runtime:<22} {t.images_per_second:8.1f} images/s   "
        f"peak {t.peak_mib:,.0f} MiB"
    )
