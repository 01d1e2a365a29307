"""Recognizers plug in like inpainters: any ArcFace-family ONNX model, python targets, entry points.

The ONNX models are built here, each a few nodes that show exactly what the network was
fed: ``Flatten`` returns the input blob itself, ``GlobalAveragePool`` its channel means.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from m2f_bench.cli.main import app
from m2f_bench.errors import M2FError
from m2f_bench.evaluation.check import check_protocol
from m2f_bench.evaluation.protocol import ProtocolError, parse_protocol
from m2f_bench.faces.align import ARCFACE_TEMPLATE, ChipSpec, CropGeometry, transform_points
from m2f_bench.recognition import RECOGNIZERS, Recognizer, build_recognizer
from m2f_bench.recognition.base import l2_normalise

GEOMETRY = CropGeometry(128)


def onnx_model(path, shape, op="Flatten"):
    """A one-node model: ``Flatten`` (output = the input blob) or ``GlobalAveragePool``."""
    import onnx
    from onnx import TensorProto, helper

    out_shape = ["n", None] if op == "Flatten" else ["n", 3, 1, 1]
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def recognizer(tmp_path, shape, op="Flatten", name="m.onnx", **options):
    path = onnx_model(tmp_path / name, shape, op)
    return build_recognizer({"type": "arcface-onnx", "model": str(path), **options}, None)


@pytest.fixture(scope="module")
def crops():
    return np.random.default_rng(0).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)


def normalised(chips, mean=127.5, std=127.5):
    """What insightface's rule feeds a graph without a preset: (x − 127.5) / 127.5."""
    return (chips.astype(np.float32) - np.float32(mean)) / np.float32(std)


# --- arcface-onnx: chip size and window --------------------------------------------------


def test_112x96_model_sees_columns_8_to_104_of_the_arcface_chip(tmp_path, crops):
    rec = recognizer(tmp_path, ["n", 3, 112, 96], mirror="none")
    assert rec.chip == ChipSpec((112, 96), (8.0, 0.0, 104.0, 112.0))
    config = rec.config()
    assert config["chip_size"] == [112, 96] and config["chip_window"] == [8.0, 0.0, 104.0, 112.0]
    assert config["layout"] == "nchw" and config["mirror"] == "none"
    assert rec.embedding_dim == 3 * 112 * 96

    window = GEOMETRY.chip(crops)[:, :, 8:104]  # the 112×112 chip, columns 8–104
    expected = l2_normalise(normalised(window).transpose(0, 3, 1, 2).reshape(3, -1))
    np.testing.assert_allclose(rec.embed(crops, GEOMETRY), expected, atol=1e-6)
    # Another window would have given other pixels.
    shifted = GEOMETRY.chip(crops)[:, :, 0:96]
    wrong = l2_normalise(normalised(shifted).transpose(0, 3, 1, 2).reshape(3, -1))
    assert not np.allclose(rec.embed(crops, GEOMETRY), wrong, atol=1e-3)


def test_an_explicit_window_is_cut_from_the_crop(tmp_path, crops):
    # insightface's 128×128 convention: the template shifted right by 8 px, unscaled.
    rec = recognizer(tmp_path, ["n", 3, "h", "w"], mirror="none", chip_window=[-8, 0, 120, 128])
    assert rec.chip.size == (128, 128)  # from the window: the input size is free
    blob = rec.blob(GEOMETRY.chip(crops, rec.chip))
    assert blob.shape == (3, 3, 128, 128)
    # Columns 8–120 and rows 0–112 of this chip are the 112×112 chip (a warp with another
    # shift, so up to one grey level of rounding); one column off is far from it.
    chip, arcface = GEOMETRY.chip(crops, rec.chip).astype(int), GEOMETRY.chip(crops).astype(int)
    assert np.abs(chip[:, :112, 8:120] - arcface).max() <= 1
    assert np.abs(chip[:, :112, 9:121] - arcface).mean() > 20


@pytest.mark.parametrize("size", [(28, 24), (224, 224)])
def test_scaled_chips_put_the_template_points_where_insightface_does(size):
    spec = ChipSpec.centred(*size)
    scale = size[0] / 112
    assert spec.scale == pytest.approx(scale)
    points = transform_points(GEOMETRY.template, GEOMETRY.chip_matrix_for(spec))
    expected = (ARCFACE_TEMPLATE - np.array(spec.window[:2])) * scale
    np.testing.assert_allclose(points, expected, atol=1e-9)
    assert GEOMETRY.chip(np.zeros((2, 128, 128, 3), np.uint8), spec).shape == (2, *size, 3)


