"""Run a small ONNX graph as a differentiable PyTorch module (for the identity loss).

``onnx2torch`` would do this but requires torchvision, which has no CPU build here, so
this module executes the graph node by node with ``torch.nn.functional``. It covers the
operators of ArcFace-family CNNs (MobileFaceNet, insightface's ResNets): convolutions,
batch norm, (P)ReLU/Clip/Sigmoid, elementwise arithmetic, pooling, flatten/reshape and
the shape arithmetic exporters emit around them, and Gemm/MatMul heads. Any other
operator is refused at load time with one line naming it. The weights are frozen
buffers; gradients flow to the input only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from m2f_bench.errors import M2FError

SUPPORTED = frozenset(
    {
        "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Constant", "Conv",
        "Div", "Dropout", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "Identity",
        "MatMul", "MaxPool", "Mul", "PRelu", "Relu", "Reshape", "Shape", "Sigmoid", "Sub",
        "Transpose", "Unsqueeze",
    }
)  # fmt: skip


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _check_attributes(op: str, attrs: dict[str, Any], model: str) -> None:
    """Refuse attribute values this executor would otherwise ignore, in one line."""
    refused = []
    if op in ("Conv", "MaxPool", "AveragePool"):
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad not in ("NOTSET", "VALID"):
            refused.append(f"auto_pad={auto_pad}")
        kernel = attrs.get("kernel_shape")
        if op == "Conv" and kernel is not None and len(kernel) != 2:
            refused.append(f"{len(kernel)}-D kernels")
    if op in ("MaxPool", "AveragePool"):
        if attrs.get("ceil_mode", 0):
            refused.append("ceil_mode=1")
        if any(d != 1 for d in attrs.get("dilations", [])):
            refused.append("dilations")
        if len(attrs.get("kernel_shape", [])) != 2:
            refused.append("pooling other than 2-D")
    if op == "BatchNormalization" and attrs.get("training_mode", 0):
        refused.append("training_mode=1")
    if op == "Transpose" and "perm" not in attrs:
        refused.append("no perm")
    if refused:
        raise M2FError(f"{model}: ONNX {op} with {', '.join(refused)} is not supported")


def _pads(pads: list[int] | None, dims: int) -> tuple[int, ...] | None:
    """ONNX ``[b1, b2, …, e1, e2, …]`` as symmetric padding, or ``None`` when asymmetric."""
    if not pads:
        return (0,) * dims
    begin, end = pads[:dims], pads[dims:]
    return tuple(begin) if list(begin) == list(end) else None


class OnnxModule(torch.nn.Module):
    """An ONNX graph with one input and one output, executed with PyTorch operations.

    Args:
        path: The ``.onnx`` file.

    Raises:
        M2FError: The file does not load, or uses an operator outside :data:`SUPPORTED`.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        import onnx
        from onnx import numpy_helper

        try:
            model = onnx.load(str(path))
        except Exception as exc:  # any parse failure is one message
            raise M2FError(f"cannot read ONNX model {path}: {type(exc).__name__}: {exc}") from None
        graph = model.graph
        unknown = sorted({n.op_type for n in graph.node} - SUPPORTED)
        if unknown:
            raise M2FError(
                f"{Path(path).name} uses ONNX operators the PyTorch conversion does not cover: "
                f"{', '.join(unknown)}"
            )
        initializers = {t.name for t in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in initializers]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise M2FError(f"{Path(path).name}: expected one input and one output")
        self.input_name, self.output_name = inputs[0], graph.output[0].name
        # Float tensors live in buffers named b0, b1, … (ONNX names are not valid attribute
        # names), so they move with the module; integer ones (shapes, indices, axes) stay
        # on the CPU, where the shape arithmetic runs.
        self._buffer_of: dict[str, str] = {}
        self._cpu: dict[str, torch.Tensor] = {}
        self.nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in graph.node]
        named = [(t.name, numpy_helper.to_array(t)) for t in graph.initializer]
        for op, _, outputs, attrs in self.nodes:
            if op == "Constant":
                if "value" not in attrs:
                    raise M2FError(f"{Path(path).name}: Constant without a tensor value")
                named.append((outputs[0], numpy_helper.to_array(attrs["value"])))
            else:
                _check_attributes(op, attrs, Path(path).name)
        for name, array in named:
            tensor = torch.from_numpy(array.copy())
            if tensor.is_floating_point():
                self.register_buffer(f"b{len(self._buffer_of)}", tensor, persistent=False)
                self._buffer_of[name] = f"b{len(self._buffer_of)}"
            else:
                self._cpu[name] = tensor
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, Any] = {self.input_name: x, "": None, **self._cpu}
        for name, buffer in self._buffer_of.items():
            values[name] = getattr(self, buffer)
        for op, inputs, outputs, attrs in self.nodes:
            if op == "Constant":
                continue
            args = [values[name] for name in inputs]
            values[outputs[0]] = self._run(op, args, attrs)
        return values[self.output_name]

    @staticmethod
    def _run(op: str, args: list[Any], attrs: dict[str, Any]) -> Any:
        if op == "Conv":
            x, w = args[0], args[1]
            bias = args[2] if len(args) > 2 else None
            dims = w.dim() - 2
            pads = _pads(attrs.get("pads"), dims)
            if pads is None:
                raise M2FError("ONNX Conv with asymmetric pads is not supported")
            return F.conv2d(
                x,
                w.to(x.dtype),
                None if bias is None else bias.to(x.dtype),
                stride=tuple(attrs.get("strides", [1] * dims)),
                padding=pads,
                dilation=tuple(attrs.get("dilations", [1] * dims)),
                groups=attrs.get("group", 1),
            )
        if op == "BatchNormalization":
            x, scale, bias, mean, var = args
            return F.batch_norm(
                x, mean, var, scale, bias, training=False, eps=attrs.get("epsilon", 1e-5)
            )
        if op == "Relu":
            return F.relu(args[0])
        if op == "PRelu":
            x, slope = args  # the slope broadcasts against x as ONNX (numpy) broadcasting does
            return torch.where(x >= 0, x, x * slope.to(x.dtype))
        if op == "Clip":
            # Bounds as tensors (opset ≥ 11 inputs, "" when absent) or attributes (older).
            low = args[1] if len(args) > 1 and args[1] is not None else attrs.get("min")
            high = args[2] if len(args) > 2 and args[2] is not None else attrs.get("max")
            return torch.clamp(args[0], low, high)
        if op == "Sigmoid":
            return torch.sigmoid(args[0])
        if op in ("Add", "Sub", "Mul", "Div"):
            a, b = args
            fn = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}[op]
            return fn(a, b)
        if op in ("Identity", "Dropout"):
            return args[0]
        if op == "GlobalAveragePool":
            return args[0].mean(dim=tuple(range(2, args[0].dim())), keepdim=True)
        if op in ("MaxPool", "AveragePool"):
            kernel = tuple(attrs["kernel_shape"])
            pads = _pads(attrs.get("pads"), len(kernel))
            if pads is None:
                raise M2FError(f"ONNX {op} with asymmetric pads is not supported")
            stride = tuple(attrs.get("strides", [1] * len(kernel)))
            if op == "MaxPool":
                return F.max_pool2d(args[0], kernel, stride, pads)
            return F.avg_pool2d(
                args[0],
                kernel,
                stride,
                pads,
                count_include_pad=bool(attrs.get("count_include_pad", 0)),
            )
        if op == "Flatten":
            axis = attrs.get("axis", 1)
            return args[0].reshape(int(np.prod(args[0].shape[:axis])), -1)
        if op == "Gemm":
            a, b = args[0], args[1]
            a = a.t() if attrs.get("transA", 0) else a
            b = b.t() if attrs.get("transB", 0) else b
            out = attrs.get("alpha", 1.0) * (a @ b.to(a.dtype))
            if len(args) > 2 and args[2] is not None:
                out = out + attrs.get("beta", 1.0) * args[2].to(a.dtype)
            return out
        if op == "MatMul":
            return args[0] @ args[1].to(args[0].dtype)
        if op == "Transpose":
            return args[0].permute(*attrs["perm"])
        # Shape arithmetic: plain integer tensors on the CPU.
        if op == "Shape":
            return torch.tensor(args[0].shape, dtype=torch.int64)
        if op == "Gather":
            axis = attrs.get("axis", 0) % args[0].dim()
            index = args[1].reshape(-1).long()
            index = torch.where(index < 0, index + args[0].shape[axis], index)
            picked = torch.index_select(args[0], axis, index.to(args[0].device))
            shape = (*args[0].shape[:axis], *args[1].shape, *args[0].shape[axis + 1 :])
            return picked.reshape(shape)
        if op == "Unsqueeze":
            out = args[0]
            axes = attrs.get("axes") if "axes" in attrs else args[1].tolist()
            for axis in sorted(axes):
                out = out.unsqueeze(axis)
            return out
        if op == "Concat":
            return torch.cat([a.reshape(-1) if a.dim() == 0 else a for a in args], attrs["axis"])
        if op == "Reshape":
            shape = [int(s) for s in args[1].tolist()]
            shape = [args[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
            return args[0].reshape(shape)
        raise M2FError(f"ONNX operator {op} is not supported")  # pragma: no cover
