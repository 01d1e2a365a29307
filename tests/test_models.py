"""The shipped models: cards that model lookup reads, weights that match them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

MODELS = Path(__file__).parents[1] / "models"
SHIPPED = {"unet-gan-lfw128": "unet-gan", "baseline-gan-lfw128": "baseline-gan"}


@pytest.mark.parametrize(("folder", "inpainter"), sorted(SHIPPED.items()))
def test_card_names_its_inpainter_and_its_weights_match(folder, inpainter):
    card = yaml.safe_load((MODELS / folder / "card.yaml").read_text())
    weights = MODELS / folder / card["weights"]
    assert card["inpainter"] == inpainter
    assert weights.stat().st_size <= 30 * 2**20
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["weights_sha256"]
    for key in ("data", "training", "validation", "test"):
        assert card.get(key), f"{folder}/card.yaml has no {key}"
    assert set(card["test"]["by_recognizer"]) == {"mobilefacenet", "dlib-resnet"}
    assert (MODELS / folder / "README.md").is_file() and (MODELS / folder / "config.yaml").is_file()
    config = yaml.safe_load((MODELS / folder / "config.yaml").read_text())
    assert card["training"]["steps"] == config["optim"]["steps"] and card["training"]["hardware"]
    # A second stage says what it started from, and how that was trained.
    if config["model"].get("init"):
        init = card["training"]["init"]
        assert init["steps"] > 0 and len(init["sha256"]) == 64 and init["command"]
    assert bool(card["training"]["identity_loss"]) == bool(config["loss"].get("identity"))


def test_shipped_unet_gan_loads_by_name_without_pickles_and_fills_the_hole():
    from m2f_bench.inpainters import build_inpainter
    from m2f_bench.inpainters.cards import find_model

    assert find_model("unet-gan").name == "unet-gan-lfw128"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    holes = np.zeros((2, 128, 128), bool)
    holes[:, 70:120, 30:98] = True
    out = build_inpainter({"type": "unet-gan"})(images, holes)
    assert np.array_equal(out[~holes], images[~holes])
    assert np.abs(out[holes].astype(int) - images[holes]).mean() > 5


def test_learned_model_runs_at_its_training_size_inside_a_larger_crop():
    """``size: 128`` on 256-px crops: the crop and its (grown) hole are scaled to 128, the
    network runs there, and its output is scaled back and composited into the exact hole."""
    from m2f_bench.inpainters import build_inpainter
    from m2f_bench.inpainters.base import resize_batch, resize_image

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    holes = np.zeros((3, 256, 256), bool)
    holes[:, 141:239, 61:195] = True
    out = build_inpainter({"type": "unet-gan", "size": 128})(images, holes)
    assert out.shape == images.shape
    assert np.array_equal(out[~holes], images[~holes])
    small, small_holes = resize_batch(images, holes, (128, 128))
    assert small_holes.sum() >= holes.sum() / 4  # grown, never shrunk
    direct = build_inpainter({"type": "unet-gan"}).inpaint(small, small_holes)
    expected = np.stack([resize_image(image, (256, 256)) for image in direct])
    assert np.array_equal(out[holes], expected[holes])
    with pytest.raises(Exception, match="size must be"):
        build_inpainter({"type": "baseline-gan", "size": [128]})