def test_default_chip_matrix_is_unchanged():
    cx, cy = 56.0, 64.0
    expected = np.array([[1.25, 0.0, cx - 80.0], [0.0, 1.25, cy - 80.0]])
    np.testing.assert_array_equal(CropGeometry(128).chip_matrix, expected)


# --- arcface-onnx: layout, colour, normalisation ------------------------------------------


def test_nhwc_layout_is_read_from_the_input_shape(tmp_path, crops):
    rec = recognizer(tmp_path, ["n", "h", "w", 3], mirror="none")
    assert rec.layout == "nhwc" and rec.chip.size == (112, 112)
    expected = l2_normalise(normalised(GEOMETRY.chip(crops)).reshape(3, -1))  # H, W, C order
    np.testing.assert_allclose(rec.embed(crops, GEOMETRY), expected, atol=1e-6)
    assert rec.config()["layout"] == "nhwc"


def test_layout_defaults_to_nchw_when_the_shape_cannot_tell(tmp_path):
    rec = recognizer(tmp_path, ["n", "c", "h", "w"])
    assert rec.layout == "nchw" and rec.chip.size == (112, 112)
    assert recognizer(tmp_path, ["n", "c", "h", "w"], layout="nhwc").layout == "nhwc"


def colour_crops(rgb):
    return np.broadcast_to(np.array(rgb, np.uint8), (2, 128, 128, 3)).copy()


def test_channel_order_and_per_channel_normalisation(tmp_path):
    crops = colour_crops((200, 100, 50))
    kw = {"op": "GlobalAveragePool", "mirror": "none", "input_mean": 0, "input_std": 1}
    rgb = recognizer(tmp_path, ["n", 3, 112, 112], color="rgb", **kw)
    bgr = recognizer(tmp_path, ["n", 3, 112, 112], color="bgr", **kw)
    np.testing.assert_allclose(rgb.embed(crops, GEOMETRY)[0], l2_normalise([200, 100, 50]), 1e-6)
    np.testing.assert_allclose(bgr.embed(crops, GEOMETRY)[0], l2_normalise([50, 100, 200]), 1e-6)
    assert rgb.key != bgr.key

    # Per-channel mean and std apply in the model's channel order (here B, G, R).
    per_channel = recognizer(
        tmp_path,
        ["n", 3, 112, 112],
        op="GlobalAveragePool",
        mirror="none",
        color="bgr",
        input_mean=[10, 20, 30],
        input_std=[2, 4, 5],
    )
    expected = l2_normalise([(50 - 10) / 2, (100 - 20) / 4, (200 - 30) / 5])
    np.testing.assert_allclose(per_channel.embed(crops, GEOMETRY)[0], expected, 1e-6)
    config = per_channel.config()
    assert config["input_mean"] == [10.0, 20.0, 30.0] and config["input_std"] == [2.0, 4.0, 5.0]
    assert config["color"] == "bgr"


# --- arcface-onnx: mirror handling ---------------------------------------------------------


def test_mirror_sum_concat_and_none(tmp_path, crops):
    shape = ["n", 3, 28, 24]  # small, so the flattened blob stays short
    runs = {m: recognizer(tmp_path, shape, mirror=m) for m in ("sum", "concat", "none")}
    chips = GEOMETRY.chip(crops, ChipSpec.centred(28, 24))
    plain = normalised(chips).transpose(0, 3, 1, 2).reshape(3, -1)
    mirrored = normalised(chips[:, :, ::-1]).transpose(0, 3, 1, 2).reshape(3, -1)
    expected = {
        "sum": l2_normalise(plain + mirrored),
        "concat": l2_normalise(np.concatenate([plain, mirrored], 1)),
        "none": l2_normalise(plain),
    }
    d = 3 * 28 * 24
    assert {m: r.embedding_dim for m, r in runs.items()} == {"sum": d, "concat": 2 * d, "none": d}
    for mirror, rec in runs.items():
        emb = rec.embed(crops, GEOMETRY)
        assert emb.shape == (3, rec.embedding_dim)
        np.testing.assert_allclose(emb, expected[mirror], atol=1e-6, err_msg=mirror)
    assert len({r.key for r in runs.values()}) == 3


def test_default_config_records_the_arcface_convention(tmp_path):
    config = recognizer(tmp_path, ["n", 3, 112, 112]).config()
    assert {k: v for k, v in config.items() if k != "model_sha256"} == {
        "model": "m.onnx",
        "chip_size": [112, 112],
        "chip_window": [0.0, 0.0, 112.0, 112.0],
        "layout": "nchw",
        "input_mean": 127.5,
        "input_std": 127.5,
        "color": "rgb",
        "mirror": "sum",
    }


# --- arcface-onnx: wrong and contradictory options -----------------------------------------


