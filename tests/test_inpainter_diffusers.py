"""``type: diffusers``, tested offline on a tiny randomly initialised pipeline.

The pipeline is built here (a UNet, VAE and CLIP text encoder of a few thousand
weights, a tokenizer from a vocabulary written by the test) and saved with
``save_pretrained``: the tests check the plumbing — sizes, compositing, seeding, loading,
errors — not the quality of any fill, which random weights cannot have.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from test_inpainter_keras import masked_batch as keras_masked_batch

from m2f_bench.errors import M2FError, ModelNotFoundError
from m2f_bench.inpainters import INPAINTERS, build_inpainter
from m2f_bench.settings import Settings

NEEDS_EXTRA = "needs the diffusers extra: pip install -c constraints.txt -e '.[diffusers]'"
NOT_CACHED = "m2f-bench-tests/no-such-pipeline"
FAST = {"steps": 2, "guidance": 2.0, "size": 32, "prompt": "a face", "negative_prompt": "mask"}


def masked_batch(n: int = 3, size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The Keras tests' masked crops, 48 px by default."""
    return keras_masked_batch(n, size, seed)


def _tokenizer_files(folder: Path) -> int:
    """A CLIP BPE vocabulary of the printable ASCII characters; returns its size."""
    chars = [chr(c) for c in range(33, 127)]
    vocab = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    vocab += ["th", "the</w>"]
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\n")
    return len(vocab)


def _save_tiny_pipeline(folder: Path, *, safety_checker: bool = False) -> Path:
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab_size = _tokenizer_files(folder.parent / f"{folder.name}-vocab")
    tokenizer = CLIPTokenizer.from_pretrained(folder.parent / f"{folder.name}-vocab")
    tokenizer.model_max_length = 16
    torch.manual_seed(0)
    blocks = {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4}
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=9,  # noisy latents, mask, masked-image latents: an inpainting UNet
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        **blocks,
    )
    vae = AutoencoderKL(
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        **blocks,
    )
    text_config = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2}
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            num_hidden_layers=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            **text_config,
        )
    )
    checker = extractor = None
    if safety_checker:
        from diffusers.pipelines.stable_diffusion.safety_checker import (
            StableDiffusionSafetyChecker,
        )
        from transformers import CLIPConfig, CLIPImageProcessor

        vision = {"image_size": 32, "patch_size": 8, "num_hidden_layers": 1, **text_config}
        checker = StableDiffusionSafetyChecker(
            CLIPConfig(
                text_config={"vocab_size": vocab_size, "num_hidden_layers": 1, **text_config},
                vision_config=vision,
                projection_dim=16,
            )
        )
        extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)
    pipeline = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False, steps_offset=1),
        safety_checker=checker,
        feature_extractor=extractor,
        requires_safety_checker=safety_checker,
    )
    pipeline.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory) -> str:
    """Folder of a tiny random StableDiffusionInpaintPipeline (skips without the extra)."""
    pytest.importorskip("diffusers", reason=NEEDS_EXTRA)
    pytest.importorskip("transformers", reason=NEEDS_EXTRA)
    return str(_save_tiny_pipeline(tmp_path_factory.mktemp("diffusers") / "tiny-sd-inpaint"))


def _build(model: str, **args) -> object:
    return build_inpainter({"type": "diffusers", "model": model, **FAST, **args})


# --- plumbing on a tiny random pipeline ------------------------------------------------


def test_tiny_random_pipeline_plumbing_sizes_and_compositing(tiny_pipeline):
    images, holes = masked_batch()  # 48-px crops through a 32-px working size and back
    before = images.copy()
    inpainter = _build(tiny_pipeline, name="sd-tiny", batch_size=2)
    out = inpainter(images, holes)
    assert inpainter.name == "sd-tiny"
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert np.array_equal(images, before)
    assert np.array_equal(out[~holes], images[~holes])
    assert not np.array_equal(out[holes], images[holes])  # the pipeline's fill was used
    raw = inpainter.inpaint(images, holes)  # what the pipeline returned, resized back
    assert raw.shape == images.shape and np.array_equal(out[holes], raw[holes])


def test_tiny_random_pipeline_plumbing_at_the_crop_size(tiny_pipeline):
    images, holes = masked_batch(n=2, size=32)
    out = _build(tiny_pipeline, size=None, prompt="the face", negative_prompt="")(images, holes)
    assert out.shape == images.shape
    assert np.array_equal(out[~holes], images[~holes])
    with pytest.raises(M2FError, match="multiple of 8"):
        _build(tiny_pipeline, size=None)(*masked_batch(n=1, size=36))


def test_tiny_random_pipeline_plumbing_same_seed_same_fill_other_seed_differs(tiny_pipeline):
    images, holes = masked_batch()
    inpainter = _build(tiny_pipeline, seed=7)
    first = inpainter(images, holes)
    assert np.array_equal(inpainter(images, holes), first)
    assert np.array_equal(_build(tiny_pipeline, seed=7)(images, holes), first)
    other = _build(tiny_pipeline, seed=8)(images, holes)
    assert all(not np.array_equal(a[h], b[h]) for a, b, h in zip(first, other, holes, strict=True))


