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
    assert card["training"]["steps"] == 2000 and card["training"]["hardware"]
    assert (MODELS / folder / "README.md").is_file() and (MODELS / folder / "config.yaml").is_file()


def test_shipped_unet_gan_loads_by_name_without_pickles_and_fills_the_hole():
    from m2f_bench.inpainters import build_inpainter
    from m2f_bench.inpainters._nets import find_model

    assert find_model("unet-gan").name == "unet-gan-lfw128"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    holes = np.zeros((2, 128, 128), bool)
    holes[:, 70:120, 30:98] = True
    out = build_inpainter({"type": "unet-gan"})(images, holes)
    assert np.array_equal(out[~holes], images[~holes])
    assert np.abs(out[holes].astype(int) - images[holes]).mean() > 5
