"""``type: keras``, tested on a small U-Net built and saved here.

The U-Net's output is its colour input plus a learned correction, so whether the crop,
its value range, its channel order and the hole really reach the model as declared shows
in the output: each test compares the inpainter with ``model.predict`` on inputs prepared
by hand, and checks that a wrong convention would have given something else.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess
import sys
import types

import cv2
import numpy as np
import pytest

from m2f_bench.errors import M2FError, ModelNotFoundError
from m2f_bench.inpainters import build_inpainter
from m2f_bench.inpainters import keras_model as keras_inpainter

NEEDS_KERAS = "needs the keras extra: pip install -c constraints.txt -e '.[keras]'"
NEEDS_TENSORFLOW = "needs the tensorflow extra: pip install -c constraints.txt -e '.[tensorflow]'"

# Keras' torch backend converts tensors in a way NumPy 2 deprecates; not this package's doing.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def keras():
    # The backend the inpainter would choose, before this process first imports Keras.
    keras_inpainter.choose_backend()
    return pytest.importorskip("keras", reason=NEEDS_KERAS)


def masked_batch(n: int = 3, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy crops with a lower-face ellipse hole painted in a mask colour."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    holes = np.zeros((n, size, size), bool)
    for i in range(n):
        hole = np.zeros((size, size), np.uint8)
        centre = (size // 2 + int(rng.integers(-3, 4)), 2 * size // 3)
        cv2.ellipse(hole, centre, (size // 3, size // 5), 0, 0, 360, 1, -1)
        holes[i] = hole > 0
    images[holes] = (90, 160, 230)
    return images, holes


def unet(keras, hole_channel: str, size: int | None = 32, batch: int | None = None):
    """A two-level U-Net with one skip; the output is the colour input plus a correction.

    ``hole_channel`` is how it takes the hole: ``concat`` (a 4th input channel), ``input``
    (a second input, declared first so that order alone would pick the wrong one) or
    ``none``.
    """
    layers = keras.layers
    keras.utils.set_random_seed(0)
    channels = 4 if hole_channel == "concat" else 3
    image = keras.Input((size, size, channels), batch_size=batch, name="image")
    inputs, x = [image], image
    if hole_channel == "input":
        hole = keras.Input((size, size, 1), batch_size=batch, name="hole")
        inputs, x = [hole, image], layers.Concatenate()([image, hole])
    skip = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(skip)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    # Upsampled as Mask2Face's U-Net does, by a transposed convolution.
    x = layers.Concatenate()([layers.Conv2DTranspose(8, 3, strides=2, padding="same")(x), skip])
    correction = layers.Conv2D(3, 3, padding="same")(x)
    colour = image
    if hole_channel == "concat":
        colour = layers.Conv2D(3, 1, use_bias=False, trainable=False, name="rgb")(image)
    model = keras.Model(inputs, layers.Add()([colour, correction]))
    if hole_channel == "concat":
        model.get_layer("rgb").set_weights([np.eye(4, 3, dtype=np.float32)[None, None]])
    return model


def by_hand(model, images, holes, *, hole_channel, image_range, channel_order, mask_value):
    """What the inpainter must return: the model run on inputs prepared from the spec."""
    low, high = image_range
    x = images.astype(np.float32) / 255.0 * (high - low) + low
    if channel_order == "bgr":
        x = x[..., ::-1]
    hole = (holes == bool(mask_value)).astype(np.float32)[..., None]
    if hole_channel == "concat":
        feeds = np.concatenate([x, hole], axis=-1)
    elif hole_channel == "input":
        feeds = [hole, x]  # the model's input order
    else:
        feeds = x
    y = model.predict(feeds, verbose=0)
    if channel_order == "bgr":
        y = y[..., ::-1]
    return np.clip(np.rint((y - low) / (high - low) * 255.0), 0, 255).astype(np.uint8)


def outside_is_input(out: np.ndarray, images: np.ndarray, holes: np.ndarray) -> bool:
    return bool(np.array_equal(out[~holes], images[~holes]))


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to float rounding: at most one grey level apart."""
    return int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


CONVENTIONS = [
    # suffix, hole_channel (None: inferred), image_range, channel_order, mask_value, and the
    # convention that, got wrong, must change the output (so the test would see the bug)
    (".keras", None, [-1, 1], "rgb", 1, {"mask_value": 0}),
    (".h5", "none", [0, 1], "bgr", 1, {"channel_order": "rgb"}),  # the original Mask2Face's
    (".keras", "input", [0, 1], "rgb", 0, {"mask_value": 1}),
    (".h5", None, [0, 255], "rgb", 1, {"image_range": [0, 1]}),
]
INFERRED = {".keras": "concat", ".h5": "input"}