@pytest.mark.parametrize(
    ("shape", "options", "match"),
    [
        (["n", 3, 112, 96], {"mirror": "avg"}, "mirror must be one of sum, concat, none"),
        (["n", 3, 112, 96], {"layout": "nhwc"}, "layout nhwc does not fit"),
        (["n", 3, 112, 96], {"chip_size": 112}, r"chip 112×112 \(chip_size\) does not fit"),
        (["n", 3, 112, 96], {"chip_window": [0, 0, 112, 112]}, "aspect ratio"),
        (["n", 3, "h", "w"], {"chip_window": [-30, 0, 82, 112]}, "outside the aligned crop"),
        (["n", 3, "h", "w"], {"chip_window": [0, 0, 100.5, 112]}, "give chip_size"),
        (["n", 3, "h", "w"], {"chip_size": [112, 0]}, "chip_size must be"),
        (["n", 3, "h", "w"], {"input_std": [1, 0, 1]}, "input_std must be > 0"),
        (["n", 3, "h", "w"], {"input_mean": [1, 2]}, "input_mean must be a number or 3"),
        (["n", 3, "h", "w"], {"color": "gray"}, "color must be one of rgb, bgr"),
        (["n", 4, 112, 112], {}, "not a batch of 3-channel images"),
        (["n", 4, "h", "w"], {}, "cannot tell the layout"),
        (["n", 4, "h", "w"], {"layout": "nchw"}, "layout nchw does not fit"),
        (["n", 3, 112], {}, "needs a 4-d image input"),
    ],
)
def test_bad_options_give_one_clear_line(tmp_path, shape, options, match):
    with pytest.raises(M2FError, match=match) as info:
        recognizer(tmp_path, shape, **options)
    assert "\n" not in str(info.value) and str(info.value).startswith("arcface-onnx ")


# --- validate ------------------------------------------------------------------------------

MINIMAL = {
    "version": 1,
    "name": "t",
    "dataset": {"name": "demo"},
    "inpainters": [{"type": "masked"}],
}


def check(*recognizers):
    check_protocol(parse_protocol({**MINIMAL, "recognizers": list(recognizers)}), "p.yaml")


def test_validate_accepts_the_new_options_and_rejects_bad_values():
    check(
        {
            "type": "arcface-onnx",
            "name": "mobilefacenet-112x96",
            "model": "never-opened.onnx",
            "chip_size": [112, 96],
            "chip_window": [8, 0, 104, 112],
            "layout": "nchw",
            "color": "rgb",
            "input_mean": 127.5,
            "input_std": 128,
            "mirror": "concat",
        }
    )
    with pytest.raises(ProtocolError, match=r"p\.yaml: recognizers\.0: .*mirror must be one of"):
        check({"type": "arcface-onnx", "mirror": "average"})
    with pytest.raises(ProtocolError, match=r"recognizers\.0: .*aspect ratio"):
        check({"type": "arcface-onnx", "chip_size": [112, 96], "chip_window": [0, 0, 112, 112]})
    with pytest.raises(ProtocolError, match=r"recognizers\.0: .*no argument 'mirrors'"):
        check({"type": "arcface-onnx", "mirrors": "sum"})


