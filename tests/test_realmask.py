"""Real-mask evaluation: the masked-folder dataset, painted masks, and the protocol run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from m2f_bench.cli.main import app
from m2f_bench.data.masked_folder import MaskedFolder
from m2f_bench.errors import DataNotFoundError, M2FError
from m2f_bench.evaluation.realmask import choose_gallery, identification_ranks

runner = CliRunner()


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)


def test_masked_folder_reads_the_subfolder_convention(tmp_path):
    _touch(tmp_path / "ann" / "a1.jpg")
    _touch(tmp_path / "ann" / "a2.jpg")
    _touch(tmp_path / "ann" / "masked" / "m1.jpg")
    _touch(tmp_path / "bob" / "b1.png")
    (tmp_path / "bob" / "notes.txt").write_text("x")
    records = MaskedFolder(tmp_path).records()
    assert [(r.identity, r.path.name, r.masked) for r in records] == [
        ("ann", "a1.jpg", False),
        ("ann", "a2.jpg", False),
        ("ann", "m1.jpg", True),
        ("bob", "b1.png", False),
    ]
    gallery, probes, references = choose_gallery(records, seed=0)
    # Everyone with a clean photo is in the gallery (bob: a distractor, never a probe).
    assert list(gallery) == ["ann", "bob"] and [p.path.name for p in probes] == ["m1.jpg"]
    assert len(references) == 1 and references[0] is not gallery["ann"]


def test_masked_folder_reads_labels_and_parallel_trees(tmp_path):
    for name in ("ann/a1.jpg", "ann/a2.jpg", "bob/b1.jpg"):
        _touch(tmp_path / "photos" / name)
    labels = tmp_path / "photos" / "labels.csv"
    labels.write_text("image,masked\nann/a1.jpg,0\nann/a2.jpg,yes\nbob/b1.jpg,false\n")
    records = MaskedFolder(tmp_path / "photos", labels="labels.csv").records()
    assert [r.masked for r in records] == [False, True, False]
    labels.write_text("image,masked\nann/a1.jpg,maybe\n")
    with pytest.raises(M2FError, match="line 2: masked must be"):
        MaskedFolder(tmp_path / "photos", labels=str(labels)).records()
    labels.write_text("path,mask\n")
    with pytest.raises(M2FError, match="needs the columns image and masked"):
        MaskedFolder(tmp_path / "photos", labels=str(labels)).records()
    # RMFRD: AFDB_face_dataset/<id>/ and AFDB_masked_face_dataset/<id>/
    _touch(tmp_path / "masked_tree" / "ann" / "0001.jpg")
    records = MaskedFolder(tmp_path / "photos", masked_root=str(tmp_path / "masked_tree")).records()
    assert [(r.identity, r.masked) for r in records if r.masked] == [("ann", True)]


def test_masked_folder_errors_are_one_line(tmp_path):
    with pytest.raises(DataNotFoundError, match="missing image folder"):
        MaskedFolder(tmp_path / "nowhere")
    _touch(tmp_path / "ann" / "a1.jpg")
    with pytest.raises(M2FError, match="no masked photo found"):
        MaskedFolder(tmp_path).records()
    with pytest.raises(DataNotFoundError, match="labels file not found"):
        MaskedFolder(tmp_path, labels="missing.csv")


def test_identification_ranks_count_ties_against_the_probe():
    gallery = np.eye(3, dtype=np.float32)
    probes = np.array([[1, 0, 0], [0.6, 0.8, 0], [0.7, 0, 0.7]], np.float32)
    assert identification_ranks(probes, gallery, np.array([0, 0, 2])).tolist() == [1, 2, 2]


@pytest.fixture(scope="module")
def painted_run(lfw_home, model_home, tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    mp = pytest.MonkeyPatch()
    mp.setenv("M2F_DATA_HOME", str(lfw_home))
    mp.setenv("M2F_MODEL_HOME", str(model_home))
    painted = root / "painted"
    result = runner.invoke(
        app,
        ["masks", "paint", "lfw", "--out", str(painted), "--limit-people", "24", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    # A masked photo with no face in it: counted, not fatal.
    person = sorted(p for p in painted.iterdir() if (p / "masked").is_dir())[0]
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(person / "masked" / "blank.jpg")
    protocol = yaml.safe_load(Path("protocols/real-masks.yaml").read_text())
    protocol["dataset"]["root"] = str(painted)
    protocol["inpainters"] = [
        {"type": "masked"},
        {"type": "unet-gan-blind"},
        {"type": "opencv-telea", "hole": "predicted"},
    ]
    protocol["verification"]["bootstrap"] = 50
    path = root / "real.yaml"
    path.write_text(yaml.safe_dump(protocol))
    out = root / "run"
    result = runner.invoke(app, ["evaluate", str(path), "--out", str(out), "--no-progress"])
    yield out, result, path, painted
    mp.undo()


def test_real_mask_protocol_reports_verification_identification_and_missed_faces(painted_run):
    out, result, _, painted = painted_run
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    counts = results["counts"]
    n_masked = sum(1 for _ in painted.glob("*/masked/*.jpg"))
    assert counts["n_masked"] == n_masked and counts["n_masked_no_face"] >= 1
    assert any(f["image_id"].endswith("blank") and f["masked"] for f in results["failures"])
    summary = pd.read_csv(out / "summary.csv")
    conditions = set(summary.condition)
    assert {"clean", "masked", "inpainted/unet-gan-blind", "inpainted/opencv-telea"} <= conditions
    for _, row in summary.iterrows():
        assert 0 <= row.rank1 <= row.rank5 <= 1
        assert row.rank1_ci_low <= row.rank1 <= row.rank1_ci_high
    blind = summary[summary.condition == "inpainted/unet-gan-blind"]
    assert (blind.mask_found > 0.8).all()  # painted masks are found
    assert "psnr" not in summary.columns  # no ground truth, no pixel metrics
    page = (out / "report.html").read_text()
    assert "had no face detected" in page and "rank5" in page
    assert "without a detected face" in result.output


def test_real_mask_rerun_reuses_everything_and_gives_the_same_numbers(painted_run):
    out, _, path, _ = painted_run
    before = (out / "summary.csv").read_text()
    again = runner.invoke(app, ["evaluate", str(path), "--out", str(out), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert (out / "summary.csv").read_text() == before
    results = json.loads((out / "results.json").read_text())
    assert {s.get("n_computed", 0) for s in results["inpainters"].values()} == {0}


def test_validate_rejects_an_exact_hole_on_real_masks(painted_run, tmp_path):
    _, _, path, _ = painted_run
    protocol = yaml.safe_load(path.read_text())
    protocol["inpainters"].append({"type": "opencv-ns", "hole": "exact"})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(protocol))
    result = runner.invoke(app, ["validate", str(bad), "--no-files"])
    assert result.exit_code != 0 and "real masks have no exact hole" in result.output


def test_one_person_is_refused_with_one_line(painted_run, tmp_path):
    import shutil

    _, _, path, painted = painted_run
    person = sorted(p for p in painted.iterdir() if (p / "masked").is_dir())[1]
    shutil.copytree(person, tmp_path / "one" / person.name)
    protocol = yaml.safe_load(path.read_text())
    protocol["dataset"]["root"] = str(tmp_path / "one")
    single = tmp_path / "one.yaml"
    single.write_text(yaml.safe_dump(protocol))
    result = runner.invoke(
        app, ["evaluate", str(single), "--out", str(tmp_path / "o"), "--no-progress"]
    )
    assert result.exit_code != 0 and "one person only" in result.output
    assert "Traceback" not in result.output


def test_report_rebuilds_a_real_mask_run_from_its_tables(painted_run):
    out, _, _, _ = painted_run
    before = (out / "summary.csv").read_text()
    (out / "summary.csv").unlink()
    (out / "report.html").unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "summary.csv").read_text() == before
    assert "had no face detected" in (out / "report.html").read_text()
