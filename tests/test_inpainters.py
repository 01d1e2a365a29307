from __future__ import annotations

import inspect
import shlex
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from m2f_bench.errors import M2FError, ModelNotFoundError, UnknownNameError
from m2f_bench.inpainters import INPAINTERS, Inpainter, build_inpainter, list_inpainters

CLASSICAL = ["opencv-telea", "opencv-ns", "biharmonic"]
#: Entries that cannot be built from their type alone, each tested below.
NEEDS_ARGUMENTS = {"onnx", "command", "python", "keras", "diffusers"}
MASK_COLOUR = (90, 160, 230)


def masked_batch(n: int = 3, size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy crops with a lower-face-like ellipse hole painted in the mask colour."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    holes = np.zeros((n, size, size), bool)
    for i in range(n):
        centre = (size // 2 + int(rng.integers(-4, 5)), 2 * size // 3 + int(rng.integers(-3, 4)))
        axes = (size // 3, size // 5)
        hole = np.zeros((size, size), np.uint8)
        cv2.ellipse(hole, centre, axes, 0, 0, 360, 1, -1)
        holes[i] = hole > 0
    images[holes] = MASK_COLOUR
    return images, holes


def outside_is_input(out: np.ndarray, images: np.ndarray, holes: np.ndarray) -> bool:
    return bool(np.array_equal(out[~holes], images[~holes]))


def required_arguments(name: str) -> set[str]:
    parameters = inspect.signature(INPAINTERS.get(name)).parameters.values()
    return {p.name for p in parameters if p.default is inspect.Parameter.empty}


# --- registry, factory, contract ------------------------------------------------------


def test_import_loads_no_heavy_back_end():
    code = (
        "import sys, m2f_bench.inpainters as m; m.list_inpainters(); "
        "print(sorted({'torch', 'onnxruntime', 'onnx'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


#: Learned inpainters find their weights through the model cards in models/ (shipped:
#: tests/test_models.py checks them; tests/test_training.py builds them from a run).
LEARNED = {"unet-gan", "baseline-gan"}


def _shipped(name: str) -> bool:
    cards = (Path(__file__).parents[1] / "models").glob("*/card.yaml")
    return any(f"inpainter: {name}" in card.read_text() for card in cards)


def test_every_entry_without_required_arguments_runs_and_composites():
    buildable = [name for name in INPAINTERS.names() if not required_arguments(name)]
    assert {"masked", *CLASSICAL, *LEARNED} <= set(buildable)
    # A new entry that needs arguments must get its own test, like these three.
    assert set(INPAINTERS.names()) - set(buildable) == NEEDS_ARGUMENTS
    assert all(_shipped(name) for name in LEARNED)
    buildable = [name for name in buildable if name not in LEARNED or _shipped(name)]
    images, holes = masked_batch()
    before = images.copy()
    for name in buildable:
        inpainter = build_inpainter({"type": name})
        out = inpainter(images, holes)
        assert inpainter.name == name
        assert out.dtype == np.uint8 and out.shape == images.shape, name
        assert outside_is_input(out, images, holes), name
        assert np.array_equal(images, before), f"{name} changed its input"


def test_masked_returns_the_masked_crop():
    images, holes = masked_batch()
    assert np.array_equal(build_inpainter({"type": "masked"})(images, holes), images)


@pytest.mark.parametrize("name", CLASSICAL)
def test_classical_fills_a_constant_face_with_its_colour(name):
    colour = np.array([120, 80, 200], np.uint8)
    images = np.broadcast_to(colour, (2, 40, 40, 3)).copy()
    holes = np.zeros((2, 40, 40), bool)
    holes[0, 14:28, 10:30] = True
    holes[1, 25:, 5:35] = True  # touches the bottom edge, as a mask's chin does
    images[holes] = (0, 255, 0)
    out = build_inpainter({"type": name})(images, holes)
    error = np.abs(out[holes].astype(int) - colour)
    assert error.max() <= 4, error.max()


@pytest.mark.parametrize(
    ("name", "tolerance"), [("opencv-telea", 10), ("opencv-ns", 10), ("biharmonic", 1)]
)
def test_classical_continues_a_ramp(name, tolerance):
    # Biharmonic reproduces a linear ramp (it is harmonic); the OpenCV methods come close.
    ramp = np.linspace(40, 220, 48)[None, :, None] * np.ones((48, 1, 3))
    truth = np.rint(ramp).astype(np.uint8)[None]
    holes = np.zeros((1, 48, 48), bool)
    holes[0, 16:36, 12:36] = True
    images = truth.copy()
    images[holes] = MASK_COLOUR
    out = build_inpainter({"type": name})(images, holes)
    error = np.abs(out[holes].astype(int) - truth[holes]).mean()
    assert error <= tolerance, error
    assert np.abs(images[holes].astype(int) - truth[holes]).mean() > 30  # the task is real


def test_opencv_radius_is_used():
    images, holes = masked_batch(n=1)
    small = build_inpainter({"type": "opencv-telea", "radius": 1})(images, holes)
    large = build_inpainter({"type": "opencv-telea", "radius": 9})(images, holes)
    assert not np.array_equal(small, large)


def test_biharmonic_rejects_a_crop_that_is_all_hole():
    images = np.zeros((1, 16, 16, 3), np.uint8)
    with pytest.raises(M2FError, match="all hole"):
        build_inpainter({"type": "biharmonic"})(images, np.ones((1, 16, 16), bool))


def test_unknown_type_lists_close_matches():
    with pytest.raises(UnknownNameError, match="did you mean opencv-telea"):
        build_inpainter({"type": "opencv-tela"})


def test_spec_errors_name_the_inpainter_and_the_argument():
    with pytest.raises(
        M2FError, match=r"'opencv-telea' has no argument 'radus'; did you mean 'radius'"
    ):
        build_inpainter({"type": "opencv-telea", "radus": 5})
    with pytest.raises(M2FError, match="'onnx' needs argument 'model'"):
        build_inpainter({"type": "onnx"})
    with pytest.raises(M2FError, match="radius must be a positive number"):
        build_inpainter({"type": "opencv-ns", "radius": 0})
    with pytest.raises(M2FError, match="needs 'type:'"):
        build_inpainter({"radius": 3})


def test_name_sets_the_display_name():
    inpainter = build_inpainter({"type": "opencv-telea", "name": "telea-r5", "radius": 5})
    assert inpainter.name == "telea-r5" and inpainter.radius == 5


@pytest.mark.parametrize(
    ("images", "holes", "match"),
    [
        (np.zeros((1, 8, 8, 3), np.float32), np.zeros((1, 8, 8), bool), "images must be uint8"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), bool), "images must be uint8"),
        (np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8), np.uint8), "holes must be bool"),
        (np.zeros((2, 8, 8, 3), np.uint8), np.zeros((1, 8, 8), bool), "holes must be bool"),
    ],
)
def test_malformed_batches_are_one_line_errors(images, holes, match):
    with pytest.raises(M2FError, match=match) as info:
        build_inpainter({"type": "masked", "name": "lower-bound"})(images, holes)
    assert "'lower-bound'" in str(info.value) and "\n" not in str(info.value)


