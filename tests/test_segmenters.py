"""Mask segmenters: hole post-processing, weight files, the shipped mask-unet, and the
blind unet-gan that finds the mask itself."""

from __future__ import annotations

import numpy as np
import pytest

from m2f_bench.errors import M2FError
from m2f_bench.masks import MASK_TYPES, apply_mask
from m2f_bench.segmenters import (
    SEGMENTERS,
    build_segmenter,
    hole_iou,
    holes_from_probabilities,
    mask_found,
)


def test_holes_are_thresholded_small_ones_dropped_and_dilated():
    probs = np.zeros((3, 20, 20), np.float32)
    probs[0, 5:15, 5:15] = 0.9  # 25 % of the crop: a mask
    probs[1, 0:2, 0:2] = 0.9  # 1 %: noise, no mask
    probs[2, 5:15, 5:15] = 0.4  # below the threshold
    holes = holes_from_probabilities(probs, threshold=0.5, dilate=0, min_coverage=0.03)
    assert holes[0].sum() == 100 and not holes[1].any() and not holes[2].any()
    assert mask_found(holes).tolist() == [True, False, False]
    grown = holes_from_probabilities(probs, threshold=0.5, dilate=1, min_coverage=0.03)
    assert grown[0].sum() == 12 * 12 and grown[0][4, 4] and not grown[0][3, 3]


def test_hole_iou():
    a = np.zeros((3, 4, 4), bool)
    b = np.zeros((3, 4, 4), bool)
    a[0, :2], b[0, :1] = True, True  # 4 of 8 pixels
    a[1, :2] = True  # nothing predicted
    # Both empty: a crop without a mask correctly left alone.
    assert hole_iou(a, b).tolist() == [0.5, 0.0, 1.0]


def test_weight_files_round_trip_and_are_checked(tmp_path):
    import torch

    from m2f_bench.inpainters._nets import EncoderDecoderGenerator, save_generator
    from m2f_bench.segmenters._net import (
        MaskSegmenterNet,
        load_segmenter_network,
        save_segmenter,
    )

    torch.manual_seed(0)
    net = MaskSegmenterNet(widths=(8, 16), bottleneck_blocks=1).eval()
    path = tmp_path / "seg.safetensors"
    save_segmenter(path, net, "mask-unet")
    loaded = load_segmenter_network(path, "mask-unet")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(net(x), loaded(x))
    with pytest.raises(M2FError, match="holds 'mask-unet' weights"):
        load_segmenter_network(path, "other")
    generator = tmp_path / "gen.safetensors"
    save_generator(generator, EncoderDecoderGenerator(True, widths=(8, 16)), "unet-gan")
    with pytest.raises(M2FError, match="not an m2f-bench segmenter weight file"):
        load_segmenter_network(generator, "mask-unet")
    with pytest.raises(M2FError, match="not found"):
        load_segmenter_network(tmp_path / "missing.safetensors", "mask-unet")


def test_segmenter_arguments_are_checked():
    assert "mask-unet" in SEGMENTERS
    with pytest.raises(M2FError, match="no argument 'treshold'"):
        build_segmenter({"type": "mask-unet", "treshold": 0.5})
    with pytest.raises(M2FError, match="threshold must be between 0 and 1"):
        build_segmenter({"type": "mask-unet", "threshold": 1.5})


@pytest.fixture(scope="module")
def astronaut_face(astronaut, hog_aligner):
    face = hog_aligner.align(astronaut)
    return face.crop, face.landmarks


def test_shipped_segmenter_finds_every_mask_type_and_no_mask_on_a_bare_face(astronaut_face):
    crop, landmarks = astronaut_face
    segmenter = build_segmenter("mask-unet")
    masked = [
        apply_mask(crop, landmarks, t, image_id="astronaut", seed=s)
        for t in MASK_TYPES
        for s in (0, 1)
    ]
    images = np.stack([m.image for m in masked])
    holes = segmenter.holes(images)
    iou = hole_iou(holes, np.stack([m.hole for m in masked]))
    assert iou.min() > 0.75, dict(zip([m.mask_type for m in masked], iou.round(3), strict=True))
    assert iou.mean() > 0.85
    assert not mask_found(segmenter.holes(crop[None])).any()
    # Batch-independent: one crop alone gives the same probabilities as in a batch.
    assert np.allclose(segmenter(images[:1]), segmenter(images)[:1], atol=1e-5)


