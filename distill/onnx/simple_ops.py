"""Parameter-free ONNX operators (activations, pooling, shape and arithmetic), registered into `ops.BUILDERS`.

Attributes that later opsets moved into inputs (Squeeze/Unsqueeze axes, Clip bounds, Pad pads, ReduceMean
axes) are read from either place, provided they are constants: a shape computed at run time would be frozen
by tracing, so it is refused by name instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.onnx.ops import Fn, Lambda, Unsupported, WithConstant, op, runtime_inputs

_UNARY: dict[str, Fn] = {
    "Relu": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Erf": torch.erf,
    "Sqrt": torch.sqrt,
    "Exp": torch.exp,
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Identity": lambda x: x,
    "Dropout": lambda x: x,  # inference semantics, as the exported graph had them
    "GlobalAveragePool": lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
}
_BINARY: dict[str, Fn] = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div, "Pow": torch.pow}


def _const(node: Any, index: int, constants: dict[str, np.ndarray], attrs: dict[str, Any], key: str) -> Any:
    """An operand given as attribute (older opsets) or as a constant input (newer ones); None if absent."""
    if key in attrs:
        return attrs[key]
    if len(node.input) > index and node.input[index]:
        if node.input[index] not in constants:
            raise Unsupported(f"{node.op_type} with a computed {key}")
        return constants[node.input[index]].tolist()
    return None


@op(*_UNARY)
def unary(node: Any, attrs: dict[str, Any], constants: dict[str, np.ndarray]) -> tuple[nn.Module, list[str]]:
    return Lambda(node.op_type, _UNARY[node.op_type]), [node.input[0]]


@op(*_BINARY)
def binary(node: Any, attrs: dict[str, Any], constants: dict[str, np.ndarray]) -> tuple[nn.Module, list[str]]:
    fn = _BINARY[node.op_type]
    a, b = node.input[0], node.input[1]
    if a in constants and b in constants:
        raise Unsupported(f"{node.op_type} of two constants")  # folded by every exporter; never seen in practice
    if b in constants:
        return WithConstant(node.op_type, fn, constants[b], first=False), [a]
    if a in constants:
        return WithConstant(node.op_type, fn, constants[a], first=True), [b]
    return Lambda(node.op_type, fn), [a, b]


@op("LeakyRelu", "Elu", "HardSigmoid", "HardSwish", "Gelu", "Softmax", "LogSoftmax", "Clip")
def parametrised(node: Any, attrs: dict[str, Any], constants: dict[str, np.ndarray]) -> tuple[nn.Module, list[str]]:
    kind = node.op_type
    if kind == "LeakyRelu":
        slope = float(attrs.get("alpha", 0.01))
        return Lambda(kind, lambda x: F.leaky_relu(x, slope)), [node.input[0]]
    if kind == "Elu":
        alpha = float(attrs.get("alpha", 1.0))
        return Lambda(kind, lambda x: F.elu(x, alpha)), [node.input[0]]
    if kind == "HardSigmoid":
        alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
        return Lambda(kind, lambda x: torch.clamp(alpha * x + beta, 0.0, 1.0)), [node.input[0]]
    if kind == "HardSwish":
        return Lambda(kind, F.hardswish), [node.input[0]]
    if kind == "Gelu":
        approximate = "tanh" if attrs.get("approximate", b"none") == b"tanh" else "none"
        return Lambda(kind, lambda x: F.gelu(x, approximate=approximate)), [node.input[0]]
    if kind in ("Softmax", "LogSoftmax"):
        axis = int(attrs.get("axis", -1))
        fn = F.softmax if kind == "Softmax" else F.log_softmax
        return Lambda(kind, lambda x: fn(x, dim=axis)), [node.input[0]]
    low, high = _const(node, 1, constants, attrs, "min"), _const(node, 2, constants, attrs, "max")
    return Lambda(kind, lambda x: torch.clamp(x, low, high)), [node.input[0]]


@op("MaxPool", "AveragePool")
def pool(node: Any, attrs: dict[str, Any], constants: dict[str, np.ndarray]) -> tuple[nn.Module, list[str]]:
    kernel = list(attrs["kernel_shape"])
    dims = len(kernel)
    if (
        dims != 2
        or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")
        or attrs.get("dilations", [1, 1]) != [1, 1]
    ):
        raise Unsupported(f"{node.op_type} other than 2-D with explicit pads")
    pads = list(attrs.get("pads", [0] * 4))
    if pads[:2] != pads[2:]:
        raise Unsupported(f"{node.op_type} with asymmetric pads")
    stride, ceil = list(attrs.get("strides", [1, 1])), bool(attrs.get("ceil_mode", 0))
    if node.op_type == "MaxPool":
        return nn.MaxPool2d(tuple(kernel), tuple(stride), tuple(pads[:2]), ceil_mode=ceil), [node.input[0]]
    exclude_pad = not bool(attrs.get("count_include_pad", 0))
    k2, s2, p2 = (kernel[0], kernel[1]), (stride[0], stride[1]), (pads[0], pads[1])
    return nn.AvgPool2d(k2, s2, p2, ceil_mode=ceil, count_include_pad=not exclude_pad), [node.input[0]]


@op("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "ReduceMean", "Pad")
def shape_ops(node: Any, attrs: dict[str, Any], constants: dict[str, np.ndarray]) -> tuple[nn.Module, list[str]]:
    kind, x = node.op_type, node.input[0]
    if kind == "Flatten":
        axis = int(attrs.get("axis", 1))
        return Lambda(kind, lambda t: t.reshape(*t.shape[:axis], -1) if axis else t.reshape(1, -1)), [x]
    if kind == "Reshape":
        target = _const(node, 1, constants, attrs, "shape")
        if target is None:
            raise Unsupported("Reshape without a shape")
        # 0 copies the input's dim (the batch, usually), so the converted graph keeps a dynamic batch size.
        return Lambda(kind, lambda t: t.reshape([t.shape[i] if d == 0 else int(d) for i, d in enumerate(target)])), [x]
    if kind == "Transpose":
        perm = attrs.get("perm")
        return Lambda(kind, lambda t: t.permute(*(perm or reversed(range(t.dim()))))), [x]
    if kind in ("Squeeze", "Unsqueeze"):
        axes = _const(node, 1, constants, attrs, "axes")
        if kind == "Squeeze":
            return Lambda(kind, lambda t: t.squeeze(tuple(axes)) if axes else t.squeeze()), [x]
        return Lambda(kind, lambda t: _unsqueeze(t, axes)), [x]
    if kind == "Concat":
        axis = int(attrs["axis"])
        if any(name in constants for name in node.input):
            raise Unsupported("Concat with a constant operand")
        return Lambda(kind, lambda *ts: torch.cat(ts, dim=axis)), list(node.input)
    if kind == "ReduceMean":
        axes, keep = _const(node, 1, constants, attrs, "axes"), bool(attrs.get("keepdims", 1))
        return Lambda(kind, lambda t: t.mean(dim=tuple(axes) if axes else None, keepdim=keep)), [x]
    pads = _const(node, 1, constants, attrs, "pads")
    if attrs.get("mode", b"constant") != b"constant" or pads is None:
        raise Unsupported("Pad other than constant padding with constant pads")
    half = len(pads) // 2
    torch_pads = [p for i in reversed(range(half)) for p in (pads[i], pads[i + half])]
    value = float(_const(node, 2, constants, attrs, "value") or 0.0)
    return Lambda(kind, lambda t: F.pad(t, torch_pads, value=value)), [x]


def _unsqueeze(t: Tensor, axes: list[int]) -> Tensor:
    for axis in sorted(a if a >= 0 else a + t.dim() + len(axes) for a in axes):
        t = t.unsqueeze(axis)
    return t


__all__ = ["runtime_inputs"]
