"""`m2f-bench evaluate` and `report` end to end on the demo faces (offline, dlib only)."""

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
from m2f_bench.evaluation.schema import SUMMARY_COLUMNS

runner = CliRunner()

BROKEN = '''
import numpy as np

class Broken:
    """Fails on every batch, like a plug-in with a bug."""

    def inpaint(self, images, holes):
        raise RuntimeError("model exploded")
'''


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo protocol on 4 faces, plus an inpainter that fails."""
    root = tmp_path_factory.mktemp("eval")
    (root / "broken_inpainter.py").write_text(BROKEN)
    protocol = yaml.safe_load(Path("protocols/demo.yaml").read_text())
    protocol["inpainters"] = [
        {"type": "masked"},
        {"type": "opencv-telea"},
        {"type": "python", "name": "broken", "target": "broken_inpainter:Broken"},
    ]
    path = root / "demo.yaml"
    path.write_text(yaml.safe_dump(protocol))
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(root))
    mp.setenv("M2F_DATA_HOME", str(root / "data"))
    mp.setenv("M2F_MODEL_HOME", str(root / "models"))
    mp.setenv("M2F_OFFLINE", "1")
    out = root / "run"
    args = [
        "evaluate",
        str(path),
        "--out",
        str(out),
        "--limit",
        "4",
        "--no-progress",
        "--workers",
        "1",
    ]
    first = runner.invoke(app, args)
    second = runner.invoke(app, args)
    yield out, first, second, args
    mp.undo()


def test_evaluate_writes_every_output(demo_run):
    out, first, _, _ = demo_run
    assert first.exit_code == 0, first.output
    for name in ("results.json", "summary.csv", "per_image.csv", "pair_scores.csv", "report.html"):
        assert (out / name).is_file(), name
    summary = pd.read_csv(out / "summary.csv")
    assert tuple(summary.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    per_image = pd.read_csv(out / "per_image.csv")
    assert set(per_image.inpainter) == {"masked", "opencv-telea"}
    assert (per_image.groupby("inpainter").size() == 4).all()
    # Inpainting recovers pixels: Telea beats leaving the mask on, in the hole.
    means = per_image.groupby("inpainter")[["psnr_hole", "ssim"]].mean()
    assert means.loc["opencv-telea", "psnr_hole"] > means.loc["masked", "psnr_hole"] + 2
    assert per_image["id_sim.dlib"].between(-1, 1).all()


def test_outputs_are_composited_and_the_masked_baseline_is_the_input(demo_run):
    out, *_ = demo_run
    results = json.loads((out / "results.json").read_text())
    for sample in results["samples"]:
        image_id, mask_type = sample["image_id"], sample["mask_type"]
        masked = np.asarray(Image.open(out / f"prepared/masked/{mask_type}/{image_id}.png"))
        hole = np.asarray(Image.open(out / f"prepared/holes/{mask_type}/{image_id}.png")) > 127
        telea = np.asarray(Image.open(out / f"inpainted/opencv-telea/{image_id}.png"))
        assert np.array_equal(telea[~hole], masked[~hole])
        assert not np.array_equal(telea[hole], masked[hole])
        assert np.array_equal(
            np.asarray(Image.open(out / f"inpainted/masked/{image_id}.png")), masked
        )


def test_a_failing_inpainter_gets_an_error_row_and_the_rest_goes_on(demo_run):
    out, first, _, _ = demo_run
    results = json.loads((out / "results.json").read_text())
    state = results["inpainters"]["broken"]
    assert state["status"] == "error" and "model exploded" in state["error"]
    rows = {r["inpainter"]: r for r in results["summary"]}
    assert rows["broken"]["status"] == "error" and rows["opencv-telea"]["status"] == "ok"
    assert "broken" in first.stdout and "model exploded" in first.stdout


def test_results_record_provenance(demo_run):
    out, *_ = demo_run
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"]["name"] == "demo"
    assert results["m2f_bench_version"] and results["environment"]["python"]
    if Path("/proc/cpuinfo").is_file():  # the instruction sets that pick the kernels
        flags = Path("/proc/cpuinfo").read_text()
        simd = results["environment"]["cpu_simd"].split()
        assert ("avx2" in simd) == (" avx2" in flags) and set(simd) <= set(flags.split())
    assert results["dataset"]["n_images"] == 4
    assert {"prepare", "inpaint", "embed", "metrics", "total"} <= set(results["timings"])
    assert results["metrics"]["ssim"]["higher_is_better"] is True
    assert results["metrics"]["l1_hole"]["higher_is_better"] is False
    assert "verification" in results["method"]


def test_rerun_resumes_and_reproduces_every_number(demo_run):
    out, first, second, _ = demo_run
    assert second.exit_code == 0, second.output
    results = json.loads((out / "results.json").read_text())
    assert results["inpainters"]["opencv-telea"]["n_computed"] == 0  # nothing redone
    first_table = first.stdout.split("report:")[0]
    assert second.stdout.split("report:")[0] == first_table


def test_a_resumed_run_reports_what_computing_the_reused_outputs_cost(demo_run):
    out, _, second, _ = demo_run
    assert second.exit_code == 0, second.output
    timing = json.loads((out / "inpainted" / "opencv-telea" / "timing.json").read_text())
    assert timing["n_computed"] == 4 and timing["seconds"] > 0
    state = json.loads((out / "results.json").read_text())["inpainters"]["opencv-telea"]
    # The second run computed nothing; it reports the first run's cost, and says so.
    assert state["n_computed"] == 0 and state["n_reused"] == 4
    assert state["seconds"] == timing["seconds"]
    assert state["images_per_second"] == pytest.approx(4 / timing["seconds"], rel=1e-2)


def test_report_names_no_split_for_the_demo_and_shows_the_masked_input_once(demo_run):
    import re

    out, *_ = demo_run
    html = (out / "report.html").read_text()
    assert "test split" not in html
    grid = html[html.index("Sample faces") :]
    header = re.findall(r"<th>([^<]*)</th>", grid.split("</thead>", 1)[0])
    assert header == ["", "masked input", "opencv-telea", "original"], header


def test_report_rebuilds_from_saved_files(demo_run):
    out, *_ = demo_run
    before = (out / "summary.csv").read_text()
    (out / "summary.csv").unlink()
    (out / "report.html").unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "summary.csv").read_text() == before
    assert "opencv-telea" in (out / "report.html").read_text()


def test_missing_lfw_points_to_the_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("M2F_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("M2F_OFFLINE", "1")
    result = runner.invoke(
        app, ["evaluate", "protocols/lfw-quick.yaml", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "lfw" in message and "protocols/demo.yaml" in message


def test_changed_inpainter_arguments_redo_outputs_and_embeddings(demo_run, tmp_path):
    out, _, _, args = demo_run
    protocol = yaml.safe_load(Path(args[1]).read_text())
    protocol["inpainters"][1]["radius"] = 9  # opencv-telea
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(protocol))
    before = json.loads((out / "results.json").read_text())
    result = runner.invoke(app, ["evaluate", str(changed), *args[2:]])
    assert result.exit_code == 0, result.output
    after = json.loads((out / "results.json").read_text())
    assert after["inpainters"]["opencv-telea"]["n_computed"] == 4
    assert after["inpainters"]["masked"]["n_computed"] == 0

    def telea(r, key):
        return next(x[key] for x in r["summary"] if x["inpainter"] == "opencv-telea")

    assert telea(after, "psnr_hole") != telea(before, "psnr_hole")
    assert telea(after, "id_sim") != telea(before, "id_sim")  # embeddings were not reused
    # Restore the folder for the other tests of this module.
    assert runner.invoke(app, args).exit_code == 0


def test_device_is_passed_only_to_plugins_that_take_it():
    from m2f_bench.evaluation.runner import _device_arg
    from m2f_bench.inpainters import INPAINTERS
    from m2f_bench.recognition import RECOGNIZERS

    assert _device_arg(INPAINTERS.get("opencv-telea"), {}, "cuda") == {}
    assert _device_arg(RECOGNIZERS.get("dlib-resnet"), {}, "cuda") == {}
    assert _device_arg(RECOGNIZERS.get("arcface-onnx"), {}, "cuda") == {"device": "cuda"}
    assert _device_arg(RECOGNIZERS.get("arcface-onnx"), {"device": "cpu"}, "cuda") == {}


def test_every_inpainter_failing_still_writes_results(tmp_path, monkeypatch):
    (tmp_path / "broken_inpainter.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("M2F_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("M2F_OFFLINE", "1")
    protocol = yaml.safe_load(Path("protocols/demo.yaml").read_text())
    protocol["inpainters"] = [
        {"type": "python", "name": "broken", "target": "broken_inpainter:Broken"}
    ]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(protocol))
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(path),
            "--out",
            str(out),
            "--limit",
            "2",
            "--no-progress",
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert [r["status"] for r in summary] == ["error"]
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0


@pytest.mark.data
def test_lfw_quick_subset_end_to_end(lfw_home, model_home, tmp_path):
    out = tmp_path / "quick"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "protocols/lfw-quick.yaml",
            "--out",
            str(out),
            "--limit",
            "60",
            "--no-progress",
            "--data-home",
            str(lfw_home),
            "--model-home",
            str(model_home),
            "--offline",
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"]["n_failed_images"] == 0
    pairs = pd.read_csv(out / "pair_scores.csv")
    clean = pairs[pairs.scenario == "clean-clean"]
    assert sorted(clean.fold.unique()) == [6, 7, 8, 9, 10]
    assert clean.same.sum() == (~clean.same).sum()  # balanced
    rows = {r["inpainter"]: r for r in results["summary"]}
    assert rows["masked"]["acc_clean_clean"] >= 0.9
    # Matched pairs score higher clean than with one face masked.
    same = pairs[pairs.same]
    assert (
        same[same.scenario == "clean-clean"].score.mean()
        > same[same.scenario == "masked-clean"].score.mean()
    )


def test_a_face_whose_mask_fails_is_a_failure_and_the_run_goes_on(tmp_path, monkeypatch):
    from m2f_bench import masks

    real = masks.apply_mask
    state = {"failed": None}

    def flaky(crop, landmarks, mask_type, *, image_id, seed=0):
        if state["failed"] in (None, image_id):  # the first face asked for, and only it
            state["failed"] = image_id
            raise ValueError("cannot convert float NaN to integer")
        return real(crop, landmarks, mask_type, image_id=image_id, seed=seed)

    monkeypatch.setattr(masks, "apply_mask", flaky)
    monkeypatch.setenv("M2F_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("M2F_MODEL_HOME", str(tmp_path / "models"))
    monkeypatch.setenv("M2F_OFFLINE", "1")
    out = tmp_path / "run"
    args = ["evaluate", "protocols/demo.yaml", "--out", str(out), "--limit", "3"]
    result = runner.invoke(app, [*args, "--no-progress", "--workers", "1"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    failed = [f["image_id"] for f in results["failures"]]
    assert failed == [state["failed"]]
    assert "ValueError: cannot convert float NaN to integer" in results["failures"][0]["reason"]
    assert results["dataset"]["n_failed_images"] == 1
    per_image = pd.read_csv(out / "per_image.csv")
    assert state["failed"] not in set(per_image.image_id) and len(set(per_image.image_id)) == 2


def test_id_sim_is_computed_when_the_protocol_lists_no_metrics(tmp_path, monkeypatch):
    protocol = yaml.safe_load(Path("protocols/demo.yaml").read_text())
    del protocol["metrics"]
    protocol["inpainters"] = [{"type": "masked"}]
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(protocol))
    monkeypatch.setenv("M2F_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("M2F_MODEL_HOME", str(tmp_path / "models"))
    monkeypatch.setenv("M2F_OFFLINE", "1")
    out = tmp_path / "run"
    args = ["evaluate", str(path), "--out", str(out), "--limit", "2", "--no-progress"]
    result = runner.invoke(app, [*args, "--workers", "1"])
    assert result.exit_code == 0, result.output
    per_image = pd.read_csv(out / "per_image.csv")
    assert per_image["id_sim.dlib"].notna().all() and len(per_image) == 2
    assert {"psnr", "ssim_hole"} <= set(per_image.columns)


def test_two_runs_from_scratch_write_byte_identical_tables(tmp_path, monkeypatch):
    protocol = yaml.safe_load(Path("protocols/demo.yaml").read_text())
    protocol["inpainters"] = [{"type": "masked"}, {"type": "opencv-telea"}]
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(protocol))
    monkeypatch.setenv("M2F_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("M2F_MODEL_HOME", str(tmp_path / "models"))
    monkeypatch.setenv("M2F_OFFLINE", "1")
    for name in ("a", "b"):
        args = ["evaluate", str(path), "--out", str(tmp_path / name), "--limit", "3"]
        result = runner.invoke(app, [*args, "--no-progress", "--workers", "1"])
        assert result.exit_code == 0, result.output
    for table in ("summary.csv", "per_image.csv"):
        assert (tmp_path / "a" / table).read_bytes() == (tmp_path / "b" / table).read_bytes()
    assert "seconds" not in pd.read_csv(tmp_path / "a" / "summary.csv").columns