def test_empty_batch_gives_an_empty_batch():
    out = build_inpainter({"type": "opencv-ns"})(
        np.zeros((0, 8, 8, 3), np.uint8), np.zeros((0, 8, 8), bool)
    )
    assert out.shape == (0, 8, 8, 3)


def test_list_inpainters_gives_first_docstring_lines():
    listed = dict(list_inpainters())
    assert {"masked", *CLASSICAL, *NEEDS_ARGUMENTS} <= set(listed)
    assert listed["masked"].startswith("No inpainting")
    assert all(summary and "\n" not in summary for summary in listed.values())


# --- plug-ins: python ------------------------------------------------------------------


class GreyFill:
    """Fills everything with one grey value; not an Inpainter subclass."""

    def __init__(self, value: int = 128) -> None:
        self.value = value

    def inpaint(self, images, holes):
        images[:] = 255  # scribbles on its input: must not leak outside the hole
        return np.full_like(images, self.value)


class NoiseInpainter(Inpainter):
    """Noise everywhere, hole or not."""

    def inpaint(self, images, holes):
        return np.random.default_rng(1).integers(0, 256, images.shape, dtype=np.uint8)


class WrongShape:
    def inpaint(self, images, holes):
        return images[:, :-1]


class WrongDtype:
    def inpaint(self, images, holes):
        return images.astype(np.float32) / 255


