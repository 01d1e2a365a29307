"""dlib's face-recognition ResNet in PyTorch: a reader for dlib's network file and the module.

dlib writes a network (``dlib::serialize(net, out)``) from the outside in: the loss layer
and a version number per layer, down to the input layer; then each layer's details from
the input up, every one followed by its training state (flags and, usually empty, tensors;
the layer on the input also its sample expansion factor). Tag and skip layers hold nothing
but their version, so the file gives the sequence of computing layers, and the wiring
(which ``add_prev`` adds which tag) comes from the architecture of
``dnn_face_recognition_ex.cpp``, against which every layer read is checked.

The encodings, from dlib's ``serialize.h``, ``float_details.h`` and ``dnn/tensor.h``:

- integer: one byte ``size | 0x80 if negative``, then ``size`` bytes of magnitude,
  little-endian (0 is ``01 00``);
- string: its length (integer), then the bytes; bool: the character ``'0'`` or ``'1'``;
- float or double: mantissa (integer) and exponent (integer), value = m·2^e;
- tensor: version 2, then n, k, nr, nc (integers), then n·k·nr·nc little-endian float32;
- alias_tensor (a view into a layer's ``params``): version 1, then n, k, nr, nc.

Layer conventions that matter for the port: ``con_`` filters are n×k×nr×nc
(out, in, height, width, a cross-correlation as in PyTorch) followed by the biases;
a strided ``con_`` or pooling layer has padding 0, a stride-1 one ``size // 2``;
``affine_`` holds gamma then beta, one per channel; ``fc_`` weights are
inputs×outputs (transposed with respect to ``torch.nn.Linear``); ``add_prev_`` adds
two tensors of different shapes as if the smaller were zero-padded at the end of each
dimension; ``input_rgb_image_sized`` feeds ``(pixel − mean) / 256`` per RGB channel.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from m2f_bench.errors import M2FError

if TYPE_CHECKING:
    import torch

#: Layer kinds of the network, with the version strings dlib writes for them.
_DETAIL_NAMES = {
    "con_4": "con",
    "affine_": "affine",
    "relu_": "relu",
    "max_pool_2": "max_pool",
    "avg_pool_2": "avg_pool",
    "add_prev_": "add_prev",
    "fc_2": "fc",
}
#: Scale of ``input_rgb_image``: ``(pixel − mean) / 256``.
INPUT_SCALE = 256.0


class _Truncated(Exception):
    pass


class _Reader:
    """Sequential reads of dlib's encodings from the bytes of a file."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise _Truncated
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def integer(self) -> int:
        head = self.take(1)[0]
        size = head & 0x0F
        if size == 0 or size > 8 or head & 0x70:
            raise ValueError(f"bad integer header 0x{head:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if head & 0x80 else value

    def string(self) -> str:
        n = self.integer()
        if not 0 <= n <= 256:
            raise ValueError(f"implausible string length {n}")
        return bytes(self.take(n)).decode("ascii", errors="replace")

    def boolean(self) -> bool:
        char = bytes(self.take(1))
        if char not in (b"0", b"1"):
            raise ValueError(f"bad bool {char!r}")
        return char == b"1"

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        return float(np.ldexp(float(mantissa), exponent))

    def expect_version(self, what: str, *versions: int) -> int:
        version = self.integer()
        if version not in versions:
            raise ValueError(
                f"{what} version {version}, expected {' or '.join(map(str, versions))}"
            )
        return version

    def dims(self, what: str, version: int) -> tuple[int, int, int, int]:
        self.expect_version(what, version)
        shape = tuple(self.integer() for _ in range(4))
        if min(shape) < 0:
            raise ValueError(f"negative {what} dimension {shape}")
        return shape  # type: ignore[return-value]

    def tensor(self) -> np.ndarray:
        shape = self.dims("tensor", 2)
        count = math.prod(shape)
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        return self.dims("alias_tensor", 1)


@dataclass
class DlibLayer:
    """One computing layer as dlib stored it.

    Attributes:
        kind: ``con``, ``affine``, ``relu``, ``max_pool``, ``avg_pool``, ``add_prev`` or ``fc``.
        options: Hyper-parameters (filters, size, stride, padding, outputs...).
        params: Weights in dlib's layout, by name (``filters``, ``biases``, ``gamma``,
            ``beta``, ``weights``).
    """

    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A dlib metric-learning network read from its file.

    Attributes:
        input_mean: Per-channel RGB means ``input_rgb_image_sized`` subtracts.
        input_size: Side of the square input chip.
        layers: Computing layers from the input up.
        chain: Versions of the layers from the input up: 2 for a computing layer, 1 for a
            tag or skip layer (they hold nothing else), 3 for the layer on the input.
        loss: The loss layer's version string and settings.
    """

    input_mean: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[DlibLayer]
    chain: list[int]
    loss: dict[str, Any]

    def parameter_count(self) -> int:
        return sum(p.size for layer in self.layers for p in layer.params.values())


def _read_details(r: _Reader) -> DlibLayer:
    name = r.string()
    kind = _DETAIL_NAMES.get(name)
    if kind is None:
        raise ValueError(f"unsupported layer {name!r}")
    layer = DlibLayer(kind)
    o = layer.options
    if kind == "con":
        params = r.tensor()
        o["filters"], o["nr"], o["nc"] = r.integer(), r.integer(), r.integer()
        o["stride"] = (r.integer(), r.integer())
        o["padding"] = (r.integer(), r.integer())
        filters, biases = r.alias(), r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.real()
        layer.params["filters"] = _view(params, 0, filters)
        layer.params["biases"] = _view(params, int(np.prod(filters)), biases).reshape(-1)
        _check_size(params, layer.params, name)
    elif kind == "affine":
        params = r.tensor()
        gamma, beta = r.alias(), r.alias()
        o["mode"] = {0: "conv", 1: "fc"}.get(r.integer(), "?")  # dlib layer_mode
        layer.params["gamma"] = _view(params, 0, gamma).reshape(-1)
        layer.params["beta"] = _view(params, int(np.prod(gamma)), beta).reshape(-1)
        _check_size(params, layer.params, name)
    elif kind in ("max_pool", "avg_pool"):
        o["nr"], o["nc"] = r.integer(), r.integer()
        o["stride"] = (r.integer(), r.integer())
        o["padding"] = (r.integer(), r.integer())
    elif kind == "fc":
        o["outputs"], o["inputs"] = r.integer(), r.integer()
        params = r.tensor()
        weights, biases = r.alias(), r.alias()
        o["bias"] = r.integer() == 0  # FC_HAS_BIAS = 0, FC_NO_BIAS = 1
        for _ in range(4):
            r.real()
        layer.params["weights"] = _view(params, 0, weights).reshape(o["inputs"], o["outputs"])
        if o["bias"]:
            layer.params["biases"] = _view(params, int(np.prod(weights)), biases).reshape(-1)
        _check_size(params, layer.params, name)
    return layer


def _view(params: np.ndarray, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    flat = params.reshape(-1)
    count = int(np.prod(shape))
    if offset + count > flat.size:
        raise ValueError(f"a parameter view {shape} at {offset} overruns {flat.size} values")
    return flat[offset : offset + count].reshape(shape)


def _check_size(params: np.ndarray, views: dict[str, np.ndarray], name: str) -> None:
    if params.size != sum(v.size for v in views.values()):
        raise ValueError(f"{name} has {params.size} parameters, its views cover a different count")


def _skip_state(r: _Reader) -> None:
    """A layer's training state: three flags and three (usually empty) tensors."""
    for _ in range(3):
        r.boolean()
    for _ in range(3):
        r.tensor()


def _read(data: bytes) -> tuple[DlibNet, int]:
    r = _Reader(data)
    r.expect_version("add_loss_layer", 1)
    loss_name = r.string()
    if loss_name != "loss_metric_2":
        raise ValueError(f"loss layer {loss_name!r}, expected 'loss_metric_2'")
    loss = {"name": loss_name, "margin": r.real(), "distance_threshold": r.real()}
    chain = []  # outside in
    while True:
        version = r.integer()
        chain.append(version)
        if version == 3:  # add_layer on the input layer
            break
        if version not in (1, 2) or len(chain) > 10_000:
            raise ValueError(f"layer version {version}")
    input_name = r.string()
    if input_name != "input_rgb_image_sized":
        raise ValueError(f"input layer {input_name!r}, expected 'input_rgb_image_sized'")
    mean = (r.real(), r.real(), r.real())
    size = (r.integer(), r.integer())
    layers = []
    for i in range(sum(v != 1 for v in chain)):
        layers.append(_read_details(r))
        _skip_state(r)
        if i == 0:  # the layer on the input also keeps its sample expansion factor
            r.integer()
    chain.reverse()
    return DlibNet(mean, size, layers, chain, loss), r.pos


def read_dlib_net(path: str | os.PathLike) -> DlibNet:
    """Read a network file written by dlib's ``serialize(net, out)``.

    Raises:
        M2FError: The file is missing, truncated, or not a metric-loss RGB network.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise M2FError(f"cannot read dlib network {path}: {exc.strerror or exc}") from None
    try:
        net, end = _read(data)
    except _Truncated:
        raise M2FError(
            f"dlib network {path} is truncated ({len(data)} bytes): reinstall "
            "face-recognition-models"
        ) from None
    except ValueError as exc:
        raise M2FError(f"{path} is not a dlib face recognition network: {exc}") from None
    if end != len(data):
        raise M2FError(f"{path}: {len(data) - end} unexpected bytes after the dlib network")
    return net


# --- the architecture of dnn_face_recognition_ex.cpp --------------------------------------

#: alevel4 … alevel0 of ``anet_type``: (filters, residual blocks, whether the first block
#: downsamples: stride-2 convolution, 2×2 average pooling on the skip path).
RESNET_LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
#: (filters, downsampling) of each residual block, from the input up.
RESNET_BLOCKS = tuple(
    (filters, down and i == 0) for filters, blocks, down in RESNET_LEVELS for i in range(blocks)
)
EMBEDDING_DIM = 128


def _expected_layers() -> list[tuple[str, dict[str, Any]]]:
    """The computing layers of ``anet_type`` from the input up, with their hyper-parameters."""

    def con(filters: int, size: int, stride: int) -> tuple[str, dict[str, Any]]:
        pad = 0 if stride != 1 else size // 2
        return "con", {
            "filters": filters,
            "nr": size,
            "nc": size,
            "stride": (stride, stride),
            "padding": (pad, pad),
        }

    def pool(kind: str, size: int, stride: int) -> tuple[str, dict[str, Any]]:
        pad = 0 if stride != 1 or size == 0 else size // 2
        return kind, {"nr": size, "nc": size, "stride": (stride, stride), "padding": (pad, pad)}

    affine, relu = ("affine", {"mode": "conv"}), ("relu", {})
    out = [con(32, 7, 2), affine, relu, pool("max_pool", 3, 2)]
    for filters, down in RESNET_BLOCKS:
        out += [con(filters, 3, 2 if down else 1), affine, relu, con(filters, 3, 1), affine]
        if down:
            out.append(pool("avg_pool", 2, 2))
        out += [("add_prev", {}), relu]
    out.append(pool("avg_pool", 0, 1))
    out.append(("fc", {"outputs": EMBEDDING_DIM, "inputs": 256, "bias": False}))
    return out


def _expected_chain() -> list[int]:
    chain = [3, 2, 2, 2]  # con (on the input), affine, relu, max_pool
    for _, down in RESNET_BLOCKS:
        chain.append(1)  # tag1
        chain += [2] * 5  # the block
        chain += [1, 1, 2] if down else []  # tag2, skip1, avg_pool
        chain += [2, 2]  # add_prev, relu
    return [*chain, 2, 2]  # avg_pool_everything, fc_no_bias


def check_face_resnet(net: DlibNet, path: str | os.PathLike = "network") -> None:
    """Check that ``net`` is dlib's face ResNet layer by layer, shapes included.

    Raises:
        M2FError: A layer differs from ``dnn_face_recognition_ex.cpp``'s ``anet_type``.
    """
    if net.chain != _expected_chain():
        raise M2FError(f"{path}: the layer structure is not dlib's face recognition ResNet")
    if net.input_size != (150, 150):
        raise M2FError(f"{path}: input size {net.input_size}, expected 150×150")
    expected = _expected_layers()
    channels = 3
    for i, (layer, (kind, options)) in enumerate(zip(net.layers, expected, strict=True)):
        got = {k: layer.options[k] for k in options if k in layer.options}
        if layer.kind != kind or got != options:
            raise M2FError(
                f"{path}: layer {i} is {layer.kind} {layer.options}, expected {kind} {options}"
            )
        shapes = {k: v.shape for k, v in layer.params.items()}
        if kind == "con":
            want = {
                "filters": (options["filters"], channels, options["nr"], options["nc"]),
                "biases": (options["filters"],),
            }
            channels = options["filters"]
        elif kind == "affine":
            want = {"gamma": (channels,), "beta": (channels,)}
        elif kind == "fc":
            want = {"weights": (channels, EMBEDDING_DIM)}
        else:
            want = {}
        if shapes != want:
            raise M2FError(f"{path}: layer {i} ({kind}) has parameters {shapes}, expected {want}")


# --- PyTorch ----------------------------------------------------------------------------------


def build_module(net: DlibNet | None = None) -> torch.nn.Module:
    """The PyTorch ResNet in eval mode, with ``net``'s weights if given (else random ones)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Affine(nn.Module):
        """dlib's ``affine_`` in conv mode: ``gamma·x + beta`` per channel."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(channels))
            self.beta = nn.Parameter(torch.zeros(channels))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)

    def conv(c_in: int, c_out: int, size: int, stride: int) -> nn.Conv2d:
        return nn.Conv2d(c_in, c_out, size, stride, padding=0 if stride != 1 else size // 2)

    class Residual(nn.Module):
        def __init__(self, c_in: int, c_out: int, down: bool) -> None:
            super().__init__()
            self.down = down
            self.conv1, self.affine1 = conv(c_in, c_out, 3, 2 if down else 1), Affine(c_out)
            self.conv2, self.affine2 = conv(c_out, c_out, 3, 1), Affine(c_out)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
            if not self.down:
                return F.relu(x + y)
            x = F.avg_pool2d(x, 2, 2)
            # add_prev_: the smaller tensor counts as zero-padded at the end of each dimension.
            # The skip path can have fewer channels, and the unpadded strided convolution
            # fewer rows and columns (8×8 → 3×3 against 4×4 pooled, then 4×4 → 1×1 against 2×2).
            x = F.pad(x, (0, 0, 0, 0, 0, y.shape[1] - x.shape[1]))
            y = F.pad(y, (0, x.shape[3] - y.shape[3], 0, x.shape[2] - y.shape[2]))
            return F.relu(x + y)

    class FaceResNet(nn.Module):
        """dlib's ``anet_type``: RGB chips (N×3×150×150, values 0–255) → 128-d descriptors."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("input_mean", torch.zeros(3))
            self.conv, self.affine = conv(3, 32, 7, 2), Affine(32)
            blocks, channels = [], 32
            for filters, down in RESNET_BLOCKS:
                blocks.append(Residual(channels, filters, down))
                channels = filters
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(channels, EMBEDDING_DIM, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = (x - self.input_mean.view(1, 3, 1, 1)) / INPUT_SCALE
            x = F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, 2)
            x = self.blocks(x)
            return self.fc(x.mean((2, 3)))

    module = FaceResNet()
    if net is not None:
        module.load_state_dict(state_dict(net), strict=True)
    return module.eval()


def state_dict(net: DlibNet) -> dict[str, torch.Tensor]:
    """``net``'s weights under the names of :func:`build_module`'s module, in torch layout."""
    import torch

    names = ["conv", "affine"]
    for i in range(len(RESNET_BLOCKS)):
        names += [f"blocks.{i}.conv1", f"blocks.{i}.affine1", f"blocks.{i}.conv2"]
        names += [f"blocks.{i}.affine2"]
    names.append("fc")
    weighted = [layer for layer in net.layers if layer.params]
    if len(weighted) != len(names):
        raise M2FError(f"{len(weighted)} layers with weights, expected {len(names)}")
    out = {"input_mean": np.asarray(net.input_mean)}
    for name, layer in zip(names, weighted, strict=True):
        p = layer.params
        if layer.kind == "con":
            out[f"{name}.weight"], out[f"{name}.bias"] = p["filters"], p["biases"]
        elif layer.kind == "affine":
            out[f"{name}.gamma"], out[f"{name}.beta"] = p["gamma"], p["beta"]
        else:  # fc_: inputs × outputs; nn.Linear keeps outputs × inputs
            out[f"{name}.weight"] = p["weights"].T
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, order="C")) for k, v in out.items()}


