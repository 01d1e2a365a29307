"""The command line, end to end, through Typer's CliRunner, offline and without models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from m2f_bench import __version__
from m2f_bench.cli.main import app
from m2f_bench.masks import MASK_TYPES
from m2f_bench.prepare import MANIFEST_COLUMNS

runner = CliRunner()


@pytest.fixture
def homes(tmp_path, monkeypatch):
    """Empty data and model homes, offline: only what ships with the packages."""
    monkeypatch.setenv("M2F_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("M2F_MODEL_HOME", str(tmp_path / "models"))
    monkeypatch.setenv("M2F_OFFLINE", "1")
    return tmp_path


@pytest.fixture
def messy_folder(tmp_path, astronaut):
    """An identity folder with good photos in odd layouts and bad files."""
    root = tmp_path / "faces"
    good, bad = root / "eileen", root / "junk"
    good.mkdir(parents=True)
    bad.mkdir()
    photo = Image.fromarray(astronaut)
    photo.save(good / "colour.jpg", quality=92)
    photo.convert("L").save(good / "gray.png")
    photo.convert("RGBA").save(good / "rgba.png")
    sixteen = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(sixteen).save(good / "sixteen.png")
    (bad / "truncated.jpg").write_bytes((good / "colour.jpg").read_bytes()[:3000])
    Image.new("RGB", (16, 16), (120, 90, 60)).save(bad / "tiny.png")
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(bad / "noface.png")
    return root


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def test_version_and_help():
    assert _run("--version").stdout.strip() == __version__
    result = _run("--help")
    assert result.exit_code == 0
    for command in ("prepare", "evaluate", "report", "validate", "list", "masks"):
        assert command in result.stdout


def test_list_shows_every_registry(homes):
    result = _run("list")
    assert result.exit_code == 0
    for name in (
        "opencv-telea",
        "biharmonic",
        "arcface-onnx",
        "dlib-resnet",
        "ssim_hole",
        "lfw",
        "celebahq",
        "scrfd",
        "dlib-hog",
        *MASK_TYPES,
    ):
        assert name in result.stdout


def test_prepare_writes_crops_masks_and_manifest_and_reuses_them(homes):
    out = homes / "prepared"
    args = ("prepare", "demo", "--out", out, "--workers", "1", "--no-progress")
    result = _run(*args)
    assert result.exit_code == 0, result.output
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert (manifest.status == "ok").all() and len(manifest) == 8 * len(MASK_TYPES)
    assert set(manifest.mask_type) == set(MASK_TYPES)
    row = manifest.iloc[0]
    crop = np.asarray(Image.open(out / row.crop_path))
    masked = np.asarray(Image.open(out / row.masked_path))
    hole = np.asarray(Image.open(out / row.hole_path)) > 127
    assert crop.shape == (128, 128, 3) and hole.shape == (128, 128)
    assert np.array_equal(crop[~hole], masked[~hole]) and not np.array_equal(crop, masked)
    assert row.coverage == pytest.approx(hole.mean(), abs=1e-6)
    landmarks = json.loads((out / row.landmarks_path).read_text())
    assert np.asarray(landmarks["landmarks"]).shape == (68, 2)
    assert "coverage" in result.stdout

    again = _run(*args)
    assert "8 reused" in again.stdout
    assert np.array_equal(np.asarray(Image.open(out / row.masked_path)), masked)

    # An interrupted run: one image's done-marker and another's mask are gone.
    (out / row.landmarks_path).unlink()
    (out / manifest.iloc[-1].masked_path).unlink()
    resumed = _run(*args)
    assert "6 reused" in resumed.stdout
    assert (out / manifest.iloc[-1].masked_path).is_file()


def test_prepare_rebuilds_when_settings_change(homes):
    out = homes / "prepared"
    base = (
        "prepare",
        "demo",
        "--out",
        out,
        "--workers",
        "1",
        "--no-progress",
        "--mask-types",
        "cloth",
    )
    assert _run(*base, "--seed", "0").exit_code == 0
    before = np.asarray(Image.open(out / "masked/cloth/astronaut.png"))
    result = _run(*base, "--seed", "1")
    assert "0 reused" in result.stdout
    after = np.asarray(Image.open(out / "masked/cloth/astronaut.png"))
    assert not np.array_equal(before, after)


def test_prepare_records_bad_images_and_goes_on(homes, messy_folder):
    out = homes / "prepared"
    result = _run(
        "prepare",
        "folder",
        "--root",
        messy_folder,
        "--split",
        "all",
        "--out",
        out,
        "--workers",
        "1",
        "--no-progress",
        "--mask-types",
        "surgical_blue",
    )
    assert result.exit_code == 0, result.output
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False).set_index("image_id")
    ok = manifest[manifest.status == "ok"].index
    assert sorted(ok) == sorted(f"eileen__{n}" for n in ("colour", "gray", "rgba", "sixteen"))
    reasons = manifest[manifest.status == "failed"].reason.to_dict()
    assert "truncated" in reasons["junk__truncated"]
    assert reasons["junk__tiny"].startswith("ImageTooSmallError: image too small")
    assert reasons["junk__noface"].startswith("NoFaceError: no face")
    assert "3 failed" in result.stdout
    summary = json.loads((out / "prepare.json").read_text())
    counts = summary["failure_reasons"]
    assert counts.get("ImageTooSmallError") == 1 and counts.get("NoFaceError") == 1, counts


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("prepare", "lfww"), "unknown dataset 'lfww'; did you mean lfw"),
        (("prepare", "lfw", "--offline"), "lfw-deepfunneled"),
        (("prepare", "demo", "--split", "dev"), "unknown split 'dev'"),
        (("prepare", "demo", "--mask-types", "surgical"), "unknown mask type 'surgical'"),
        (("prepare", "demo", "--detector", "scrfd"), "scrfd_500m_kps.onnx"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(homes, args, expected):
    result = _run(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]


def test_wrong_folder_layout_is_one_line(homes, tmp_path, astronaut):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(astronaut).save(flat / "a.jpg")
    result = _run("prepare", "folder", "--root", flat)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


def test_lfw_without_pairs_txt_is_one_line(homes, tmp_path, astronaut):
    root = tmp_path / "lfw"
    (root / "lfw-deepfunneled" / "Eileen_Collins").mkdir(parents=True)
    Image.fromarray(astronaut).save(
        root / "lfw-deepfunneled/Eileen_Collins/Eileen_Collins_0001.jpg"
    )
    result = _run("prepare", "lfw", "--root", root)
    assert result.exit_code == 2 and "pairs.txt" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_masks_preview_renders_a_contact_sheet(homes, tmp_path, astronaut):
    photo = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(photo)
    sheet = tmp_path / "sheet.png"
    result = _run("masks", "preview", "--image", photo, "--out", sheet, "--size", "64")
    assert result.exit_code == 0, result.output
    image = np.asarray(Image.open(sheet))
    assert image.shape[1] >= 64 * (1 + len(MASK_TYPES)) and image.shape[0] >= 64


def test_validate_accepts_shipped_protocols_and_rejects_bad_ones(tmp_path):
    shipped = sorted((Path(__file__).parents[1] / "protocols").glob("*.yaml"))
    result = _run("validate", "--no-files", *shipped)
    assert result.exit_code == 0, result.output
    assert result.stdout.count(": ok") == len(shipped)
    training = [p for p in shipped if p.name.startswith("train-")]
    assert result.stdout.count("ok (training config)") == len(training) >= 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\ndataset: {name: lfw}\ninpainters: [{type: telea}]\n")
    result = _run("validate", bad)
    assert result.exit_code == 2 and "inpainters.0" in result.stderr and "telea" in result.stderr


def test_validate_checks_the_identity_terms_recognizer_file(tmp_path):
    config = (Path(__file__).parents[1] / "protocols" / "train-unet-gan-id.yaml").read_text()
    config = config.replace("  init: ${M2F_UNET_GAN_STAGE1:-runs/unet-gan}\n", "")
    path = tmp_path / "train-id.yaml"
    path.write_text(config.replace("mobilefacenet_arcface.onnx", str(tmp_path / "none.onnx")))
    result = _run("validate", path)
    assert result.exit_code == 2
    assert "loss.identity_model" in result.stderr and "none.onnx" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_worker_processes_give_the_same_files_as_one_process(homes):
    one, two = homes / "one", homes / "two"
    base = ("prepare", "demo", "--no-progress", "--mask-types", "kn95,cloth")
    assert _run(*base, "--out", one, "--workers", "1").exit_code == 0
    result = _run(*base, "--out", two, "--workers", "2")
    assert result.exit_code == 0, result.output
    first = pd.read_csv(one / "manifest.csv", keep_default_na=False)
    assert first.equals(pd.read_csv(two / "manifest.csv", keep_default_na=False))
    for path in first.masked_path:
        assert (one / path).read_bytes() == (two / path).read_bytes()


def test_an_empty_split_of_a_small_folder_says_how_to_get_one(homes, messy_folder):
    result = _run("prepare", "folder", "--root", messy_folder, "--split", "test", "--no-progress")
    assert result.exit_code == 2
    assert "the test split of folder has no images; use --split all" in result.output
    assert "10 identities" in result.output


def test_validate_lists_every_problem_of_every_file_and_missing_model_files(homes, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nname: x\ndataset: {name: lfw}\nmasks: {types: [surgical_purple]}\n"
        "inpainters: [{type: telea}, {type: masked}]\nrecognizers: [{type: dlib-resnett}]\n"
    )
    needs_model = tmp_path / "model.yaml"
    needs_model.write_text(
        "version: 1\nname: y\ndataset: {name: lfw}\ninpainters: [{type: masked}]\n"
        "recognizers: [{type: arcface-onnx, model: nowhere.onnx}]\n"
    )
    good = Path(__file__).parents[1] / "protocols" / "demo.yaml"
    result = _run("validate", bad, needs_model, good)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, result.stderr
    assert all(k in errors[0] for k in ("masks.types.0", "inpainters.0", "recognizers.0"))
    assert "recognizers.0" in errors[1] and "nowhere.onnx" in errors[1]
    assert f"{good}: ok" in result.stdout
    assert _run("validate", "--no-files", needs_model).exit_code == 0


def test_evaluate_stops_on_a_missing_model_before_preparing_any_face(homes, tmp_path):
    protocol = tmp_path / "p.yaml"
    protocol.write_text(
        "version: 1\nname: p\ndataset: {name: demo}\nfaces: {detector: dlib-hog}\n"
        "inpainters: [{type: masked}]\nrecognizers: [{type: arcface-onnx}]\n"
        "verification: null\n"
    )
    out = tmp_path / "run"
    result = _run("evaluate", protocol, "--out", out, "--no-progress")
    assert result.exit_code == 2
    assert "no ArcFace model" in result.stderr and "recognizers.0" in result.stderr
    assert not out.exists()


def _readme_usage() -> list[str]:
    """The README's usage block, continuation lines joined to their command."""
    text = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = text.split("## Usage", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands: list[str] = []
    for line in block.splitlines():
        code = line.split("  #", 1)[0].rstrip()
        if code.startswith("m2f-bench "):
            commands.append(code)
        elif code.strip() and commands:
            commands[-1] += " " + code.strip()
    return commands


def test_every_command_has_help_and_the_readme_usage_block_matches_it():
    import re

    import typer.main

    group = typer.main.get_command(app)
    paths = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a sub-group: masks, benchmark
            paths += [(name, sub) for sub in command.commands]
        else:
            paths.append((name,))
    documented = {}
    for line in _readme_usage():
        words = line.split()[1:]
        path = tuple(words[:2]) if words[0] in ("masks", "benchmark") else (words[0],)
        documented[path] = line
    assert set(documented) == set(paths), "README usage block and CLI commands differ"
    for path in paths:
        result = _run(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        for option in re.findall(r"--[a-z][a-z-]*", documented[path]):
            assert option in result.output, f"README shows {option} for {' '.join(path)}"
        # Plain help: no literal reST markup, no empty "folder ." left by stripped markup.
        assert "``" not in result.output, path
        assert not re.search(r"\w \.(\s|$)", result.output), path