class NoInpaintMethod:
    pass


def target(cls: type) -> str:
    return f"{__name__}:{cls.__qualname__}"


@pytest.mark.parametrize("cls", [GreyFill, NoiseInpainter])
def test_python_target_is_validated_and_composited(cls):
    images, holes = masked_batch()
    before = images.copy()
    out = build_inpainter({"type": "python", "target": target(cls)})(images, holes)
    assert outside_is_input(out, before, holes)
    assert np.array_equal(images, before)
    assert not np.array_equal(out[holes], images[holes])


def test_python_args_reach_the_constructor():
    images, holes = masked_batch()
    spec = {"type": "python", "target": target(GreyFill), "args": {"value": 7}}
    assert (build_inpainter(spec)(images, holes)[holes] == 7).all()
    spec["args"] = {"valeu": 7}
    with pytest.raises(M2FError, match=r"GreyFill' has no argument 'valeu'; did you mean 'value'"):
        build_inpainter(spec)


@pytest.mark.parametrize(
    ("cls", "match"),
    [
        (WrongShape, r"returned uint8 \(3, 47, 48, 3\); expected uint8 \(3, 48, 48, 3\)"),
        (WrongDtype, "returned float32"),
    ],
)
def test_plugin_returning_the_wrong_array_is_an_error(cls, match):
    images, holes = masked_batch()
    inpainter = build_inpainter({"type": "python", "name": "mine", "target": target(cls)})
    with pytest.raises(M2FError, match=match) as info:
        inpainter(images, holes)
    assert "inpainter 'mine'" in str(info.value)


def test_python_target_errors():
    with pytest.raises(M2FError, match="has no inpaint"):
        build_inpainter({"type": "python", "target": target(NoInpaintMethod)})
    with pytest.raises(M2FError, match="cannot import"):
        build_inpainter({"type": "python", "target": "surely_not_a_module_xyz:Thing"})


# --- plug-ins: entry points --------------------------------------------------------------


@pytest.fixture
def fake_distribution(plugin_distribution):
    """An installed-looking distribution declaring ``my-inpainter``, found afresh."""
    plugin_distribution(
        "fake_pkg",
        '''
        import numpy as np

        class MyInpainter:
            """Fills holes with one grey value."""

            def __init__(self, value=50):
                self.value = value

            def inpaint(self, images, holes):
                return np.full_like(images, self.value)
        ''',
        INPAINTERS,
        {"my-inpainter": "fake_pkg:MyInpainter"},
    )


@pytest.mark.usefixtures("fake_distribution")
def test_entry_point_plugin_is_found_built_and_composited():
    assert ("my-inpainter", "Fills holes with one grey value.") in list_inpainters()
    images, holes = masked_batch()
    inpainter = build_inpainter({"type": "my-inpainter", "value": 9})
    out = inpainter(images, holes)
    assert inpainter.name == "my-inpainter"
    assert (out[holes] == 9).all() and outside_is_input(out, images, holes)
    with pytest.raises(M2FError, match="'my-inpainter' has no argument 'colour'"):
        build_inpainter({"type": "my-inpainter", "colour": 9})


# --- plug-ins: onnx ----------------------------------------------------------------------