@pytest.mark.parametrize(
    ("suffix", "hole_channel", "image_range", "order", "mask", "wrong"), CONVENTIONS
)
def test_keras_applies_the_model_conventions(
    keras, tmp_path, suffix, hole_channel, image_range, order, mask, wrong
):
    kind = hole_channel or INFERRED[suffix]
    model = unet(keras, kind)
    path = tmp_path / f"unet{suffix}"
    model.save(path)
    spec = {"type": "keras", "model": str(path), "image_range": image_range}
    spec |= {"channel_order": order, "mask_value": mask, "batch_size": 2}
    if hole_channel is not None:
        spec["hole_channel"] = hole_channel
    images, holes = masked_batch(n=5)
    before = images.copy()

    inpainter = build_inpainter(spec)
    out = inpainter(images, holes)

    assert inpainter.hole_channel == kind and inpainter.size == (32, 32)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert outside_is_input(out, images, holes) and np.array_equal(images, before)
    conventions = {"image_range": image_range, "channel_order": order, "mask_value": mask}
    expected = by_hand(model, images, holes, hole_channel=kind, **conventions)
    assert close(out[holes], expected[holes])
    mistaken = by_hand(model, images, holes, hole_channel=kind, **(conventions | wrong))
    assert np.abs(mistaken[holes].astype(int) - expected[holes]).mean() > 2


def test_keras_is_deterministic(keras, tmp_path):
    path = tmp_path / "unet.keras"
    unet(keras, "concat").save(path)
    images, holes = masked_batch()
    first = build_inpainter({"type": "keras", "model": str(path)})(images, holes)
    again = build_inpainter({"type": "keras", "model": str(path)})
    assert np.array_equal(again(images, holes), first)
    assert np.array_equal(again(images, holes), first)


def resized_by_hand(model, images, holes, size):
    """The model run at ``size``: crops shrunk, holes grown to every touched model pixel."""
    shrink = [cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in images]
    small_holes = [
        cv2.resize(hole.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
        for hole in holes
    ]
    small = by_hand(
        model,
        np.stack(shrink),
        np.stack(small_holes),
        hole_channel="concat",
        image_range=[0, 1],
        channel_order="rgb",
        mask_value=1,
    )
    back = images.shape[2], images.shape[1]
    return np.stack([cv2.resize(image, back, interpolation=cv2.INTER_LINEAR) for image in small])


def test_keras_resizes_to_the_model_size_and_pads_its_batch(keras, tmp_path):
    fixed = tmp_path / "fixed.keras"
    model = unet(keras, "concat", size=32, batch=2)
    model.save(fixed)
    images, holes = masked_batch(n=3, size=48)

    inpainter = build_inpainter({"type": "keras", "model": str(fixed)})
    assert inpainter.size == (32, 32) and inpainter.batch_size == 2
    out = inpainter(images, holes)  # three crops: the second run is padded to two

    assert out.shape == images.shape and outside_is_input(out, images, holes)
    assert close(out[holes], resized_by_hand(model, images, holes, (32, 32))[holes])
    with pytest.raises(M2FError, match=r"size \[48, 48\] but fixed.keras takes 32×32 inputs"):
        build_inpainter({"type": "keras", "model": str(fixed), "size": 48})
    with pytest.raises(M2FError, match=r"batch_size 4 but fixed.keras takes batches of 2"):
        build_inpainter({"type": "keras", "model": str(fixed), "batch_size": 4})


def test_keras_size_for_a_fully_convolutional_model(keras, tmp_path):
    free = tmp_path / "free.h5"
    model = unet(keras, "concat", size=None)
    model.save(free)
    images, holes = masked_batch(n=2, size=48)
    native = build_inpainter({"type": "keras", "model": str(free)})
    assert native.size is None  # any size goes: the crops are run as they are
    expected = by_hand(
        model,
        images,
        holes,
        hole_channel="concat",
        image_range=[0, 1],
        channel_order="rgb",
        mask_value=1,
    )
    assert close(native(images, holes)[holes], expected[holes])
    resized = build_inpainter({"type": "keras", "model": str(free), "size": 32})
    assert resized.size == (32, 32)
    assert close(
        resized(images, holes)[holes], resized_by_hand(model, images, holes, (32, 32))[holes]
    )


def test_keras_saved_model(keras, tmp_path):
    pytest.importorskip("tensorflow", reason=NEEDS_TENSORFLOW)
    if keras.backend.backend() != "tensorflow":
        pytest.skip("exporting a SavedModel needs Keras on the TensorFlow backend")
    model = unet(keras, "input")
    model.export(str(tmp_path / "saved"), verbose=False)
    images, holes = masked_batch()
    spec = {"type": "keras", "model": str(tmp_path / "saved"), "image_range": [-1, 1]}
    out = build_inpainter(spec)(images, holes)
    expected = by_hand(
        model,
        images,
        holes,
        hole_channel="input",
        image_range=[-1, 1],
        channel_order="rgb",
        mask_value=1,
    )
    assert outside_is_input(out, images, holes) and close(out[holes], expected[holes])


OTHER_PROCESS = """
import sys
import numpy as np
sys.modules["tensorflow"] = None  # as where only the keras extra is installed
from m2f_bench.inpainters import build_inpainter
data = np.load(sys.argv[1])
for path in sys.argv[2:]:
    out = build_inpainter({"type": "keras", "model": path})(data["images"], data["holes"])
    np.save(path + ".npy", out)
import keras
print(keras.backend.backend())
"""


def test_keras_files_load_on_torch_where_tensorflow_is_absent(keras, tmp_path):
    """In a fresh process with no KERAS_BACKEND and no TensorFlow, Keras runs on torch.

    The files were written by this process, on TensorFlow where it is installed: the same
    ``.keras`` and ``.h5`` files then give the same crops on either backend.
    """
    if keras.backend.backend() == "torch":
        pytest.skip("Keras runs on torch in this process already: no other backend to compare")
    images, holes = masked_batch()
    paths = [str(tmp_path / "unet.keras"), str(tmp_path / "unet.h5")]
    expected = []
    for path in paths:
        unet(keras, "concat").save(path)
        expected.append(build_inpainter({"type": "keras", "model": path})(images, holes))
    np.savez(tmp_path / "batch.npz", images=images, holes=holes)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["KERAS_HOME"] = str(tmp_path / "keras-home")  # no keras.json naming a backend
    done = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, str(tmp_path / "batch.npz"), *paths],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "torch"
    for path, mine in zip(paths, expected, strict=True):
        assert close(np.load(path + ".npy")[holes], mine[holes]), path


