"""``diffusers``: 🤗 diffusers inpainting pipelines (Stable Diffusion inpainting and kin).

torch, diffusers and transformers are imported when an inpainter is built, never when
the package is imported; diffusers and transformers come with the ``diffusers`` extra.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import logging
import os
import re
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from m2f_bench.errors import M2FError, ModelNotFoundError
from m2f_bench.inpainters.base import Inpainter, parse_size, resize_batch, resize_image
from m2f_bench.settings import OFFLINE_ENV, Settings

log = logging.getLogger(__name__)

_EXTRA = "pip install 'm2f-bench[diffusers]'"
#: A Hugging Face hub id, ``owner/name``; anything else that is not a folder is a bad path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DTYPES = ("float32", "float16", "bfloat16")
_TRUE = {"1", "true", "yes", "on"}
DEFAULT_PROMPT = (
    "a photo of a person's face without a face mask, natural skin, nose, mouth and chin"
)
DEFAULT_NEGATIVE_PROMPT = "face mask, cloth, covering, blurry, deformed, cartoon"


class DiffusersInpainter(Inpainter):
    """A 🤗 diffusers inpainting pipeline, e.g. Stable Diffusion inpainting (extra: diffusers).

    Each crop is resized to the pipeline's working size, inpainted there under the prompt,
    and resized back; the caller composites the result into the hole. Hole pixels are
    grown while resizing (a working pixel that touches the hole is a hole pixel), so the
    pipeline is never told that a mask pixel is known.

    Determinism: every crop gets its own CPU ``torch.Generator`` seeded from ``seed`` and
    the SHA-256 of the crop and its hole, not from its position in the call. A crop is
    therefore filled the same way whatever batch it falls in, whatever ``batch_size``,
    order, ``--limit`` or resumed run brought it there; the same crop with the same hole
    is filled identically, a different hole draws different noise. CPU generators give
    the same starting noise on CPU and CUDA (the arithmetic after it still differs).
    Batched float arithmetic may change the last bit of a value between batch sizes,
    rarely moving an output pixel by one level.

    The safety checker of pipelines that ship one (Stable Diffusion 1.x) is not loaded:
    on a false positive it replaces the output with a black image, which would then be
    scored as that method's inpainting. Diffusers' progress bars are off.

    ``guidance``, ``strength`` and ``negative_prompt`` left at their defaults are not
    passed to a pipeline that has no such parameter; set to anything else, they make
    building it an error.

    Args:
        model: A hub id (``stable-diffusion-v1-5/stable-diffusion-inpainting``, which
            holds what ``runwayml/stable-diffusion-inpainting`` held until 2024;
            ``stabilityai/stable-diffusion-2-inpainting``), downloaded by diffusers into the
            Hugging Face cache where there is network, or a folder written by the
            pipeline's ``save_pretrained`` (or ``hf download ID --local-dir DIR``). With
            ``M2F_OFFLINE`` or ``HF_HUB_OFFLINE`` set, a hub id must already be cached.
        pipeline: The diffusers class that loads it: ``AutoPipelineForInpainting`` picks
            the inpainting pipeline from the model's ``model_index.json``; or name one,
            e.g. ``StableDiffusionInpaintPipeline``.
        prompt: Text the fill is conditioned on, the same for every crop.
        negative_prompt: Text guided away from ("" for none).
        steps: Denoising steps.
        guidance: Classifier-free guidance scale (1 turns guidance off).
        strength: How far the hole's content is noised, 1 for all the way (inpainting
            checkpoints ignore what is under the hole either way).
        seed: Combined with each crop's content hash into that crop's noise seed.
        size: The working size the crops are resized to and back from, ``[height,
            width]`` or one side, a multiple of 8 (512 for Stable Diffusion 1.x/2.x
            inpainting, 1024 for SDXL); ``null`` runs at the crop's own size.
        batch_size: Crops per pipeline call.
        device: ``cpu`` or ``cuda``.
        dtype: ``float32``, ``float16`` or ``bfloat16`` (default: float16 on CUDA,
            float32 on the CPU).
        variant: Weight files to load, e.g. ``fp16`` for a repository's half-precision
            copies (half the download).
    """

    name = "diffusers"

    @classmethod
    def check_files(cls, args: dict[str, Any], settings: Any) -> None:
        model = args.get("model")
        if not isinstance(model, str) or not model:
            return  # the argument check reports it
        where = f"inpainter {cls.name!r}"
        path = Path(model).expanduser()
        if path.exists() or not _HUB_ID.match(model):
            _check_folder(path, where)
        elif (why := _offline_reason(settings)) and not _cached(model):
            raise ModelNotFoundError(_not_cached_message(model, where, why))

    def __init__(
        self,
        model: str,
        pipeline: str = "AutoPipelineForInpainting",
        prompt: str = DEFAULT_PROMPT,
        negative_prompt: str = DEFAULT_NEGATIVE_PROMPT,
        steps: int = 25,
        guidance: float = 7.5,
        strength: float = 1.0,
        seed: int = 0,
        size: int | Sequence[int] | None = 512,
        batch_size: int = 4,
        device: str = "cpu",
        dtype: str | None = None,
        variant: str | None = None,
    ) -> None:
        where = f"inpainter {self.name!r}"
        if not isinstance(model, str) or not model:
            raise M2FError(f"{where}: model must be a hub id or a folder, got {model!r}")
        path = Path(model).expanduser()
        local = path.exists() or not _HUB_ID.match(model)
        if local:
            _check_folder(path, where)
        if not isinstance(steps, int) or steps < 1:
            raise M2FError(f"{where}: steps must be a positive integer, got {steps!r}")
        if not 0.0 < strength <= 1.0:
            raise M2FError(f"{where}: strength must be in (0, 1], got {strength!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise M2FError(f"{where}: batch_size must be at least 1, got {batch_size!r}")
        if not isinstance(seed, int):
            raise M2FError(f"{where}: seed must be an integer, got {seed!r}")
        if device not in ("cpu", "cuda"):
            raise M2FError(f"{where}: device must be cpu or cuda, got {device!r}")
        dtype = dtype or ("float16" if device == "cuda" else "float32")
        if dtype not in _DTYPES:
            raise M2FError(f"{where}: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        if dtype == "float16" and device == "cpu":
            raise M2FError(f"{where}: float16 needs device cuda; use float32 or bfloat16 on cpu")
        self.size = _working_size(size, where)

        try:
            import diffusers
            import torch
            import transformers  # noqa: F401  (the pipelines' text encoders)
        except ImportError as exc:
            raise M2FError(f"{where} needs the diffusers extra: {_EXTRA} ({exc})") from exc
        if device == "cuda" and not torch.cuda.is_available():
            raise M2FError(f"{where}: CUDA is not available")

        with _quiet_transformers():  # its torchvision fallback notes, on first import
            pipeline_class = getattr(diffusers, pipeline, None)
        if not callable(getattr(pipeline_class, "from_pretrained", None)):
            known = [n for n in dir(diffusers) if "Inpaint" in n]
            close = difflib.get_close_matches(pipeline, known, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise M2FError(f"{where}: diffusers has no pipeline class {pipeline!r}{hint}")

        why_offline = _offline_reason(None)
        offline = why_offline is not None
        if not local and offline and not _cached(model):
            raise ModelNotFoundError(_not_cached_message(model, where, why_offline))
        # diffusers 0.40 renamed torch_dtype to dtype (the old name warns until 1.0).
        dtype_key = "dtype" if _version(diffusers.__version__) >= (0, 40) else "torch_dtype"
        options: dict[str, Any] = {dtype_key: getattr(torch, dtype), "local_files_only": offline}
        if variant:
            options["variant"] = variant
        try:
            with _no_progress_bars():
                index = diffusers.DiffusionPipeline.load_config(model, local_files_only=offline)
                if any(index.get("safety_checker") or ()):
                    options.update(safety_checker=None, requires_safety_checker=False)
                    log.info("%s: safety checker of %s not loaded (face crops)", where, model)
                self.pipeline = pipeline_class.from_pretrained(model, **options)
        except Exception as exc:  # hub, config and weight errors share no base class
            if not local and not _cached(model):
                why = _one_line(exc)[:300]
                raise ModelNotFoundError(_not_cached_message(model, where, why)) from exc
            raise M2FError(f"{where}: cannot load {model}: {_one_line(exc)}") from exc
        self.pipeline.to(device)
        self.pipeline.set_progress_bar_config(disable=True)

        self.model, self.device, self.dtype = model, device, dtype
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.seed, self.batch_size = seed, batch_size
        self._call_options = self._call_options_for(steps, guidance, strength, where)

    def _call_options_for(
        self, steps: int, guidance: float, strength: float, where: str
    ) -> dict[str, Any]:
        """The keyword arguments every pipeline call gets, checked against its signature."""
        parameters = inspect.signature(self.pipeline.__call__).parameters
        kind = type(self.pipeline).__name__
        missing = {"prompt", "image", "mask_image", "generator"} - set(parameters)
        if missing:
            raise M2FError(
                f"{where}: {kind} is not an inpainting pipeline "
                f"(its call takes no {', '.join(sorted(missing))})"
            )
        options: dict[str, Any] = {"num_inference_steps": steps, "output_type": "np"}
        # A pipeline without a parameter for a setting runs only if the setting was left
        # at this class's default: what the protocol says is what runs.
        defaults = inspect.signature(type(self).__init__).parameters
        for parameter, argument, value in (
            ("guidance_scale", "guidance", guidance),
            ("strength", "strength", strength),
            ("negative_prompt", "negative_prompt", self.negative_prompt),
        ):
            if parameter in parameters:
                if value != "":
                    options[parameter] = value
            elif value != defaults[argument].default:
                raise M2FError(f"{where}: {kind} takes no {parameter} (set by {argument})")
        self._takes_size = {"height", "width"} <= set(parameters)
        if self.size is not None and not self._takes_size:
            raise M2FError(f"{where}: {kind} takes no height and width; set size: null")
        return options

    def inpaint(self, images: np.ndarray, holes: np.ndarray) -> np.ndarray:
        import torch
        from PIL import Image

        height, width = images.shape[1:3]
        size = self.size or (height, width)
        if size[0] % 8 or size[1] % 8:
            raise M2FError(
                f"inpainter {self.name!r}: crops of {height}×{width} need a size that is a "
                "multiple of 8"
            )
        # Seeds from the crops as given, before any resizing.
        seeds = [
            _noise_seed(self.seed, image, hole) for image, hole in zip(images, holes, strict=True)
        ]
        images, holes = resize_batch(images, holes, size)
        outputs = []
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            count = len(images[chunk])
            options = dict(self._call_options)
            if self._takes_size:
                options.update(height=size[0], width=size[1])
            if "negative_prompt" in options:
                options["negative_prompt"] = [options["negative_prompt"]] * count
            result = self.pipeline(
                prompt=[self.prompt] * count,
                image=[Image.fromarray(image) for image in images[chunk]],
                mask_image=[Image.fromarray(hole.astype(np.uint8) * 255) for hole in holes[chunk]],
                generator=[torch.Generator("cpu").manual_seed(s) for s in seeds[chunk]],
                **options,
            )
            filled = np.asarray(result.images, dtype=np.float32)
            if filled.shape != (count, *size, 3):
                raise M2FError(
                    f"inpainter {self.name!r}: {type(self.pipeline).__name__} returned "
                    f"{filled.shape}, expected {(count, *size, 3)}"
                )
            outputs.append(np.clip(np.rint(filled * 255.0), 0, 255).astype(np.uint8))
        out = np.concatenate(outputs)
        if out.shape[1:3] != (height, width):
            out = np.stack([resize_image(image, (height, width)) for image in out])
        return out


def _noise_seed(seed: int, image: np.ndarray, hole: np.ndarray) -> int:
    """A 63-bit generator seed from the user's seed and the crop's content."""
    digest = hashlib.sha256(f"{seed}:{image.shape}:".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    digest.update(np.packbits(hole).tobytes())
    return int.from_bytes(digest.digest()[:8], "little") >> 1


def _working_size(size: int | Sequence[int] | None, where: str) -> tuple[int, int] | None:
    return parse_size(size, where, multiple=8)


def _check_folder(path: Path, where: str) -> None:
    if not path.is_dir():
        raise ModelNotFoundError(f"{where}: model folder not found: {path}")
    if not (path / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"{where}: {path} has no model_index.json; save the pipeline there with "
            "save_pretrained (or `hf download ID --local-dir DIR`)"
        )


def _offline_reason(settings: Any) -> str | None:
    """Why no download may be tried, or None when it may."""
    if getattr(settings, "offline", False):
        return "offline"
    if Settings.resolve().offline:
        return f"{OFFLINE_ENV} is set"
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return "HF_HUB_OFFLINE is set"
    return None


def _cached(model: str) -> bool:
    """Whether the hub id's ``model_index.json`` is in the Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # no extra: the constructor says so
        return True
    return isinstance(try_to_load_from_cache(model, "model_index.json"), str)


def _not_cached_message(model: str, where: str, why: str) -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE as cache
    except ImportError:
        cache = "the Hugging Face cache"
    # "owner/name" is also how a relative folder reads: say that no such folder exists.
    folder = Path(model).expanduser().resolve()
    return (
        f"{where}: {model!r} is neither a folder (no {folder}) nor in the Hugging Face "
        f"cache ({cache}), and cannot be downloaded ({why}); on a machine with network run "
        f"`hf download {model} --local-dir DIR`, copy DIR here and set model: DIR"
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


@contextmanager
def _no_progress_bars():
    """Loading bars off in diffusers and transformers, as they were afterwards."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    enabled = [
        lib for lib in (diffusers_logging, transformers_logging) if lib.is_progress_bar_enabled()
    ]
    for lib in enabled:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib in enabled:
            lib.enable_progress_bar()


@contextmanager
def _quiet_transformers():
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