def shift_model(path, *, layout="nchw", delta=0.2, hole_value=1, shape=None, swap_inputs=False):
    """A model that adds ``delta`` to the image inside the hole: ``image + delta·hole``.

    The shift shows that the image, the mask and the output are all converted right.
    """
    import onnx
    from onnx import TensorProto, helper

    n, h, w = shape or ("N", "H", "W")
    image_shape = [n, 3, h, w] if layout == "nchw" else [n, h, w, 3]
    mask_shape = [n, 1, h, w] if layout == "nchw" else [n, h, w, 1]
    inputs = [
        helper.make_tensor_value_info("image", TensorProto.FLOAT, image_shape),
        helper.make_tensor_value_info("mask", TensorProto.FLOAT, mask_shape),
    ]
    nodes = [
        helper.make_node("Constant", [], ["delta"], value_float=float(delta)),
        helper.make_node("Constant", [], ["one"], value_float=1.0),
    ]
    if hole_value == 1:
        nodes.append(helper.make_node("Identity", ["mask"], ["hole"]))
    else:
        nodes.append(helper.make_node("Sub", ["one", "mask"], ["hole"]))
    nodes += [
        helper.make_node("Mul", ["hole", "delta"], ["shift"]),
        helper.make_node("Add", ["image", "shift"], ["inpainted"]),
    ]
    graph = helper.make_graph(
        nodes,
        "shift",
        inputs[::-1] if swap_inputs else inputs,
        [helper.make_tensor_value_info("inpainted", TensorProto.FLOAT, image_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what every ONNX Runtime since 1.10 reads
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def shifted(pixels: np.ndarray) -> np.ndarray:
    """What a shift model returns: each delta used below is 51 grey levels in its range."""
    return np.minimum(pixels.astype(int) + 51, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("layout", "image_range", "delta"),
    [
        ("nchw", [0, 1], 0.2),
        ("nchw", [-1, 1], 0.4),
        ("nhwc", [0, 255], 51.0),
        ("nhwc", [-1, 1], 0.4),
    ],
)
def test_onnx_converts_layout_and_range(tmp_path, layout, image_range, delta):
    model = shift_model(tmp_path / "m.onnx", layout=layout, delta=delta)
    images, holes = masked_batch(n=5)
    spec = {"type": "onnx", "model": model, "layout": layout, "image_range": image_range}
    out = build_inpainter({**spec, "batch_size": 2})(images, holes)
    assert np.array_equal(out[holes], shifted(images[holes]))
    assert outside_is_input(out, images, holes)


def test_onnx_named_inputs_and_mask_polarity(tmp_path):
    model = shift_model(tmp_path / "m.onnx", hole_value=0, swap_inputs=True)
    images, holes = masked_batch()
    spec = {"type": "onnx", "model": model, "image_input": "image", "mask_input": "mask"}
    out = build_inpainter({**spec, "mask_value": 0})(images, holes)
    assert np.array_equal(out[holes], shifted(images[holes]))
    # Defaults take the inputs in order, so a swapped model is read as NCHW image "mask".
    with pytest.raises(M2FError, match="image input 'mask' has shape"):
        build_inpainter({"type": "onnx", "model": model})


def test_onnx_fixed_size_and_batch(tmp_path):
    model = shift_model(tmp_path / "m.onnx", shape=(2, 16, 16))
    images = np.full((3, 32, 32, 3), 100, np.uint8)
    holes = np.zeros((3, 32, 32), bool)
    holes[:, 9:23, 7:25] = True  # odd edges: half of a model pixel is hole
    inpainter = build_inpainter({"type": "onnx", "model": model})
    assert inpainter.size == (16, 16) and inpainter.batch_size == 2
    out = inpainter(images, holes)  # three images: the last run is padded to two
    # Every model pixel touching the hole was inpainted, so the upsampled hole is uniform.
    assert (out[holes] == 151).all() and outside_is_input(out, images, holes)
    with pytest.raises(M2FError, match="takes batches of 2"):
        build_inpainter({"type": "onnx", "model": model, "batch_size": 4})


def test_onnx_spec_errors(tmp_path):
    model = shift_model(tmp_path / "m.onnx")
    with pytest.raises(ModelNotFoundError, match="model file not found"):
        build_inpainter({"type": "onnx", "model": str(tmp_path / "missing.onnx")})
    with pytest.raises(M2FError, match="mask_input 'hole' is not an input"):
        build_inpainter({"type": "onnx", "model": model, "mask_input": "hole"})
    with pytest.raises(M2FError, match="layout must be nchw or nhwc"):
        build_inpainter({"type": "onnx", "model": model, "layout": "chw"})
    with pytest.raises(M2FError, match="model run failed"):
        # An NCHW model fed NHWC tensors: ONNX Runtime's complaint, in one M2FError.
        build_inpainter({"type": "onnx", "model": model, "layout": "nhwc"})(*masked_batch())


# --- plug-ins: command -------------------------------------------------------------------

FILL_SCRIPT = """
import os, sys, time
from pathlib import Path
import cv2

images, holes, output = map(Path, sys.argv[1:4])
mode = os.environ.get("MODE", "ok")
if mode == "fail":
    print("loading weights", file=sys.stderr)
    print("RuntimeError: no weights here", file=sys.stderr)
    sys.exit(3)
if mode == "sleep":
    time.sleep(30)
for i, path in enumerate(sorted(images.iterdir())):
    if mode == "partial" and i > 0:
        break
    image = cv2.imread(str(path))
    hole = cv2.imread(str(holes / (path.stem + ".png")), cv2.IMREAD_GRAYSCALE) > 127
    image[hole] = image[~hole].mean(axis=0)  # the mean colour of the known pixels
    cv2.imwrite(str(output / (path.stem + ".png")), image)
"""


@pytest.fixture
def fill_script(tmp_path):
    path = tmp_path / "fill.py"
    path.write_text(FILL_SCRIPT)
    return path


def constant_batch(colour=(200, 100, 50)) -> tuple[np.ndarray, np.ndarray]:
    images = np.broadcast_to(np.array(colour, np.uint8), (3, 32, 40, 3)).copy()
    holes = np.zeros((3, 32, 40), bool)
    holes[:, 16:, 8:32] = True
    images[holes] = MASK_COLOUR
    return images, holes


@pytest.mark.parametrize("image_format", ["png", "jpg"])
def test_command_fills_holes_from_its_output_folder(fill_script, image_format):
    command = shlex.join([sys.executable, str(fill_script)]) + " {images} {holes} {output}"
    images, holes = constant_batch()
    spec = {"type": "command", "command": command, "image_format": image_format}
    out = build_inpainter(spec)(images, holes)
    assert outside_is_input(out, images, holes)
    # RGB order survived the round trip through the files (JPEG moves values a little).
    assert np.abs(out[holes].astype(int) - (200, 100, 50)).max() <= (
        0 if image_format == "png" else 3
    )


def test_command_list_form_with_cwd_and_env(fill_script):
    spec = {
        "type": "command",
        "command": [sys.executable, "fill.py", "{images}", "{holes}", "{output}"],
        "cwd": str(fill_script.parent),
        "env": {"MODE": "partial"},
    }
    with pytest.raises(M2FError, match=r"wrote no output for 2 of 3 images \(first: 000001\)"):
        build_inpainter(spec)(*constant_batch())


@pytest.mark.parametrize(
    ("env", "timeout", "match"),
    [
        ({"MODE": "fail"}, None, "exited with code 3: RuntimeError: no weights here$"),
        ({"MODE": "sleep"}, 0.5, "timed out after 0.5 s"),
    ],
)
def test_command_failures_are_one_line(fill_script, env, timeout, match):
    spec = {
        "type": "command",
        "name": "predict",
        "command": [sys.executable, str(fill_script), "{images}", "{holes}", "{output}"],
        "env": env,
        "timeout": timeout,
    }
    with pytest.raises(M2FError, match=match) as info:
        build_inpainter(spec)(*constant_batch())
    assert str(info.value).startswith("inpainter 'predict': ") and "\n" not in str(info.value)


def test_command_spec_errors(tmp_path):
    with pytest.raises(M2FError, match="program not found: no-such-program-xyz"):
        build_inpainter({"type": "command", "command": "no-such-program-xyz {images}"})(
            *constant_batch()
        )
    with pytest.raises(M2FError, match="image_format must be one of png, jpg"):
        build_inpainter({"type": "command", "command": "true", "image_format": "bmp"})
    with pytest.raises(M2FError, match="is not a folder"):
        build_inpainter({"type": "command", "command": "true", "cwd": str(tmp_path / "nope")})