def as_keras2_wrote_it(path, groups: int) -> None:
    """Edit an ``.h5`` model config as Keras 2 wrote it: ``groups`` in every transposed
    convolution (which Keras 3 refuses, keras-team/keras#19441)."""
    import h5py

    with h5py.File(path, "r+") as file:
        config = json.loads(file.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "Conv2DTranspose":
                layer["config"]["groups"] = groups
        file.attrs["model_config"] = json.dumps(config)


def test_keras_reads_an_h5_file_written_by_keras_2(keras, tmp_path):
    model = unet(keras, "none")
    path = tmp_path / "keras2.h5"
    model.save(path)
    as_keras2_wrote_it(path, groups=1)
    images, holes = masked_batch()
    out = build_inpainter({"type": "keras", "model": str(path)})(images, holes)
    expected = by_hand(
        model,
        images,
        holes,
        hole_channel="none",
        image_range=[0, 1],
        channel_order="rgb",
        mask_value=1,
    )
    assert close(out[holes], expected[holes])
    # Two groups would change what the layer computes: that file is refused, in one line.
    as_keras2_wrote_it(path, groups=2)
    with pytest.raises(M2FError, match=r"cannot load .*keras2.h5 as a Keras model: .*groups"):
        build_inpainter({"type": "keras", "model": str(path)})


def test_keras_spec_errors(keras, tmp_path):
    one_input = tmp_path / "rgb.keras"
    unet(keras, "none").save(one_input)
    model = str(one_input)
    with pytest.raises(ModelNotFoundError, match="model file not found"):
        build_inpainter({"type": "keras", "model": str(tmp_path / "missing.keras")})
    (tmp_path / "junk.keras").write_text("not a model")
    with pytest.raises(M2FError, match=r"cannot load .*junk.keras as a Keras model") as info:
        build_inpainter({"type": "keras", "model": str(tmp_path / "junk.keras")})
    assert "\n" not in str(info.value)
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(M2FError, match=r"weights.pt is not a .keras or .h5 file or a SavedModel"):
        build_inpainter({"type": "keras", "model": str(tmp_path / "weights.pt")})
    with pytest.raises(M2FError, match="is a folder but not a SavedModel"):
        build_inpainter({"type": "keras", "model": str(tmp_path)})
    with pytest.raises(M2FError, match=r"hole_channel 'input' needs two inputs, rgb.keras has"):
        build_inpainter({"type": "keras", "model": model, "hole_channel": "input"})
    with pytest.raises(M2FError, match=r"has shape \(None, 32, 32, 3\); hole_channel 'concat'"):
        build_inpainter({"type": "keras", "model": model, "hole_channel": "concat"})
    with pytest.raises(M2FError, match="hole_channel must be one of none, concat, input"):
        build_inpainter({"type": "keras", "model": model, "hole_channel": "4th"})
    with pytest.raises(M2FError, match=r"output 'mask' is not an output of rgb.keras"):
        build_inpainter({"type": "keras", "model": model, "output": "mask"})
    with pytest.raises(M2FError, match="image_range must be"):
        build_inpainter({"type": "keras", "model": model, "image_range": [1, 0]})
    with pytest.raises(M2FError, match="channel_order must be rgb or bgr"):
        build_inpainter({"type": "keras", "model": model, "channel_order": "yuv"})
    for size in ([64], "128", 0, -8, [32, 0]):
        with pytest.raises(M2FError, match="size must be one side or"):
            build_inpainter({"type": "keras", "model": model, "size": size})
    for batch_size in ("4", 0, 2.5):
        with pytest.raises(M2FError, match="batch_size must be an integer"):
            build_inpainter({"type": "keras", "model": model, "batch_size": batch_size})

    two_inputs = tmp_path / "two.keras"
    unet(keras, "input").save(two_inputs)
    with pytest.raises(M2FError, match=r"mask_input 'mask' is not an input of two.keras"):
        build_inpainter({"type": "keras", "model": str(two_inputs), "mask_input": "mask"})
    grey = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Conv2D(3, 1)])
    grey.save(tmp_path / "grey.keras")
    with pytest.raises(M2FError, match=r"has shape \(None, 32, 32, 1\); hole_channel 'none'"):
        build_inpainter({"type": "keras", "model": str(tmp_path / "grey.keras")})


