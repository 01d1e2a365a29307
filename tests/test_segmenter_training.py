"""Training the mask segmenter: samples, resume, packaging, and the blind ONNX export."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import N_VAL, one_thread, prepared  # noqa: F401  (fixtures)

from m2f_bench.errors import M2FError
from m2f_bench.training.checkpoint import latest_checkpoint
from m2f_bench.training.config import SegmenterConfig, TrainConfigError, load_config, parse_config
from m2f_bench.training.data import PreparedSplit
from m2f_bench.training.segmentation import make_segment_sample, train_segmenter


def seg_config(root: Path, **sections) -> dict:
    config = {
        "version": 1,
        "name": "tiny-seg",
        "seed": 1,
        "model": {"name": "mask-unet", "widths": [8, 16], "bottleneck_blocks": 1},
        "data": {"root": str(root), "workers": 0, "val_limit": N_VAL},
        "negatives": 0.3,
        "optim": {"steps": 6, "batch_size": 4, "lr": 1e-3, "warmup_steps": 1},
        "checkpoint": {"every": 3, "keep": 2},
        "log": {"every": 2},
    }
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def test_shipped_segmenter_config_validates(monkeypatch, tmp_path):
    monkeypatch.setenv("M2F_TRAIN_DATA", str(tmp_path))
    config = load_config(Path(__file__).parents[1] / "protocols" / "train-mask-unet.yaml")
    assert isinstance(config, SegmenterConfig) and config.data.root == tmp_path
    with pytest.raises(TrainConfigError, match=r"augment\.blurr"):
        parse_config(seg_config(tmp_path, augment={"blurr": 0.1}))


def test_samples_are_pure_degraded_and_sometimes_unmasked(prepared):  # noqa: F811
    config = parse_config(seg_config(prepared, negatives=0.5))
    split = PreparedSplit(prepared, "train")
    a = [make_segment_sample(split, i, config, 2, True) for i in range(len(split))]
    b = [make_segment_sample(split, i, config, 2, True) for i in range(len(split))]
    assert all(
        np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True)
    )
    empty = [not hole.any() for _, hole in a]
    assert any(empty) and not all(empty)
    # Forced cases: a negative is the crop itself; a masked sample's hole is where it changed.
    clean, _ = split.load(0)
    image, hole = make_segment_sample(split, 0, config, 2, False, negative=True)
    assert np.array_equal(image, clean) and not hole.any()
    image, hole = make_segment_sample(split, 0, config, 2, False, negative=False)
    changed = np.any(image != clean, axis=2)
    assert hole.any() and not (changed & ~hole).any()


def test_segmenter_resume_after_ctrl_c_equals_an_uninterrupted_run(prepared, tmp_path):  # noqa: F811
    config = parse_config(seg_config(prepared))
    full = train_segmenter(config, tmp_path / "full", device="cpu", progress=False)
    assert full.step == 6 and 0 <= full.validation["iou"] <= 1

    def interrupt_at_2(step, losses):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "resumed"
    first = train_segmenter(config, out, device="cpu", progress=False, on_step=interrupt_at_2)
    assert first.stopped == "interrupted" and first.step == 2
    with pytest.raises(M2FError, match="--resume"):
        train_segmenter(config, out, device="cpu", progress=False)
    second = train_segmenter(config, out, resume=True, device="cpu", progress=False)
    assert second.step == 6
    from safetensors.torch import load_file

    for name in ("segmenter.safetensors", "optimizer.safetensors"):
        a = load_file(str(latest_checkpoint(tmp_path / "full") / name))
        b = load_file(str(latest_checkpoint(out) / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (out / "validation.jsonl").read_text() == (
        tmp_path / "full" / "validation.jsonl"
    ).read_text()
    with pytest.raises(M2FError, match=r"negatives"):
        train_segmenter(
            parse_config(seg_config(prepared, negatives=0.1)),
            out,
            resume=True,
            device="cpu",
            progress=False,
        )


def test_segmentation_loss_falls(prepared, tmp_path):  # noqa: F811
    losses = []

    def record(step, values):
        if "total" in values:
            losses.append(values["total"])

    config = parse_config(seg_config(prepared, negatives=0.0, optim={"steps": 40, "lr": 3e-3}))
    train_segmenter(config, tmp_path / "run", device="cpu", progress=False, on_step=record)
    assert len(losses) >= 30
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])


def test_a_packaged_segmenter_run_is_found_by_its_card(prepared, tmp_path):  # noqa: F811
    import yaml

    from m2f_bench.segmenters import build_segmenter
    from m2f_bench.training.package import package_model

    config = parse_config(seg_config(prepared, optim={"steps": 2}))
    train_segmenter(config, tmp_path / "run", device="cpu", progress=False)
    card_path = package_model(tmp_path / "run", tmp_path / "model", command="m2f-bench train x")
    card = yaml.safe_load(card_path.read_text())
    assert card["segmenter"] == "mask-unet" and card["training"]["steps"] == 2
    assert card["validation"]["step"] == 2 and "iou" in card["validation"]
    seg = build_segmenter({"type": "mask-unet", "weights": str(tmp_path / "model"), "size": None})
    crop, _ = PreparedSplit(prepared, "train").load(0)
    probs = seg(crop[None])
    assert probs.shape == (1, *crop.shape[:2]) and 0 <= probs.min() <= probs.max() <= 1


def test_blind_onnx_export_matches_pytorch(tmp_path):
    import onnxruntime as ort

    from m2f_bench.training.export import export_onnx

    error = export_onnx("unet-gan-blind", tmp_path / "blind.onnx")
    assert error <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "blind.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["output", "hole", "hole_probability"]