def test_validate_command_on_a_protocol_with_the_new_options(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(
        textwrap.dedent(
            """
            version: 1
            name: t
            dataset: {name: demo}
            inpainters: [{type: masked}]
            recognizers:
              - {type: arcface-onnx, model: m.onnx, chip_size: [112, 96], mirror: none}
              - type: python
                target: test_recognizer_plugins:ChannelMeans
                args: {scale: 2}
            """
        )
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("mirror: none", "mirror: flip"))
    result = CliRunner().invoke(app, ["validate", "--no-files", str(good)])
    assert result.exit_code == 0 and ": ok" in result.stdout, result.output
    result = CliRunner().invoke(app, ["validate", "--no-files", str(bad)])
    assert result.exit_code == 2 and "recognizers.0" in result.stderr and "flip" in result.stderr


# --- python type ---------------------------------------------------------------------------


class ChannelMeans(Recognizer):
    """Channel means of the crop, times ``scale`` (so that scale changes nothing but config)."""

    name = "channel-means"
    embedding_dim = 3

    def __init__(self, scale: float = 1.0, settings=None) -> None:
        self.scale = scale
        self.settings = settings

    def config(self):
        return {"scale": self.scale}

    def embed(self, crops, geometry, landmarks=None):
        return l2_normalise(crops.reshape(len(crops), -1, 3).mean(1) * self.scale)


class WrongShape(ChannelMeans):
    def embed(self, crops, geometry, landmarks=None):
        return np.zeros((len(crops), 5), np.float32)


class NotARecognizer:
    def embed(self, crops, geometry, landmarks=None):  # pragma: no cover - never built
        return crops


def target(cls: type) -> str:
    return f"{__name__}:{cls.__qualname__}"


def test_python_target_is_built_with_its_args_and_recorded(offline_settings):
    rec = build_recognizer(
        {"type": "python", "target": target(ChannelMeans), "args": {"scale": 2.0}},
        offline_settings,
    )
    assert rec.recognizer.scale == 2.0 and rec.recognizer.settings is offline_settings
    assert rec.embedding_dim == 3
    crops = colour_crops((30, 40, 0))
    np.testing.assert_allclose(rec.embed(crops, GEOMETRY), [[0.6, 0.8, 0.0]] * 2, atol=1e-6)
    assert rec.config() == {"target": target(ChannelMeans), "config": {"scale": 2.0}}
    other = build_recognizer({"type": "python", "target": target(ChannelMeans)}, offline_settings)
    assert other.key != rec.key


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"target": target(NotARecognizer)}, "is a type, not a subclass of .*Recognizer"),
        ({"target": f"{__name__}:l2_normalise"}, "is a function, not a subclass"),
        ({"target": "surely_not_a_module_xyz:Thing"}, "cannot import"),
        ({"target": target(ChannelMeans), "args": {"scael": 2}}, "did you mean 'scale'"),
        ({"target": target(ChannelMeans), "args": [2]}, "args must map argument names"),
    ],
)
def test_python_target_errors(offline_settings, spec, match):
    with pytest.raises(M2FError, match=match) as info:
        build_recognizer({"type": "python", **spec}, offline_settings)
    assert "\n" not in str(info.value)
    # validate finds the same problem without building anything.
    with pytest.raises(ProtocolError, match=match):
        check({"type": "python", **spec})


def test_python_target_returning_the_wrong_shape_is_an_error(offline_settings):
    rec = build_recognizer({"type": "python", "target": target(WrongShape)}, offline_settings)
    with pytest.raises(M2FError, match=r"returned float32 \(2, 5\); expected embeddings \(2, 3\)"):
        rec.embed(colour_crops((1, 2, 3)), GEOMETRY)


# --- entry points --------------------------------------------------------------------------


@pytest.fixture
def fake_distribution(plugin_distribution):
    """An installed-looking distribution declaring two recognizers, found afresh."""
    plugin_distribution(
        "fake_rec_pkg",
        '''
        import numpy as np

        from m2f_bench.recognition import Recognizer


        class Ones(Recognizer):
            """An embedding of equal entries."""

            name = "ones"

            def __init__(self, dim=4):
                self.embedding_dim = dim

            def config(self):
                return {"dim": self.embedding_dim}

            def embed(self, crops, geometry, landmarks=None):
                return np.full((len(crops), self.embedding_dim), self.embedding_dim**-0.5)


        class NotOne:
            def __init__(self):
                pass
        ''',
        RECOGNIZERS,
        {"ones": "fake_rec_pkg:Ones", "not-one": "fake_rec_pkg:NotOne"},
    )


@pytest.mark.usefixtures("fake_distribution")
def test_entry_point_recognizer_is_found_and_built(offline_settings):
    assert {"ones", "not-one"} <= set(RECOGNIZERS.names())
    rec = build_recognizer({"type": "ones", "dim": 9}, offline_settings)
    emb = rec.embed(colour_crops((1, 2, 3)), GEOMETRY)
    np.testing.assert_allclose(emb, np.full((2, 9), 1 / 3), atol=1e-6)
    assert rec.config() == {"dim": 9}
    with pytest.raises(M2FError, match="'ones' has no argument 'dims'"):
        build_recognizer({"type": "ones", "dims": 9}, offline_settings)
    with pytest.raises(M2FError, match="'not-one' made a NotOne, not a Recognizer"):
        build_recognizer({"type": "not-one"}, offline_settings)
    check({"type": "ones", "dim": 9})
    with pytest.raises(ProtocolError, match=r"recognizers\.0: .*no argument 'dims'"):
        check({"type": "ones", "dims": 9})


def test_readme_example_for_a_112x96_model_validates_and_matches_the_defaults(tmp_path):
    import yaml

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Recognizer plug-ins", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    arcface = yaml.safe_load(block)["recognizers"][0]
    check(arcface)
    # What the example spells out is what the model's input shape gives by itself.
    path = onnx_model(tmp_path / "mfn.onnx", ["n", 3, 112, 96])
    options = {k: v for k, v in arcface.items() if k != "name"}
    explicit = build_recognizer({**options, "model": str(path)}, None)
    implicit = build_recognizer({"type": "arcface-onnx", "model": str(path)}, None)
    assert explicit.chip == implicit.chip and explicit.layout == implicit.layout == "nchw"
