from __future__ import annotations

from pathlib import Path

import pytest

from m2f_bench.evaluation.check import check_protocol
from m2f_bench.evaluation.protocol import ProtocolError, load_protocol, parse_protocol

# Training configs (train-*.yaml) live beside the protocols; tests/test_training.py checks them.
PROTOCOLS = sorted(
    p
    for p in (Path(__file__).parents[1] / "protocols").glob("*.yaml")
    if not p.name.startswith("train-")
)
MINIMAL = {
    "version": 1,
    "name": "t",
    "dataset": {"name": "demo"},
    "inpainters": [{"type": "masked"}],
}


def _with(**changes):
    return {**MINIMAL, **changes}


def test_every_shipped_protocol_validates():
    assert {p.stem for p in PROTOCOLS} >= {
        "lfw-masked",
        "lfw-quick",
        "lfw-all",
        "celebahq-masked",
        "demo",
    }
    for path in PROTOCOLS:
        check_protocol(load_protocol(path), str(path))


def test_unknown_keys_are_rejected_with_their_path():
    with pytest.raises(ProtocolError) as info:
        parse_protocol(_with(dataset={"name": "lfw", "splitt": "test"}, colour="red"), "p.yaml")
    message = str(info.value)
    assert message.startswith("p.yaml: ")
    assert "dataset.splitt: unknown key" in message and "colour: unknown key" in message
    assert "\n" not in message


def test_bad_values_name_the_key():
    with pytest.raises(ProtocolError, match=r"faces\.size: Input should be greater"):
        parse_protocol(_with(faces={"size": 8}))
    with pytest.raises(ProtocolError, match=r"verification\.fars"):
        parse_protocol(_with(verification={"fars": [2.0]}))
    with pytest.raises(ProtocolError, match=r"verification\.scenarios\.0"):
        parse_protocol(_with(verification={"scenarios": ["clean-dirty"]}))


def test_version_is_required_and_checked():
    data = dict(MINIMAL)
    del data["version"]
    with pytest.raises(ProtocolError, match="version: missing"):
        parse_protocol(data)
    with pytest.raises(ProtocolError, match="version: 7 is not supported"):
        parse_protocol(_with(version=7))


def test_environment_variables_are_expanded(monkeypatch):
    monkeypatch.setenv("M2F_TEST_ROOT", "/data/faces")
    monkeypatch.setenv("M2F_TEST_PAIRS", "120")
    p = parse_protocol(
        _with(
            dataset={
                "name": "folder",
                "root": "${M2F_TEST_ROOT}/x",
                "limit_pairs": "${M2F_TEST_PAIRS}",
            }
        )
    )
    assert str(p.dataset.root) == "/data/faces/x" and p.dataset.limit_pairs == 120
    p = parse_protocol(_with(dataset={"name": "folder", "root": "${M2F_TEST_UNSET_X:-}"}))
    assert p.dataset.root is None
    with pytest.raises(
        ProtocolError, match=r"dataset\.root: environment variable M2F_TEST_UNSET_X"
    ):
        parse_protocol(_with(dataset={"name": "folder", "root": "${M2F_TEST_UNSET_X}"}))


def test_duplicate_plugin_names_are_rejected():
    with pytest.raises(ProtocolError, match="names must be unique"):
        parse_protocol(_with(inpainters=[{"type": "masked"}, {"type": "masked"}]))
    p = parse_protocol(_with(inpainters=[{"type": "masked"}, {"type": "masked", "name": "m2"}]))
    assert [i.label for i in p.inpainters] == ["masked", "m2"]


def test_check_protocol_finds_bad_names_and_arguments():
    with pytest.raises(ProtocolError, match=r"inpainters\.0: unknown inpainter 'opencv-tela'"):
        check_protocol(parse_protocol(_with(inpainters=[{"type": "opencv-tela"}])))
    with pytest.raises(ProtocolError, match=r"inpainters\.0: .*no argument 'radus'"):
        check_protocol(parse_protocol(_with(inpainters=[{"type": "opencv-telea", "radus": 2}])))
    with pytest.raises(ProtocolError, match=r"recognizers\.0: .*no argument 'modle'"):
        check_protocol(parse_protocol(_with(recognizers=[{"type": "arcface-onnx", "modle": "x"}])))
    with pytest.raises(ProtocolError, match=r"dataset\.options: .*no argument 'pairs_per_folds'"):
        check_protocol(
            parse_protocol(_with(dataset={"name": "folder", "options": {"pairs_per_folds": 3}}))
        )
    with pytest.raises(ProtocolError, match=r"masks\.types\.0: unknown mask type"):
        check_protocol(parse_protocol(_with(masks={"types": ["surgicl_blue"]})))
    with pytest.raises(ProtocolError, match=r"metrics\.0: id_sim needs a recognizer"):
        check_protocol(parse_protocol(_with(metrics=["id_sim"])))


def test_yaml_syntax_errors_give_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: [unclosed\n")
    with pytest.raises(ProtocolError, match=r"YAML syntax error \(line \d+"):
        load_protocol(bad)
    with pytest.raises(ProtocolError, match="protocol file not found"):
        load_protocol(tmp_path / "missing.yaml")