def fold_affine(module: torch.nn.Module) -> torch.nn.Module:
    """Fold every ``Affine`` into the convolution before it (same outputs, one pass less)."""
    import torch
    from torch import nn

    def fold(conv: nn.Conv2d, affine: nn.Module) -> None:
        with torch.no_grad():
            conv.weight.mul_(affine.gamma.view(-1, 1, 1, 1))
            conv.bias.mul_(affine.gamma).add_(affine.beta)

    fold(module.conv, module.affine)
    module.affine = nn.Identity()
    for block in module.blocks:
        fold(block.conv1, block.affine1)
        fold(block.conv2, block.affine2)
        block.affine1, block.affine2 = nn.Identity(), nn.Identity()
    return module


# --- conversion cache -------------------------------------------------------------------------


#: Bumped whenever :func:`state_dict` changes, so that no older conversion is loaded.
CONVERSION_VERSION = 1


def converted_path(sha256: str, cache_root: Path | None = None) -> Path:
    """Where the weights converted from the network file with this digest are kept."""
    from m2f_bench.settings import cache_dir

    root = cache_root if cache_root is not None else cache_dir() / "converted"
    return root / f"dlib-face-resnet-v{CONVERSION_VERSION}-{sha256[:16]}.safetensors"


def load_module(
    dat_path: str | os.PathLike, sha256: str | None = None, cache_root: Path | None = None
) -> torch.nn.Module:
    """dlib's face ResNet with the network file's weights, ready for inference.

    The weights are converted once and kept as safetensors under the file's digest; the
    module returned has each affine layer folded into its convolution and runs
    channels-last, in eval mode.

    Args:
        dat_path: dlib's ``.dat`` network file.
        sha256: Its digest, if already known (the converted weights are kept under it).
        cache_root: Folder of converted weights [default: ``<user cache>/converted``].

    Raises:
        M2FError: The network file is unreadable or not dlib's face ResNet.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from m2f_bench._io import write_safetensors

    dat_path = Path(dat_path)
    if sha256 is None:
        try:
            sha256 = hashlib.sha256(dat_path.read_bytes()).hexdigest()
        except OSError as exc:
            raise M2FError(f"cannot read dlib network {dat_path}: {exc.strerror or exc}") from None
    path = converted_path(sha256, cache_root)
    module = build_module()
    try:
        module.load_state_dict(load_file(path), strict=True)
    except (OSError, SafetensorError, RuntimeError):  # missing, unreadable, stale: convert
        net = read_dlib_net(dat_path)
        check_face_resnet(net, dat_path)
        weights = state_dict(net)
        module.load_state_dict(weights, strict=True)
        # A read-only cache only costs the conversion next time.
        with contextlib.suppress(OSError):
            write_safetensors(path, weights, {"source": dat_path.name, "sha256": sha256})
    return fold_affine(module).to(memory_format=torch.channels_last).eval()