def test_blind_unet_gan_finds_the_hole_itself_and_fills_only_it(astronaut_face):
    from m2f_bench.inpainters import build_inpainter

    crop, landmarks = astronaut_face
    masked = apply_mask(crop, landmarks, "surgical_blue", image_id="astronaut", seed=0)
    blind = build_inpainter({"type": "unet-gan-blind"})
    restored, holes = blind.unmask(masked.image[None])
    assert hole_iou(holes, masked.hole[None])[0] > 0.8
    assert np.array_equal(restored[0][~holes[0]], masked.image[~holes[0]])
    # The mask's pixels are replaced: much closer to the clean face than the mask was.
    inside = masked.hole & holes[0]
    before = np.abs(masked.image[inside].astype(int) - crop[inside]).mean()
    after = np.abs(restored[0][inside].astype(int) - crop[inside]).mean()
    assert after < 0.6 * before  # 31 vs 60 grey levels with the shipped models
    # A bare face is left exactly as it is.
    same, none = blind.unmask(crop[None])
    assert not none.any() and np.array_equal(same[0], crop)


def test_blind_model_folder_must_name_both_networks(tmp_path):
    from m2f_bench.errors import ModelNotFoundError
    from m2f_bench.inpainters import build_inpainter

    (tmp_path / "card.yaml").write_text(
        "inpainter: unet-gan-blind\ngenerator_weights: g.safetensors\n"
    )
    with pytest.raises(ModelNotFoundError, match="generator file not found"):
        build_inpainter({"type": "unet-gan-blind", "weights": str(tmp_path)})
    with pytest.raises(ModelNotFoundError, match="not a model folder"):
        build_inpainter({"type": "unet-gan-blind", "weights": str(tmp_path / "nowhere")})


def test_package_blind_assembles_a_folder_the_inpainter_loads(tmp_path):
    import hashlib
    from pathlib import Path

    import yaml

    from m2f_bench.inpainters import build_inpainter
    from m2f_bench.training.package import package_blind

    models = Path(__file__).parents[1] / "models"
    card_path = package_blind(
        models / "unet-gan-lfw128", models / "mask-unet-lfw128", tmp_path / "b"
    )
    card = yaml.safe_load(card_path.read_text())
    assert card["inpainter"] == "unet-gan-blind"
    for key in ("generator", "segmenter"):
        data = (tmp_path / "b" / card[f"{key}_weights"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == card[f"{key}_sha256"]
    assert card["components"]["segmenter"]["validation"]["iou"] > 0.9
    blind = build_inpainter({"type": "unet-gan-blind", "weights": str(tmp_path / "b")})
    assert blind.fingerprint()["segmenter"]["weights_sha256"] == card["segmenter_sha256"]
    with pytest.raises(M2FError, match="needs a unet-gan model folder"):
        package_blind(models / "mask-unet-lfw128", models / "unet-gan-lfw128", tmp_path / "c")


def test_blind_readme_counts_the_generator_stages_from_its_init_chain():
    from m2f_bench.training.package import _blind_readme

    def card(training):
        return {
            "name": "b",
            "assembled": "x",
            "components": {
                "generator": {"from": "g", "training": training},
                "segmenter": {"from": "s"},
            },
        }

    chain = {"steps": 600, "init": {"weights": "w1", "init": {"weights": "w0"}}}
    text = _blind_readme(card(chain))
    assert "training stage 3, 600 steps from `w1` (2 earlier stages)" in text
    text = _blind_readme(card({"steps": 600, "init": {"weights": "w0"}}))
    assert "training stage 2, 600 steps from `w0` (1 earlier stage)" in text
    assert "(from `g`: 600 steps)" in _blind_readme(card({"steps": 600}))
