"""`hole: predicted` in protocols: any inpainter fed a segmenter's hole, and unet-gan-blind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from m2f_bench.cli.main import app
from m2f_bench.errors import M2FError
from m2f_bench.evaluation.holes import split_hole_args
from m2f_bench.evaluation.protocol import parse_protocol

runner = CliRunner()


def _protocol(inpainters):
    data = yaml.safe_load(Path("protocols/demo.yaml").read_text())
    data["inpainters"] = inpainters
    return data


@pytest.fixture(scope="module")
def blind_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("blind")
    path = root / "demo-blind.yaml"
    path.write_text(
        yaml.safe_dump(
            _protocol(
                [
                    {"type": "masked"},
                    {"type": "opencv-telea"},
                    {"type": "opencv-telea", "name": "telea-predicted", "hole": "predicted"},
                    {"type": "unet-gan-blind"},
                ]
            )
        )
    )
    mp = pytest.MonkeyPatch()
    mp.setenv("M2F_DATA_HOME", str(root / "data"))
    mp.setenv("M2F_MODEL_HOME", str(root / "models"))
    mp.setenv("M2F_OFFLINE", "1")
    out = root / "run"
    args = ["evaluate", str(path), "--out", str(out), "--no-progress", "--workers", "1"]
    result = runner.invoke(app, args)
    yield out, result, args
    mp.undo()


def test_predicted_holes_are_used_recorded_and_scored(blind_run):
    out, result, _ = blind_run
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    states = results["inpainters"]
    assert {k: v["status"] for k, v in states.items()} == dict.fromkeys(states, "ok")
    assert states["telea-predicted"]["hole"] == "predicted"
    assert states["unet-gan-blind"]["hole"] == "predicted"  # the blind default
    assert states["opencv-telea"]["hole"] == "exact"
    table = pd.read_csv(out / "per_image.csv")
    by = table.groupby("inpainter")
    assert (by.get_group("opencv-telea")["hole_iou"] == 1.0).all()
    for label in ("telea-predicted", "unet-gan-blind"):
        rows = by.get_group(label)
        assert rows["hole_iou"].between(0, 1).all() and rows["hole_iou"].mean() > 0.7
        assert (out / "inpainted" / label / "holes").is_dir()
    # Telea on its own hole vs on the predicted one: same image ids, different outputs.
    exact, predicted = by.get_group("opencv-telea"), by.get_group("telea-predicted")
    assert list(exact.image_id) == list(predicted.image_id)
    assert not np.allclose(exact.psnr, predicted.psnr)
    summary = pd.read_csv(out / "summary.csv")
    assert "hole_iou" in summary.columns and "mask_found" in results["metrics"]


def test_a_rerun_reuses_predicted_holes_and_outputs(blind_run):
    out, _, args = blind_run
    before = (out / "per_image.csv").read_text()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (out / "per_image.csv").read_text() == before
    results = json.loads((out / "results.json").read_text())
    assert results["inpainters"]["telea-predicted"]["n_computed"] == 0


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "opencv-telea", "hole": "guessed"}, "hole must be one of exact, predicted"),
        ({"type": "opencv-telea", "segmenter": "mask-unet"}, "only used with hole: predicted"),
        (
            {"type": "opencv-telea", "hole": "predicted", "segmenter": {"type": "nope"}},
            "unknown segmenter 'nope'",
        ),
        (
            {
                "type": "opencv-telea",
                "hole": "predicted",
                "segmenter": {"type": "mask-unet", "dilation": 2},
            },
            "no argument 'dilation'",
        ),
    ],
)
def test_bad_hole_settings_are_rejected_by_validate(tmp_path, entry, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(_protocol([{"type": "masked"}, entry])))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code != 0
    assert message in result.output


def test_split_hole_args_defaults():
    from m2f_bench.inpainters import INPAINTERS

    rest, source = split_hole_args(
        {"type": "unet-gan-blind", "batch_size": 8}, INPAINTERS.get("unet-gan-blind")
    )
    assert rest == {"type": "unet-gan-blind", "batch_size": 8} and source.predicted
    rest, source = split_hole_args({"type": "unet-gan"}, INPAINTERS.get("unet-gan"))
    assert not source.predicted
    with pytest.raises(M2FError):
        split_hole_args({"type": "unet-gan", "segmenter": 3, "hole": "predicted"})
    assert parse_protocol(_protocol([{"type": "opencv-telea", "hole": "predicted"}]))


def test_a_changed_model_file_at_the_same_path_redoes_outputs_and_embeddings(tmp_path, monkeypatch):
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    weights = tmp_path / "my.safetensors"
    shutil.copyfile(Path("models/unet-gan-lfw128/model.safetensors"), weights)
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(
            _protocol([{"type": "masked"}, {"type": "unet-gan", "weights": str(weights)}])
        )
    )
    monkeypatch.setenv("M2F_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("M2F_MODEL_HOME", str(tmp_path / "models"))
    monkeypatch.setenv("M2F_OFFLINE", "1")
    args = [
        "evaluate",
        str(path),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
        "--workers",
        "1",
    ]
    assert runner.invoke(app, args).exit_code == 0
    first = pd.read_csv(tmp_path / "run" / "per_image.csv")
    # Same path, new content (a re-trained model): nothing of the old outputs may be reused.
    with safe_open(str(weights), framework="pt") as fh:
        metadata = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    head = sorted(k for k in tensors if k.startswith("head."))[-1]
    tensors[head] = tensors[head] + 0.2
    save_file(tensors, str(weights), metadata=metadata)
    assert runner.invoke(app, args).exit_code == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    state = results["inpainters"]["unet-gan"]
    assert state["n_computed"] == len(first) // 2 and "weights_sha256" in state["model"]
    second = pd.read_csv(tmp_path / "run" / "per_image.csv")
    rows = second.inpainter == "unet-gan"
    assert not np.allclose(first[rows].psnr, second[rows].psnr)
    assert not np.allclose(first[rows]["id_sim.dlib"], second[rows]["id_sim.dlib"])
