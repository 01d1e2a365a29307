"""Bad input found in review: each gives one line (or a recorded failure), never a traceback."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from m2f_bench.cli.main import app
from m2f_bench.errors import M2FError
from m2f_bench.evaluation.protocol import ProtocolError, parse_protocol

runner = CliRunner()
MINIMAL = {
    "version": 1,
    "name": "t",
    "dataset": {"name": "demo"},
    "inpainters": [{"type": "masked"}],
}


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    text = result.output.strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    return text


def _write(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("weights", [5, ["a", "b"], ""])
def test_weights_that_are_not_a_path_are_refused_by_validate(tmp_path, weights):
    for kind in ("unet-gan", "unet-gan-blind"):
        data = {**MINIMAL, "inpainters": [{"type": kind, "weights": weights}]}
        text = _one_line_error(runner.invoke(app, ["validate", _write(tmp_path / "p.yaml", data)]))
        assert text.count("weights must be a path") == 1 and f"inpainter {kind!r}" in text


def test_missing_model_errors_name_the_protocol_file(tmp_path):
    data = {**MINIMAL, "inpainters": [{"type": "unet-gan", "weights": str(tmp_path / "no")}]}
    text = _one_line_error(runner.invoke(app, ["validate", _write(tmp_path / "p.yaml", data)]))
    assert text.startswith(f"error: {tmp_path / 'p.yaml'}: inpainters.0"), text
    assert "HoleSource" not in text


def test_binary_protocol_and_training_config_files_are_refused(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    for command in (["validate", str(binary)], ["evaluate", str(binary)]):
        assert "not a text file" in _one_line_error(runner.invoke(app, command))
    from m2f_bench.training.config import TrainConfigError, load_config

    with pytest.raises(TrainConfigError, match="not a text file"):
        load_config(binary)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [\n  a: b\n")
    with pytest.raises(TrainConfigError, match=r"YAML syntax error \(line \d+") as info:
        load_config(broken)
    assert "\n" not in str(info.value)


def test_protocol_names_cannot_leave_the_runs_folder_and_version_is_an_integer():
    for name in ("../../escape", "/abs/path", "a/b", ".."):
        with pytest.raises(ProtocolError, match="name"):
            parse_protocol({**MINIMAL, "name": name})
    with pytest.raises(ProtocolError, match="version: True is not supported"):
        parse_protocol({**MINIMAL, "version": True})


def test_a_damaged_card_is_one_line_and_does_not_hide_the_other_models(tmp_path, monkeypatch):
    from m2f_bench.inpainters.cards import find_model, read_card

    home = tmp_path / "models"
    for name, content in (("junk", b": : [\n"), ("binary", b"\xff\xfe\x00"), ("list", b"- a\n")):
        (home / name).mkdir(parents=True)
        (home / name / "card.yaml").write_bytes(content)
        with pytest.raises(M2FError) as info:
            read_card(home / name)
        assert "\n" not in str(info.value) and "card.yaml" in str(info.value)
    monkeypatch.setenv("M2F_MODEL_HOME", str(home))
    # The checkout's models/ are still found past the three damaged cards.
    assert find_model("unet-gan").name == "unet-gan-lfw128"
    listed = runner.invoke(app, ["list", "models"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("skipped:") == 3 and "inpainter: unet-gan;" in listed.output


def test_model_home_option_reaches_model_lookup_and_is_restored(tmp_path, monkeypatch):
    monkeypatch.delenv("M2F_MODEL_HOME", raising=False)
    home = tmp_path / "home"
    (home / "mine").mkdir(parents=True)
    (home / "mine" / "card.yaml").write_text("inpainter: unet-gan\nweights: gone.safetensors\n")
    protocol = _write(tmp_path / "p.yaml", {**MINIMAL, "inpainters": [{"type": "unet-gan"}]})
    text = _one_line_error(runner.invoke(app, ["validate", protocol, "--model-home", str(home)]))
    assert str(home / "mine" / "gone.safetensors") in text
    assert "M2F_MODEL_HOME" not in os.environ


def test_report_on_damaged_tables_is_one_line(tmp_path):
    from m2f_bench.evaluation.report import rebuild

    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text("[]")
    (run / "per_image.csv").write_text("a,b,c\n1,2,3\n")
    (run / "pair_scores.csv").write_text("inpainter,a,b,identity_a\n")
    with pytest.raises(M2FError, match="not a mapping"):
        rebuild(run)
    (run / "results.json").write_text(
        json.dumps({"protocol": {}, "inpainters": [], "recognizers": [], "metrics": ["psnr"]})
    )
    text = _one_line_error(runner.invoke(app, ["report", str(run)]))
    assert f"cannot read the evaluation in {run}" in text


def test_segmenter_thresholds_of_the_wrong_type_name_the_argument():
    from m2f_bench.segmenters import Segmenter

    class Plain(Segmenter):
        def probabilities(self, images):  # pragma: no cover - never called
            raise AssertionError

    for kwargs, key in (({"threshold": "x"}, "threshold"), ({"min_coverage": "y"}, "min_coverage")):
        with pytest.raises(M2FError, match=key):
            Plain(**kwargs)


def test_unmask_refuses_an_output_folder_it_cannot_write_before_loading_models(tmp_path):
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"whatever")
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "below"):
        result = runner.invoke(app, ["unmask", str(photo), "--out", str(out), "--no-progress"])
        assert "cannot create the output folder" in _one_line_error(result)


def test_fit_gap_names_what_is_missing_and_reads_model_folders(tmp_path):
    from m2f_bench.training.fitgap import learned_inpainter

    with pytest.raises(M2FError, match="no such inpainter, weights file or folder"):
        learned_inpainter(str(tmp_path / "nothing"))
    shutil.copytree(
        os.path.join(os.path.dirname(__file__), "..", "models", "unet-gan-lfw128"),
        tmp_path / "copy",
    )
    assert learned_inpainter(str(tmp_path / "copy")).weights_path.is_file()


@pytest.mark.parametrize(
    ("kind", "args", "key"),
    [
        ("unet-gan", {"batch_size": 0}, "batch_size"),
        ("unet-gan", {"batch_size": "x"}, "batch_size"),
        ("baseline-gan", {"flip_tta": "yes"}, "flip_tta"),
        ("unet-gan", {"size": -1}, "size"),
        ("unet-gan", {"device": "tpu"}, "device"),
        ("unet-gan-blind", {"threshold": "x"}, "threshold"),
        ("unet-gan-blind", {"dilate": -3}, "dilate"),
        ("unet-gan-blind", {"min_coverage": 5}, "min_coverage"),
    ],
)
def test_validate_checks_argument_values_without_loading_models(tmp_path, kind, args, key):
    from m2f_bench.evaluation.check import check_protocol

    protocol = parse_protocol({**MINIMAL, "inpainters": [{"type": kind, **args}]})
    with pytest.raises(ProtocolError, match=rf"inpainters\.0.*{key}"):
        check_protocol(protocol, "p.yaml")
    text = _one_line_error(
        runner.invoke(
            app,
            [
                "validate",
                "--no-files",
                _write(tmp_path / "p.yaml", {**MINIMAL, "inpainters": [{"type": kind, **args}]}),
            ],
        )
    )
    assert key in text


def test_a_bad_hole_mode_is_reported_once(tmp_path):
    data = {**MINIMAL, "inpainters": [{"type": "opencv-telea", "hole": "maybe"}]}
    text = _one_line_error(runner.invoke(app, ["validate", _write(tmp_path / "p.yaml", data)]))
    assert text.count("hole must be one of") == 1, text
