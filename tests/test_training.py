"""Training of the learned inpainters, on a tiny prepared folder of 64 px crops.

The folder holds one real face (scikit-image's astronaut, aligned by dlib's HOG detector)
under small random similarity warps and tints, so the synthetic masks follow real
landmarks. Networks are a few thousand parameters; every run is a few steps on the CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from m2f_bench._io import atomic_write_json, write_png  # noqa: E402
from m2f_bench.errors import M2FError  # noqa: E402
from m2f_bench.inpainters import build_inpainter  # noqa: E402
from m2f_bench.metrics.pixel import psnr as psnr_metric  # noqa: E402
from m2f_bench.metrics.pixel import ssim as ssim_metric  # noqa: E402
from m2f_bench.prepare.layout import prepared_path  # noqa: E402
from m2f_bench.training import losses  # noqa: E402
from m2f_bench.training.checkpoint import latest_checkpoint  # noqa: E402
from m2f_bench.training.config import TrainConfigError, load_config, parse_config  # noqa: E402
from m2f_bench.training.data import (  # noqa: E402
    EpochBatchSampler,
    PreparedSplit,
    TrainingSamples,
    ValidationSet,
    make_loader,
    make_sample,
)
from m2f_bench.training.loop import TrainingDiverged, train  # noqa: E402

SIZE = 64
N_TRAIN, N_VAL = 12, 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: tiny convolutions gain nothing from two, and on a busy machine
    spinning OpenMP threads make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A prepared folder (manifest, crops, landmarks) with train and val splits."""
    from skimage import data

    from m2f_bench.faces.pipeline import AlignerConfig

    face = AlignerConfig(size=SIZE, scrfd_path=None, use_hog=True).build().align(data.astronaut())
    root = tmp_path_factory.mktemp("prepared")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_TRAIN + N_VAL):
        image_id = f"face_{i:02d}"
        angle, scale = rng.uniform(-6, 6), rng.uniform(0.95, 1.05)
        matrix = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), angle, scale)
        matrix[:, 2] += rng.uniform(-2, 2, size=2)
        crop = cv2.warpAffine(face.crop, matrix, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT)
        tint = rng.uniform(0.85, 1.15, size=3)
        crop = np.clip(crop * tint, 0, 255).astype(np.uint8)
        landmarks = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
        write_png(root / prepared_path("crops", image_id), crop)
        atomic_write_json(
            root / prepared_path("landmarks", image_id),
            {"image_id": image_id, "status": "ok", "landmarks": landmarks.tolist()},
        )
        split = "train" if i < N_TRAIN else "val"
        rows.append({"image_id": image_id, "split": split, "status": "ok"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root


def tiny_config(root: Path, **sections) -> dict:
    """A valid config mapping for 64 px crops and a tiny network; sections override."""
    config = {
        "version": 1,
        "name": "tiny",
        "seed": 3,
        "model": {"name": "unet-gan", "widths": [8, 16, 32], "bottleneck_blocks": 1},
        "discriminator": {"widths": [8, 16], "every": 2},
        "data": {"root": str(root), "workers": 0, "val_limit": N_VAL},
        "optim": {"steps": 8, "batch_size": 4, "lr": 1e-3, "warmup_steps": 2},
        "loss": {"gan_start_step": 2},
        "checkpoint": {"every": 4, "keep": 2},
        "log": {"every": 2, "images": 2},
    }
    for key, value in sections.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    return config


def run(root: Path, out: Path, **kwargs):
    sections = {k: v for k, v in kwargs.items() if k not in ("resume", "on_step")}
    config = parse_config(tiny_config(root, **sections))
    return train(
        config,
        out,
        resume=kwargs.get("resume", False),
        device="cpu",
        progress=False,
        on_step=kwargs.get("on_step"),
    )


@pytest.fixture(scope="module")
def finished_run(prepared, tmp_path_factory) -> Path:
    """An uninterrupted 8-step run, GAN on from step 2."""
    out = tmp_path_factory.mktemp("runs") / "full"
    result = run(prepared, out)
    assert result.stopped == "done" and result.step == 8
    return out


def _tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("generator", "discriminator", "optimizer"):
        for key, value in load_file(str(checkpoint / f"{name}.safetensors")).items():
            out[f"{name}/{key}"] = value
    return out


def test_config_rejects_unknown_keys_and_bad_versions(prepared):
    bad = tiny_config(prepared, loss={"l1_weight": 2.0})
    with pytest.raises(TrainConfigError, match=r"loss\.l1_weight: unknown key"):
        parse_config(bad, "cfg.yaml")
    with pytest.raises(TrainConfigError, match="version"):
        parse_config({k: v for k, v in tiny_config(prepared).items() if k != "version"})
    with pytest.raises(TrainConfigError, match=r"model\.name"):
        parse_config(tiny_config(prepared, model={"name": "unet"}))
    with pytest.raises(TrainConfigError, match=r"optim\.steps"):
        parse_config(tiny_config(prepared, optim={"steps": 0}))


@pytest.mark.parametrize(
    "name",
    [
        "train-unet-gan.yaml",
        "train-baseline-gan.yaml",
        "train-unet-gan-id.yaml",
        "train-baseline-gan-id.yaml",
    ],
)
def test_shipped_configs_validate(name, monkeypatch, tmp_path):
    monkeypatch.setenv("M2F_TRAIN_DATA", str(tmp_path))
    config = load_config(Path(__file__).parents[1] / "protocols" / name)
    assert config.data.root == tmp_path
    assert config.model.name == name.removeprefix("train-").removesuffix(".yaml").removesuffix(
        "-id"
    )
    assert (config.loss.identity > 0) == name.endswith("-id.yaml")


def test_samples_are_a_pure_function_of_seed_epoch_and_image(prepared):
    spec = parse_config(tiny_config(prepared)).data
    split = PreparedSplit(prepared, "train")
    a, b = make_sample(split, 0, spec, 3, 0, True), make_sample(split, 0, spec, 3, 0, True)
    assert np.array_equal(a.masked, b.masked) and np.array_equal(a.hole, b.hole)
    later = [make_sample(split, 0, spec, 3, epoch, True) for epoch in range(1, 4)]
    # A fresh mask every epoch.
    assert all(not np.array_equal(a.hole, s.hole) for s in later)
    # Outside the hole the masked crop is the (jittered, maybe flipped) target.
    assert np.array_equal(a.masked[~a.hole], a.target[~a.hole])
    assert a.hole.mean() > 0.05


def test_a_manifest_crop_path_names_the_crop_file(prepared, tmp_path):
    # A packed copy for a GPU machine holds JPEG crops, which its manifest names.
    rows = pd.read_csv(prepared / "manifest.csv", dtype=str)
    (tmp_path / "crops").mkdir()
    shutil.copytree(prepared / "landmarks", tmp_path / "landmarks")
    paths = []
    for image_id in rows["image_id"]:
        crop = cv2.imread(str(prepared / prepared_path("crops", image_id)))
        jpeg = [cv2.IMWRITE_JPEG_QUALITY, 90]
        cv2.imwrite(str(tmp_path / "crops" / f"{image_id}.jpg"), crop, jpeg)
        paths.append(f"crops/{image_id}.jpg")
    rows.assign(crop_path=paths).to_csv(tmp_path / "manifest.csv", index=False)
    packed, original = PreparedSplit(tmp_path, "train"), PreparedSplit(prepared, "train")
    assert packed.image_ids == original.image_ids
    jpeg, _ = packed.load(1)
    png, _ = original.load(1)
    error = np.mean((jpeg.astype(float) - png) ** 2)
    assert error > 0 and 10 * np.log10(255**2 / error) > 30  # the JPEG, not the PNG
    # An empty crop_path falls back to the prepare layout's PNG name.
    rows.assign(crop_path="").to_csv(tmp_path / "manifest.csv", index=False)
    shutil.copytree(prepared / "crops", tmp_path / "crops", dirs_exist_ok=True)
    assert np.array_equal(PreparedSplit(tmp_path, "train").load(1)[0], png)
    rows.drop(columns="split").to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(M2FError, match="lacks the column"):
        PreparedSplit(tmp_path, "train")


def test_validation_every_n_epochs_and_at_the_end(prepared, finished_run, tmp_path):
    def steps(run_dir: Path) -> list[int]:
        lines = (run_dir / "validation.jsonl").read_text().splitlines()
        return [json.loads(line)["step"] for line in lines]

    # 12 train images, batch 4: 3 steps an epoch.
    assert steps(finished_run) == [3, 6, 8]
    run(prepared, tmp_path / "run", log={"validate_every": 2})
    assert steps(tmp_path / "run") == [6, 8]


def test_ranks_split_every_global_batch(prepared):
    single = list(EpochBatchSampler(N_TRAIN, 4, 7, seed=1))
    ranks = [list(EpochBatchSampler(N_TRAIN, 4, 7, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    assert len(single) == 7
    for whole, first, second in zip(single, *ranks, strict=True):
        assert first + second == whole and not set(first) & set(second)
    # Epochs are reshuffled: step 3 starts epoch 1 with another order than epoch 0.
    assert [i for _, i in single[0] + single[1] + single[2]] != [
        i for _, i in single[3] + single[4] + single[5]
    ]
    # A resumed sampler continues at its step.
    assert list(EpochBatchSampler(N_TRAIN, 4, 7, seed=1, start_step=4)) == single[4:]


def test_worker_processes_draw_the_same_batches(prepared):
    spec = parse_config(tiny_config(prepared)).data
    dataset = TrainingSamples(PreparedSplit(prepared, "train"), spec, seed=3)
    batches = [
        list(make_loader(dataset, EpochBatchSampler(N_TRAIN, 4, 4, seed=3), workers))
        for workers in (0, 1)
    ]
    for a, b in zip(*batches, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in ("masked", "hole", "target"))


def test_ssim_loss_matches_the_benchmark_metric(prepared):
    spec = parse_config(tiny_config(prepared)).data
    val = ValidationSet.build(PreparedSplit(prepared, "val"), spec, seed=3)
    expected = ssim_metric(val.masked, val.targets)

    def to_tensor(x):
        return torch.from_numpy(x).permute(0, 3, 1, 2).double() / 127.5 - 1

    got = losses.ssim(to_tensor(val.masked), to_tensor(val.targets)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert expected.max() < 0.99  # the masks really differ from the targets


def test_loss_falls(prepared, tmp_path):
    seen = []
    run(
        prepared,
        tmp_path / "run",
        optim={"steps": 30, "lr": 3e-3, "warmup_steps": 0},
        loss={"adversarial": 0.0, "feature_matching": 0.0},
        checkpoint={"every": 30},
        on_step=lambda trainer, values: seen.append(values["l1"]),
    )
    first, last = np.mean(seen[:4]), np.mean(seen[-4:])
    assert last < 0.6 * first, (first, last)


def test_squared_error_term_weights_the_hole_and_enters_the_loss_with_its_weight(
    prepared, tmp_path
):
    """loss.mse: hole-weighted squared error (the PSNR term), logged and summed with its
    weight; absent from the loss when its weight is 0."""
    out = torch.zeros(1, 3, 2, 2)
    target = torch.full((1, 3, 2, 2), 0.5)
    hole = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # One hole pixel of weight 6, three valid pixels of weight 1, each error 0.25 squared.
    expected = (6 * 0.25 + 3 * 0.25) * 3 / 12
    assert losses.hole_weighted_mse(out, target, hole, 6.0, 1.0).item() == pytest.approx(expected)
    seen = []
    run(
        prepared,
        tmp_path / "run",
        loss={"mse": 4.0, "l1": 0.5},
        optim={"steps": 3},
        on_step=lambda trainer, values: seen.append(values),
    )
    for v in seen:
        gan = 0.01 * v.get("adversarial", 0.0) + 1.0 * v.get("feature_matching", 0.0)
        expected = 0.5 * v["l1"] + 4.0 * v["mse"] + 0.5 * v["ssim"] + gan
        assert v["g_total"] == pytest.approx(expected, rel=1e-5)
        assert v["mse"] > 0


def test_resume_after_ctrl_c_equals_an_uninterrupted_run(prepared, finished_run, tmp_path):
    def interrupt_at_3(trainer, values):
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "resumed"
    first = run(prepared, out, on_step=interrupt_at_3)
    # Ctrl-C finished step 3, saved it (not a regular checkpoint step) and returned.
    assert first.stopped == "interrupted" and first.step == 3
    assert latest_checkpoint(out).name == "step-0000003"
    with pytest.raises(M2FError, match="--resume"):
        run(prepared, out)
    second = run(prepared, out, resume=True)
    assert second.step == 8 and second.stopped == "done"

    a, b = _tensors(latest_checkpoint(finished_run)), _tensors(latest_checkpoint(out))
    assert a.keys() == b.keys() and any(k.startswith("optimizer/discriminator.") for k in a)
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    assert not unequal
    # Validation after epochs 1 and 2 and at the end: the same numbers, split over two calls.
    assert (out / "validation.jsonl").read_text() == (finished_run / "validation.jsonl").read_text()


def test_the_best_validated_generator_is_kept_and_ships(prepared, finished_run, tmp_path):
    """checkpoint.best: checkpoints/best holds the generator of the validation with the
    highest PSNR; a resumed run keeps the same one; package-model --best ships it."""
    import yaml

    from m2f_bench.training.package import package_model

    def interrupt_at_4(trainer, values):
        if trainer.step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    result = run(prepared, whole, checkpoint={"best": True})
    lines = [json.loads(x) for x in (whole / "validation.jsonl").read_text().splitlines()]
    top = max(lines, key=lambda line: line["psnr"])
    state = json.loads((whole / "checkpoints" / "best" / "state.json").read_text())
    assert state["step"] == top["step"] and state["validation"]["psnr"] == top["psnr"]
    # The same numbers as a run without the option: keeping the best changes no draw.
    assert (whole / "validation.jsonl").read_text() == (
        finished_run / "validation.jsonl"
    ).read_text()
    assert not (finished_run / "checkpoints" / "best").exists()
    best_weights = load_file(whole / "checkpoints" / "best" / "generator.safetensors")
    if top["step"] == result.step:  # the final weights are the best ones
        final = load_file(latest_checkpoint(whole) / "generator.safetensors")
        assert all(torch.equal(best_weights[k], final[k]) for k in final)

    assert run(prepared, resumed, checkpoint={"best": True}, on_step=interrupt_at_4).step == 4
    run(prepared, resumed, checkpoint={"best": True}, resume=True)
    again = load_file(resumed / "checkpoints" / "best" / "generator.safetensors")
    assert all(torch.equal(best_weights[k], again[k]) for k in best_weights)

    card = yaml.safe_load(package_model(whole, tmp_path / "model", best=True).read_text())
    assert card["training"]["steps"] == top["step"]
    assert card["validation"]["psnr"] == top["psnr"] and card["validation"]["step"] == top["step"]
    # The shipped weights (fp16) restore the validation crops as that validation scored them.
    val = ValidationSet.build(
        PreparedSplit(prepared, "val"), parse_config(tiny_config(prepared)).data, seed=3
    )
    inpainter = build_inpainter({"type": "unet-gan", "weights": str(tmp_path / "model")})
    restored = inpainter(val.masked, val.holes)
    assert psnr_metric(restored, val.targets).mean() == pytest.approx(top["psnr"], abs=0.05)
    with pytest.raises(M2FError, match="kept no best generator"):
        package_model(finished_run, tmp_path / "none", best=True)
    segmenter = {
        "version": 1,
        "name": "seg",
        "model": {"name": "mask-unet"},
        "data": {"root": str(prepared)},
        "optim": {"steps": 2, "batch_size": 2},
    }
    parse_config(segmenter)
    with pytest.raises(TrainConfigError, match="inpainters' training only"):
        parse_config(segmenter | {"checkpoint": {"best": True}})


def test_resume_refuses_a_changed_config(prepared, finished_run):
    with pytest.raises(M2FError, match=r"loss\.ssim"):
        run(prepared, finished_run, resume=True, loss={"ssim": 0.1})


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(prepared, tmp_path):
    def poison_after_3(trainer, values):
        if trainer.step == 3:
            with torch.no_grad():
                next(trainer.generator.parameters()).fill_(float("nan"))

    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged) as info:
        run(prepared, out, checkpoint={"every": 2}, on_step=poison_after_3)
    message = str(info.value)
    assert "\n" not in message
    assert "not finite at step 4" in message and "step-0000002" in message
    assert latest_checkpoint(out).name == "step-0000002"
    weights = load_file(str(latest_checkpoint(out) / "generator.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_inpainter_loads_the_run_and_composites_exactly(prepared, finished_run):
    spec = parse_config(tiny_config(prepared)).data
    val = ValidationSet.build(PreparedSplit(prepared, "val"), spec, seed=3)
    inpainter = build_inpainter({"type": "unet-gan", "weights": str(finished_run)})
    restored = inpainter(val.masked, val.holes)
    outside = ~val.holes
    assert np.array_equal(restored[outside], val.masked[outside])
    # The hole is filled by the network, not left with the drawn mask.
    assert np.abs(restored[val.holes].astype(int) - val.masked[val.holes]).mean() > 5
    # The same weights as training's own validation computed: the logged PSNR is this one.
    from m2f_bench.metrics.pixel import psnr

    logged = json.loads((finished_run / "validation.jsonl").read_text().splitlines()[-1])
    assert psnr(restored, val.targets).mean() == pytest.approx(logged["psnr"], abs=1e-9)
    # A crop whose side is not a multiple of the network's cell is padded, then cropped.
    odd = inpainter(val.masked[:, :60, :60].copy(), val.holes[:, :60, :60].copy())
    assert odd.shape == (N_VAL, 60, 60, 3)
    with pytest.raises(M2FError, match="unet-gan"):
        build_inpainter({"type": "baseline-gan", "weights": str(finished_run)})


def test_flip_tta_averages_the_crop_and_its_mirror(prepared, finished_run):
    """flip_tta: the raw output is the mean of the network on the crop and (mirrored back) on
    the mirrored crop; known pixels stay exact; the cache fingerprint tells the two apart."""
    from m2f_bench.inpainters._nets import to_tensors

    spec = parse_config(tiny_config(prepared)).data
    val = ValidationSet.build(PreparedSplit(prepared, "val"), spec, seed=3)
    plain = build_inpainter({"type": "unet-gan", "weights": str(finished_run)})
    tta = build_inpainter({"type": "unet-gan", "weights": str(finished_run), "flip_tta": True})
    restored = tta(val.masked, val.holes)
    assert np.array_equal(restored[~val.holes], val.masked[~val.holes])
    with torch.inference_mode():
        image, hole = to_tensors(val.masked, val.holes)
        net = plain.network
        mean = (net(image, hole) + net(image.flip(-1), hole.flip(-1)).flip(-1)) / 2
    expected = ((mean.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
    diff = np.abs(restored[val.holes].astype(int) - expected[val.holes].astype(int))
    assert diff.max() <= 1  # rounding of the last bit only
    assert not np.array_equal(restored, plain(val.masked, val.holes))
    assert tta.fingerprint() != plain.fingerprint()
    with pytest.raises(M2FError, match="flip_tta must be true or false"):
        build_inpainter({"type": "unet-gan", "weights": str(finished_run), "flip_tta": "yes"})


def test_baseline_trains_without_skips(prepared, tmp_path):
    result = run(
        prepared, tmp_path / "baseline", model={"name": "baseline-gan"}, optim={"steps": 2}
    )
    inpainter = build_inpainter({"type": "baseline-gan", "weights": str(result.checkpoint)})
    assert not inpainter.network.skips
    assert inpainter.network.merge[0][0].in_channels == 8  # no concatenated encoder features


def test_cli_train_reports_and_refuses_to_overwrite(prepared, tmp_path):
    from m2f_bench.cli.main import app

    config = tmp_path / "tiny.yaml"
    import yaml

    config.write_text(yaml.safe_dump(tiny_config(prepared, optim={"steps": 2})))
    out = tmp_path / "cli-run"
    args = ["train", str(config), "--out", str(out), "--device", "cpu", "--no-progress"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "finished at step 2" in first.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2
    assert again.output.strip().count("\n") == 0 and "--resume" in again.output
    assert (out / "config.yaml").is_file() and (out / "run.json").is_file()
    assert any((out / "tensorboard").iterdir())


def test_importing_the_inpainters_does_not_import_torch():
    code = "import sys, m2f_bench.inpainters; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_onnx_export_matches_pytorch_and_runs_as_an_onnx_inpainter(
    prepared, finished_run, tmp_path
):
    from m2f_bench.training.export import TOLERANCE, export_onnx

    path = tmp_path / "tiny.onnx"
    error = export_onnx(str(finished_run), path, size=SIZE)
    assert error <= TOLERANCE
    spec = parse_config(tiny_config(prepared)).data
    val = ValidationSet.build(PreparedSplit(prepared, "val"), spec, seed=3)
    onnx = build_inpainter(
        {"type": "onnx", "model": str(path), "image_range": [-1, 1], "layout": "nchw"}
    )
    torch_inpainter = build_inpainter({"type": "unet-gan", "weights": str(finished_run)})
    a, b = onnx(val.masked, val.holes), torch_inpainter(val.masked, val.holes)
    # Float outputs within 1e-4 of each other may still round to neighbouring uint8 values.
    assert np.abs(a.astype(int) - b).max() <= 1
    assert (a == b).mean() > 0.99


def test_package_model_writes_a_card_that_model_lookup_and_evaluate_read(
    prepared, finished_run, tmp_path, monkeypatch
):
    import yaml
    from safetensors import safe_open

    from m2f_bench.inpainters import cards
    from m2f_bench.training.package import package_model

    results = tmp_path / "results.json"
    row = {"inpainter": "unet-gan", "recognizer": "r", "n_images": 4, "psnr": 25.0, "ssim": 0.9}
    results.write_text(json.dumps({"protocol": {"name": "p"}, "summary": [row]}))
    card_path = package_model(
        finished_run,
        tmp_path / "models" / "tiny",
        results=results,
        command="m2f-bench train tiny.yaml",
    )
    card = yaml.safe_load(card_path.read_text())
    assert card["inpainter"] == "unet-gan" and card["dtype"] == "float16"
    assert (
        card["training"]["steps"]
        == json.loads((finished_run / "validation.jsonl").read_text().splitlines()[-1])["step"]
    )
    assert card["test"]["by_recognizer"]["r"]["psnr"] == 25.0
    with safe_open(str(card_path.parent / card["weights"]), framework="pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.float16}  # noqa: SIM118
    assert "## Test: `p`" in (card_path.parent / "README.md").read_text()
    # Model lookup by name finds the card; its fp16 weights give the run's outputs closely.
    monkeypatch.setattr(cards, "model_folders", lambda: [card_path.parent])
    spec = parse_config(tiny_config(prepared)).data
    val = ValidationSet.build(PreparedSplit(prepared, "val"), spec, seed=3)
    shipped = build_inpainter({"type": "unet-gan"})(val.masked, val.holes)
    trained = build_inpainter({"type": "unet-gan", "weights": str(finished_run)})(
        val.masked, val.holes
    )
    assert np.abs(shipped.astype(int) - trained).max() <= 3
    with pytest.raises(M2FError, match="baseline-gan"):
        build_inpainter({"type": "baseline-gan"})


def test_two_gloo_ranks_under_torchrun_equal_one_process_on_the_same_global_batch(
    prepared, tmp_path
):
    """Data-parallel on CPU: each rank takes half of every global batch (so they see
    different images), DDP averages the gradients, and the weights after a few steps with
    the GAN on equal those of a single process running the same global batches."""
    import yaml

    config = tiny_config(prepared, optim={"steps": 4}, loss={"gan_start_step": 1})
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    script = Path(sys.executable).with_name("m2f-bench")
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    out = subprocess.run(
        [
            *cmd,
            str(script),
            "train",
            str(path),
            "--out",
            str(tmp_path / "ddp"),
            "--device",
            "cpu",
            "--threads",
            "1",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    single = run(prepared, tmp_path / "single", optim={"steps": 4}, loss={"gan_start_step": 1})
    ddp_run = json.loads((latest_checkpoint(tmp_path / "ddp") / "state.json").read_text())["run"]
    assert ddp_run["world_size"] == 2
    a = _tensors(latest_checkpoint(tmp_path / "ddp"))
    b = _tensors(single.checkpoint)
    for key in (k for k in b if k.startswith(("generator/", "discriminator/"))):
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key
    # The weights moved: equality is not two untouched initialisations.
    init = _initial_generator(config)
    moved = max((b[f"generator/{k}"] - v).abs().max().item() for k, v in init.items())
    assert moved > 1e-3


def _initial_generator(config: dict) -> dict:
    """The generator's initial weights for a config (seeded as training seeds it)."""
    from m2f_bench.inpainters import INPAINTERS

    spec = parse_config(config)
    torch.manual_seed(spec.seed)
    network = INPAINTERS.get(spec.model.name).build_network(**spec.model.arch_args())
    return network.state_dict()


def test_second_stage_starts_from_the_given_weights_and_its_card_says_so(
    prepared, finished_run, tmp_path
):
    """``model.init``: a run that starts from another run's (or a model's) generator, whose
    step-0 weights are exactly those, and whose card records what it started from."""
    import yaml

    from m2f_bench.inpainters._nets import read_generator
    from m2f_bench.training.package import package_model

    first = package_model(finished_run, tmp_path / "models" / "stage1", fp16=False)
    seen = {}

    def keep_first(trainer, values):
        seen.setdefault("step", trainer.step)

    # Before any step: the generator equals the init weights.
    config = parse_config(tiny_config(prepared, model={"init": str(first.parent)}))
    from m2f_bench.training.distributed import init_distributed
    from m2f_bench.training.loop import Trainer

    trainer = Trainer(config, tmp_path / "unused", init_distributed("cpu"))
    trainer.init_from(config.model.init)
    _, stage1 = read_generator(first.parent / "model.safetensors")
    for key, value in trainer.generator.state_dict().items():
        assert torch.equal(value, stage1[key].float()), key

    out = tmp_path / "stage2"
    result = run(prepared, out, model={"init": str(first.parent)}, on_step=keep_first)
    assert result.stopped == "done" and seen["step"] == 1
    # Recorded when the run started: replacing the stage-1 weights afterwards does not
    # change what the stage-2 card says it started from.
    recorded = json.loads((out / "run.json").read_text())["init"]
    assert recorded["sha256"] == yaml.safe_load(first.read_text())["weights_sha256"]
    package_model(finished_run, first.parent, fp16=True)
    card = yaml.safe_load(package_model(out, tmp_path / "models" / "stage2").read_text())
    init = card["training"]["init"]
    assert init["weights"] == str(first.parent) and init["steps"] == 8
    assert (
        init["sha256"] == recorded["sha256"] != yaml.safe_load(first.read_text())["weights_sha256"]
    )
    assert "Earlier stage" in (tmp_path / "models" / "stage2" / "README.md").read_text()
    # A mismatched architecture or another inpainter's weights are refused in one line.
    with pytest.raises(M2FError, match="architecture"):
        run(prepared, tmp_path / "bad", model={"init": str(first.parent), "widths": [8, 16]})
    with pytest.raises(M2FError, match="holds 'unet-gan' weights"):
        run(prepared, tmp_path / "bad2", model={"init": str(first.parent), "name": "baseline-gan"})


@pytest.mark.parametrize("skips", [True, False])
def test_widened_generator_computes_what_its_init_did_and_trains(
    prepared, finished_run, tmp_path, skips
):
    """model.init_widen: wider widths start from narrower weights, with the same outputs
    (every added channel unread), and the added channels are trained from there."""
    from m2f_bench.inpainters._nets import EncoderDecoderGenerator
    from m2f_bench.training.widen import widen_into

    torch.manual_seed(0)
    small = EncoderDecoderGenerator(skips, widths=(8, 16, 32), bottleneck_blocks=2)
    for p in small.parameters():  # trained-looking weights: no zero anywhere
        p.data.normal_(0, 0.05)
    big = EncoderDecoderGenerator(skips, widths=(12, 16, 48), bottleneck_blocks=2)
    widen_into(small, big)
    image, hole = torch.rand(3, 3, 32, 32) * 2 - 1, (torch.rand(3, 1, 32, 32) > 0.7).float()
    assert torch.allclose(small(image, hole), big(image, hole), atol=1e-6)
    big(image, hole).square().mean().backward()
    grown = big.encoder[2][0].weight.grad[32:]  # filters of the added coarsest channels
    reader = big.bottleneck[0].conv1.weight.grad[:, 32:]  # weights reading them
    assert grown.abs().sum() == 0 and reader.abs().sum() > 0
    with pytest.raises(M2FError, match="can only widen"):
        widen_into(big, small)
    with pytest.raises(M2FError, match="can only widen"):
        widen_into(small, EncoderDecoderGenerator(skips, widths=(8, 16, 32), bottleneck_blocks=3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_widening_into_a_generator_on_the_gpu():
    # A run builds the wider generator on its device before the init weights (on CPU) are
    # copied in; the first GPU run stopped there on mixed devices.
    from m2f_bench.inpainters._nets import EncoderDecoderGenerator
    from m2f_bench.training.widen import widen_into

    torch.manual_seed(0)
    small = EncoderDecoderGenerator(True, widths=(8, 16, 32), bottleneck_blocks=2)
    big = EncoderDecoderGenerator(True, widths=(12, 16, 48), bottleneck_blocks=2).cuda()
    widen_into(small, big)
    image, hole = torch.rand(3, 3, 32, 32) * 2 - 1, (torch.rand(3, 1, 32, 32) > 0.7).float()
    assert torch.allclose(small(image, hole), big(image.cuda(), hole.cuda()).cpu(), atol=1e-5)


def test_a_run_widens_its_init_when_asked(prepared, finished_run, tmp_path):
    import yaml

    from m2f_bench.training.package import package_model

    first = package_model(finished_run, tmp_path / "models" / "stage1", fp16=False)
    wide = {"init": str(first.parent), "widths": [8, 16, 48]}
    with pytest.raises(M2FError, match="init_widen"):
        run(prepared, tmp_path / "refused", model=wide)
    result = run(prepared, tmp_path / "wide", model=wide | {"init_widen": True}, optim={"steps": 2})
    assert result.step == 2 and np.isfinite(result.validation["psnr"])
    meta = json.loads((tmp_path / "wide" / "run.json").read_text())
    assert meta["init"]["sha256"] == yaml.safe_load(first.read_text())["weights_sha256"]


def test_degraded_pairs_share_every_draw_and_predicted_holes_train(prepared, tmp_path):
    """data.degrade: the masked input and its target get the same jitter and degradation;
    data.holes: predicted trains on the hole a segmenter finds."""
    from m2f_bench.segmenters._net import MaskSegmenterNet, save_segmenter

    degrade = {
        "geometry": 1.0,
        "lighting": 1.0,
        "noise": 1.0,
        "blur": 1.0,
        "jpeg": 0.0,
        "downscale": 0.0,
        "grayscale": 0.0,
    }
    spec = parse_config(tiny_config(prepared, data={"degrade": degrade})).data
    split = PreparedSplit(prepared, "train")
    sample = make_sample(split, 0, spec, 3, 1, augment=True)
    plain = make_sample(split, 0, parse_config(tiny_config(prepared)).data, 3, 1, augment=True)
    # Away from the hole's rim (which the blur and the warp's interpolation mix with the
    # mask's colours, as in a real photo) the two are the same pixels.
    outside = cv2.dilate(sample.hole.astype(np.uint8), np.ones((13, 13), np.uint8)) == 0
    assert outside.mean() > 0.3 and sample.hole.any()
    assert np.array_equal(sample.masked[outside], sample.target[outside])
    assert not np.array_equal(sample.target, plain.target)  # it was degraded
    torch.manual_seed(0)
    seg = tmp_path / "seg.safetensors"
    save_segmenter(seg, MaskSegmenterNet(widths=(8, 16), bottleneck_blocks=1), "mask-unet")
    result = run(
        prepared,
        tmp_path / "run",
        data={"holes": "predicted", "segmenter": str(seg), "degrade": degrade},
        optim={"steps": 3},
    )
    assert result.step == 3 and np.isfinite(result.validation["psnr"])
    # Such runs are validated on clean and on degraded crops (fixed draws, own keys).
    assert np.isfinite(result.validation["psnr_degraded"])
    assert result.validation["psnr_degraded"] != result.validation["psnr"]
    line = json.loads((tmp_path / "run" / "validation.jsonl").read_text().splitlines()[-1])
    assert {"psnr_degraded", "ssim_degraded", "psnr_hole_degraded"} <= set(line)
    # The degraded set is the clean set's masked crops, degraded: fixed draws; without
    # geometry jitter the holes are the clean set's; with every probability 0, the clean set.
    val = PreparedSplit(prepared, "val")
    clean = ValidationSet.build(val, spec, 0)
    first, again = (ValidationSet.build(val, spec, 0, degraded=True) for _ in range(2))
    assert np.array_equal(first.masked, again.masked)
    assert not np.array_equal(first.targets, clean.targets)
    still = parse_config(tiny_config(prepared, data={"degrade": degrade | {"geometry": 0.0}}))
    same_holes = ValidationSet.build(val, still.data, 0, degraded=True)
    assert np.array_equal(same_holes.holes, clean.holes)
    assert not np.array_equal(same_holes.targets, clean.targets)
    off = dict.fromkeys(degrade, 0.0)
    none = ValidationSet.build(
        val, parse_config(tiny_config(prepared, data={"degrade": off})).data, 0, degraded=True
    )
    assert np.array_equal(none.masked, clean.masked)
    assert np.array_equal(none.targets, clean.targets)
    with pytest.raises(M2FError, match=r"needs data\.degrade"):
        ValidationSet.build(val, parse_config(tiny_config(prepared)).data, 0, degraded=True)


def test_identity_term_trains_validates_and_is_on_the_card(prepared, finished_run, tmp_path):
    """loss.identity: the term is logged, validation reports id_sim with the same network,
    and the packaged card names the recognizer; a bad recognizer file is one line."""
    import yaml
    from conftest import write_tiny_arcface

    from m2f_bench.training.package import package_model

    onnx_path = write_tiny_arcface(tmp_path / "tiny-arcface.onnx", dim=16)
    seen = []
    result = run(
        prepared,
        tmp_path / "run",
        loss={"identity": 0.5, "identity_model": str(onnx_path)},
        optim={"steps": 3},
        on_step=lambda trainer, values: seen.append(values),
    )
    assert result.step == 3 and all("identity" in v and 0 <= v["identity"] <= 2 for v in seen)
    # The term is in the generator's loss with its weight (tiny_config's other weights).
    for v in seen:
        gan = 0.01 * v.get("adversarial", 0.0) + 1.0 * v.get("feature_matching", 0.0)
        expected = v["l1"] + 0.5 * v["ssim"] + 0.5 * v["identity"] + gan
        assert v["g_total"] == pytest.approx(expected, rel=1e-5)
    assert -1 <= result.validation["id_sim"] <= 1
    lines = (tmp_path / "run" / "validation.jsonl").read_text().splitlines()
    assert "id_sim" in json.loads(lines[-1])
    card = yaml.safe_load(package_model(tmp_path / "run", tmp_path / "model").read_text())
    assert "tiny-arcface.onnx (sha256 " in card["training"]["identity_loss"]
    assert "dlib-resnet" in card["training"]["identity_loss"]
    # Without the term: no id_sim, and the card says none.
    assert "id_sim" not in (finished_run / "validation.jsonl").read_text()
    plain = yaml.safe_load(package_model(finished_run, tmp_path / "plain").read_text())
    assert plain["training"]["identity_loss"] is None
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    with pytest.raises(M2FError, match="cannot read ONNX model") as info:
        run(prepared, tmp_path / "bad", loss={"identity": 0.5, "identity_model": str(bad)})
    assert "\n" not in str(info.value)


def test_fit_gap_scores_both_splits_as_validation_does(prepared, finished_run, tmp_path):
    from m2f_bench.cli.main import app

    csv = tmp_path / "gap.csv"
    args = ["fit-gap", str(finished_run), "opencv-telea", "--data", str(prepared)]
    args += ["--limit", str(N_VAL), "--seed", "3", "--out", str(csv)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(csv)
    assert list(table["split"]) == ["train", "val"] * 2
    assert list(table["images"]) == [N_VAL] * 4
    assert table[["psnr", "psnr_hole", "ssim"]].notna().all().all()
    # The run's own last validation: same crops, same mask draws, same metric code.
    last = json.loads((finished_run / "validation.jsonl").read_text().splitlines()[-1])
    val = table[(table["model"] == str(finished_run)) & (table["split"] == "val")].iloc[0]
    assert val["psnr"] == pytest.approx(last["psnr"], abs=0.01)
    assert val["psnr_hole"] == pytest.approx(last["psnr_hole"], abs=0.01)
    assert val["ssim"] == pytest.approx(last["ssim"], abs=1e-4)
    assert sum(line.split()[:1] == ["gap"] for line in result.output.splitlines()) == 2


def test_fit_gap_refuses_what_it_cannot_load(prepared, tmp_path):
    from m2f_bench.cli.main import app

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not weights")
    for model, data in [(str(tmp_path / "nothing"), prepared), (str(junk), prepared)]:
        result = CliRunner().invoke(app, ["fit-gap", model, "--data", str(data)])
        assert result.exit_code == 2, result.output
        assert result.output.strip().count("\n") == 0 and "error:" in result.output
    result = CliRunner().invoke(app, ["fit-gap", "telea", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "manifest.csv" in result.output


def test_a_missing_init_is_named_by_its_config_key(prepared, tmp_path):
    with pytest.raises(M2FError, match=r"^model\.init: .*no weights at"):
        run(prepared, tmp_path / "r", model={"init": str(tmp_path / "nope")})


def _copy_run(finished_run: Path, dest: Path) -> Path:
    shutil.copytree(finished_run, dest)
    return dest


def test_a_damaged_checkpoint_is_one_line_that_points_at_the_older_one(
    prepared, finished_run, tmp_path
):
    bad_state = _copy_run(finished_run, tmp_path / "state")
    latest = latest_checkpoint(bad_state)
    (latest / "state.json").write_text('{"step": 8, "conf')
    with pytest.raises(M2FError, match=r"is damaged: JSONDecodeError.*step-0000004") as info:
        run(prepared, bad_state, resume=True)
    assert "\n" not in str(info.value)
    bad_weights = _copy_run(finished_run, tmp_path / "weights")
    path = latest_checkpoint(bad_weights) / "generator.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(M2FError, match="is damaged"):
        run(prepared, bad_weights, resume=True)
    # The older checkpoint, named in latest, resumes.
    (bad_weights / "checkpoints" / "latest").write_text("step-0000004")
    assert run(prepared, bad_weights, resume=True).step == 8
    empty = _copy_run(finished_run, tmp_path / "empty")
    (empty / "checkpoints" / "latest").write_text("")
    with pytest.raises(M2FError, match="names 'no checkpoint'"):
        run(prepared, empty, resume=True)


def test_resuming_a_run_of_the_other_kind_is_refused(prepared, finished_run):
    from test_segmenter_training import seg_config

    from m2f_bench.training.loop import _check_resumable

    segmenter = parse_config(seg_config(prepared))
    state = json.loads((latest_checkpoint(finished_run) / "state.json").read_text())
    with pytest.raises(M2FError, match="an inpainter run and this config trains a segmenter"):
        _check_resumable(state["config"], segmenter, finished_run)


def test_damaged_training_data_is_one_line(prepared, tmp_path):
    from m2f_bench.training.data import PreparedSplit

    copy = tmp_path / "data"
    shutil.copytree(prepared, copy)
    (copy / "manifest.csv").write_text("")
    with pytest.raises(M2FError, match="not a readable manifest"):
        PreparedSplit(copy, "train")
    shutil.copy(prepared / "manifest.csv", copy / "manifest.csv")
    split = PreparedSplit(copy, "train")
    landmarks = copy / prepared_path("landmarks", split.image_ids[0])
    landmarks.write_text('{"landm')
    with pytest.raises(M2FError, match="damaged landmarks file"):
        split.load(0)


def test_an_error_in_a_data_loader_worker_is_one_line(prepared, tmp_path):
    from m2f_bench.cli.main import app

    copy = tmp_path / "data"
    shutil.copytree(prepared, copy)
    # The first crop of each split is read in this process (its size; validation): the
    # others, read by the worker, are cut off.
    intact = {_split_ids(prepared, "train")[0], _split_ids(prepared, "val")[0]}
    for crop in (copy / "crops").rglob("*.png"):
        if crop.stem not in intact:
            crop.write_bytes(crop.read_bytes()[:50])
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(copy, data={"workers": 1, "val_limit": 1})))
    result = CliRunner().invoke(app, ["train", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "in a data-loader worker" in errors[0], result.output
    assert "Traceback" not in result.output


def _split_ids(root: Path, split: str) -> list[str]:
    from m2f_bench.training.data import PreparedSplit

    return PreparedSplit(root, split).image_ids


@pytest.mark.parametrize(
    ("sections", "match"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 10**24}, "seed"),
        ({"discriminator": {"widths": [0]}}, "discriminator.widths"),
        ({"model": {"widths": [8, -16, 32]}}, "model.widths"),
    ],
)
def test_config_values_that_cannot_train_are_refused(prepared, sections, match):
    with pytest.raises(M2FError, match=match):
        parse_config(tiny_config(prepared, **sections))


def test_crops_the_network_cannot_fold_are_refused_before_training(prepared, tmp_path):
    with pytest.raises(M2FError, match=r"multiples of 12 .*model\.unshuffle"):
        run(prepared, tmp_path / "r", model={"unshuffle": 3})


def test_package_model_checks_results_before_writing_and_skips_a_cut_off_line(
    finished_run, tmp_path
):
    from m2f_bench.training.package import package_model

    run_dir = _copy_run(finished_run, tmp_path / "run")
    with (run_dir / "validation.jsonl").open("a") as f:
        f.write('{"step": 9, "ps')
    out = tmp_path / "model"
    for content in ("[]", "{not json", json.dumps({"summary": [{"inpainter": "lama"}]})):
        (tmp_path / "r.json").write_text(content)
        with pytest.raises(M2FError) as info:
            package_model(run_dir, out, results=tmp_path / "r.json")
        assert "\n" not in str(info.value)
        assert not out.exists()  # nothing written
    card = yaml.safe_load(package_model(run_dir, out).read_text())
    assert card["validation"]["step"] == 8


def test_train_refuses_a_model_folder_and_a_fresh_start_drops_stale_validation(
    prepared, finished_run, tmp_path, caplog
):
    from m2f_bench.training.package import package_model

    model = tmp_path / "model"
    package_model(finished_run, model)
    before = (model / "config.yaml").read_text()
    with pytest.raises(M2FError, match="is a model folder"):
        run(prepared, model)
    assert (model / "config.yaml").read_text() == before
    # A stopped attempt that kept no checkpoint: its validation lines go.
    out = tmp_path / "again"
    out.mkdir()
    (out / "validation.jsonl").write_text('{"step": 6, "psnr": 1.0}\n')
    with caplog.at_level("WARNING"):
        run(prepared, out, resume=True, optim={"steps": 2}, log={"every": 1})
    assert "nothing to resume" in caplog.text
    steps = [json.loads(x)["step"] for x in (out / "validation.jsonl").read_text().splitlines()]
    assert 6 not in steps


def test_validate_names_the_training_files_that_are_missing_or_unfit(prepared, tmp_path):
    from m2f_bench.cli.main import app

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"\x00" * 16)
    config = tmp_path / "c.yaml"
    data = tiny_config(tmp_path / "nowhere", model={"init": str(weights)})
    config.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["validate", str(config)])
    assert result.exit_code == 2
    line = result.output.strip()
    assert line.count("\n") == 0 and line.startswith(f"error: {config}: data.root")
    assert "model.init" in line and "not a readable weights file" in line


def test_export_onnx_makes_the_folder_and_refuses_a_folder_as_out(finished_run, tmp_path):
    from m2f_bench.cli.main import app

    result = CliRunner().invoke(app, ["export-onnx", str(finished_run), str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output
    out = tmp_path / "new" / "sub" / "g.onnx"
    result = CliRunner().invoke(app, ["export-onnx", str(finished_run), str(out), "--size", "64"])
    assert result.exit_code == 0, result.output
    assert out.is_file()


def test_a_damaged_best_record_neither_blocks_resume_nor_ships(prepared, tmp_path, caplog):
    from m2f_bench.training.package import package_model

    def interrupt_at_4(trainer, values):
        if trainer.step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "r"
    run(prepared, out, checkpoint={"best": True}, on_step=interrupt_at_4)
    (out / "checkpoints" / "best" / "state.json").write_text('{"step": 8')
    with pytest.raises(M2FError, match="package the run without --best"):
        package_model(out, tmp_path / "m", best=True)
    with caplog.at_level("WARNING"):
        assert run(prepared, out, checkpoint={"best": True}, resume=True).step == 8
    assert "starting a new best" in caplog.text
    assert json.loads((out / "checkpoints" / "best" / "state.json").read_text())["step"] > 4
    # A state.json that parses but lacks what training writes is damaged too.
    latest = latest_checkpoint(out)
    (latest / "state.json").write_text(json.dumps({"step": 8}))
    with pytest.raises(M2FError, match=r"state\.json lacks config, optimizers, schedulers"):
        run(prepared, out, checkpoint={"best": True}, resume=True)


def test_a_fresh_start_without_resume_drops_stale_validation(prepared, tmp_path):
    out = tmp_path / "again"
    out.mkdir()
    (out / "validation.jsonl").write_text('{"step": 6, "psnr": 1.0}\n')
    run(prepared, out, optim={"steps": 2})
    assert '"psnr": 1.0' not in (out / "validation.jsonl").read_text()


def test_fit_gap_needs_two_splits(prepared):
    from m2f_bench.training.fitgap import fit_gap

    with pytest.raises(M2FError, match="both 'val'"):
        list(fit_gap(["opencv-telea"], prepared, train_split="val", val_split="val"))