def test_tiny_random_pipeline_plumbing_fill_does_not_depend_on_batching(tiny_pipeline):
    images, holes = masked_batch(n=4)
    together = _build(tiny_pipeline, batch_size=4)(images, holes)
    alone = _build(tiny_pipeline, batch_size=1)
    # Seeds come from each crop's content: batch size, order and company do not matter,
    # up to the last bit of batched float arithmetic.
    for out in (alone(images, holes), alone(images[::-1], holes[::-1])[::-1]):
        difference = np.abs(out.astype(int) - together.astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    single = alone(images[2:3], holes[2:3])
    assert np.abs(single.astype(int) - together[2:3].astype(int)).max() <= 1


def test_tiny_random_pipeline_plumbing_safety_checker_is_not_loaded(tmp_path, caplog):
    pytest.importorskip("diffusers", reason=NEEDS_EXTRA)
    folder = _save_tiny_pipeline(tmp_path / "with-checker", safety_checker=True)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["safety_checker"][1] == "StableDiffusionSafetyChecker"
    with caplog.at_level(logging.INFO, logger="m2f_bench.inpainters.diffusion"):
        inpainter = _build(str(folder), pipeline="StableDiffusionInpaintPipeline")
    assert inpainter.pipeline.safety_checker is None
    assert "safety checker" in caplog.text
    images, holes = masked_batch(n=1)
    assert np.array_equal(inpainter(images, holes)[0][~holes[0]], images[0][~holes[0]])


# --- errors ------------------------------------------------------------------------------


def test_missing_local_folder_is_a_one_line_error(tmp_path):
    missing = str(tmp_path / "no-such-model")
    cls = INPAINTERS.get("diffusers")
    settings = Settings(tmp_path / "data", tmp_path / "models")
    for call in (lambda: _build(missing), lambda: cls.check_files({"model": missing}, settings)):
        with pytest.raises(ModelNotFoundError, match="model folder not found") as caught:
            call()
        assert "\n" not in str(caught.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"no model_index\.json.*save_pretrained"):
        cls.check_files({"model": str(tmp_path / "empty")}, settings)
    # A hub id cannot be checked without the network: accepted while online.
    cls.check_files({"model": "stable-diffusion-v1-5/stable-diffusion-inpainting"}, settings)


def test_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    (tmp_path / "model_index.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers raises
    with pytest.raises(M2FError, match=re.escape("pip install 'm2f-bench[diffusers]'")):
        _build(str(tmp_path))


def _assert_says_where_to_put_a_copy(message: str, why: str) -> None:
    assert "\n" not in message
    assert f"'{NOT_CACHED}' is neither a folder (no " in message
    assert "nor in the Hugging Face cache" in message
    assert f"cannot be downloaded ({why})" in message
    assert f"hf download {NOT_CACHED} --local-dir DIR" in message and "model: DIR" in message


@pytest.mark.parametrize("variable", ["M2F_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_hub_id_not_cached_says_where_to_put_a_copy(tmp_path, monkeypatch, variable):
    pytest.importorskip("diffusers", reason=NEEDS_EXTRA)
    monkeypatch.delenv("M2F_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cls = INPAINTERS.get("diffusers")
    offline = Settings(tmp_path / "data", tmp_path / "models", offline=True)
    with pytest.raises(ModelNotFoundError) as caught:  # validate and --offline
        cls.check_files({"model": NOT_CACHED}, offline)
    _assert_says_where_to_put_a_copy(str(caught.value), "offline")
    monkeypatch.setenv(variable, "1")
    with pytest.raises(ModelNotFoundError) as caught:
        _build(NOT_CACHED)
    _assert_says_where_to_put_a_copy(str(caught.value), f"{variable} is set")


def test_hub_id_without_network_says_where_to_put_a_copy(monkeypatch):
    diffusers = pytest.importorskip("diffusers", reason=NEEDS_EXTRA)
    monkeypatch.delenv("M2F_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def unreachable(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'\nto load the files")

    # What diffusers raises when the hub cannot be reached, without trying to reach it.
    monkeypatch.setattr(diffusers.DiffusionPipeline, "load_config", unreachable)
    with pytest.raises(ModelNotFoundError) as caught:
        _build(NOT_CACHED)
    why = "We couldn't connect to 'https://huggingface.co' to load the files"
    _assert_says_where_to_put_a_copy(str(caught.value), why)


def test_spec_errors_are_one_line(tiny_pipeline):
    for args, match in (
        ({"pipeline": "StableDiffusionInpaintPipelin"}, "did you mean StableDiffusionInpaint"),
        ({"size": 30}, "multiples of 8"),
        ({"dtype": "float16"}, "float16 needs device cuda"),
        ({"strength": 0}, "strength must be in"),
        ({"steps": 0}, "steps must be a positive integer"),
        ({"device": "tpu"}, "device must be cpu or cuda"),
        ({"pipeline": "StableDiffusionPipeline"}, "not an inpainting pipeline"),
    ):
        with pytest.raises(M2FError, match=match):
            _build(tiny_pipeline, **args)


def test_offline_flag_reaches_plugins_built_from_a_spec(monkeypatch, tmp_path):
    """`--offline` is a setting; plug-ins built from a spec (the diffusers pipeline and the
    Hugging Face hub behind it) learn it from the environment `evaluate` sets while it
    runs, and which it restores afterwards."""
    import os

    from m2f_bench.cli.main import _offline_environment, _settings

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("M2F_OFFLINE", "0")
    with _offline_environment(_settings(tmp_path / "d", tmp_path / "m", False)):
        assert "HF_HUB_OFFLINE" not in os.environ
    with _offline_environment(_settings(tmp_path / "d", tmp_path / "m", True)):
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["M2F_OFFLINE"] == "1"
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["M2F_OFFLINE"] == "0"