def test_keras_check_files(tmp_path):
    from m2f_bench.inpainters.keras_model import KerasInpainter

    with pytest.raises(ModelNotFoundError, match="model file or SavedModel folder not found"):
        KerasInpainter.check_files({"model": str(tmp_path / "missing.h5")}, None)
    with pytest.raises(ModelNotFoundError, match="not found"):
        KerasInpainter.check_files({"model": str(tmp_path)}, None)  # no saved_model.pb
    (tmp_path / "m.h5").write_bytes(b"")
    (tmp_path / "saved_model.pb").write_bytes(b"")
    KerasInpainter.check_files({"model": str(tmp_path / "m.h5")}, None)
    KerasInpainter.check_files({"model": str(tmp_path)}, None)


def test_a_missing_extra_names_the_install_command(tmp_path, monkeypatch):
    # Runs with or without the extras: None in sys.modules makes an import fail.
    monkeypatch.setitem(sys.modules, "keras", None)
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    (tmp_path / "m.keras").write_bytes(b"PK")
    with pytest.raises(M2FError, match=r"Keras is not installed: pip install 'm2f-bench\[keras\]'"):
        build_inpainter({"type": "keras", "model": str(tmp_path / "m.keras")})
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(M2FError, match=r"needs TensorFlow: pip install 'm2f-bench\[tensorflow\]'"):
        build_inpainter({"type": "keras", "model": str(tmp_path / "saved")})


def _module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


@pytest.mark.parametrize(
    ("env", "config", "tensorflow", "expected"),
    [
        ("", None, False, "torch"),  # Keras' default, TensorFlow, is not there
        ("", {"backend": "tensorflow"}, False, "torch"),  # what Keras writes by itself
        ("jax", None, False, "jax"),  # the user's variable is never overridden
        ("", {"backend": "jax"}, False, ""),  # nor their keras.json
        ("", None, True, ""),  # Keras' own default works
    ],
)
def test_choose_backend_overrides_only_a_default_that_cannot_load(
    tmp_path, monkeypatch, env, config, tensorflow, expected
):
    monkeypatch.setenv("KERAS_BACKEND", env)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    if config is not None:
        (tmp_path / "keras.json").write_text(json.dumps(config))
    monkeypatch.delitem(sys.modules, "keras", raising=False)  # as before the first import
    monkeypatch.setitem(sys.modules, "tensorflow", _module("tensorflow") if tensorflow else None)
    keras_inpainter.choose_backend()
    assert os.environ["KERAS_BACKEND"] == expected
    # Once Keras is imported its backend is fixed: nothing is changed any more.
    monkeypatch.setenv("KERAS_BACKEND", "")
    monkeypatch.setitem(sys.modules, "keras", _module("keras"))
    assert keras_inpainter.choose_backend() is None and os.environ["KERAS_BACKEND"] == ""
