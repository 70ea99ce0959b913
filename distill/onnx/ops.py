"""ONNX operators as small torch modules: the building blocks of a converted graph (distill/onnx/convert.py).

Each builder gets the node, its attributes and the graph's constant tensors (initializers and Constant
outputs) and returns an `nn.Module` whose forward takes the node's runtime inputs in order. Weights read from
initializers become `nn.Parameter`s, so a converted student trains like any other; nothing here runs code
from the file, it only reads tensors and attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Unsupported(Exception):
    """An operator, or an operator setting, this converter does not handle; the message names it."""


Fn = Callable[..., Tensor]
Builder = Callable[[Any, dict[str, Any], dict[str, np.ndarray]], tuple[nn.Module, list[str]]]
BUILDERS: dict[str, Builder] = {}


def op(*names: str) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        for name in names:
            BUILDERS[name] = builder
        return builder

    return register


def _param(array: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.array(array, dtype=np.float32)))


class Lambda(nn.Module):
    """A parameter-free operator; `kind` shows in the layer listing and in repr."""

    def __init__(self, kind: str, fn: Fn) -> None:
        super().__init__()
        self.kind, self.fn = kind, fn

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.fn(*inputs)

    def extra_repr(self) -> str:
        return self.kind


class WithConstant(nn.Module):
    """A binary arithmetic operator one of whose operands is a learned tensor from the file (e.g. a bias)."""

    def __init__(self, kind: str, fn: Fn, value: np.ndarray, *, first: bool) -> None:
        super().__init__()
        self.kind, self.fn, self.first = kind, fn, first
        self.value = _param(value) if np.issubdtype(value.dtype, np.floating) else None
        if self.value is None:
            self.register_buffer("fixed", torch.from_numpy(np.array(value)))

    def forward(self, x: Tensor) -> Tensor:
        c: Tensor = self.value if self.value is not None else self.get_buffer("fixed")
        return self.fn(c, x) if self.first else self.fn(x, c)

    def extra_repr(self) -> str:
        return self.kind

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Fresh init for `init: random`: a separate bias (Add/Sub) starts at 0, a scale (Mul/Div) at 1."""
        if self.value is not None and self.kind in ("Add", "Sub"):
            self.value.zero_()
        elif self.value is not None and self.kind in ("Mul", "Div"):
            self.value.fill_(1.0)


def runtime_inputs(node: Any, constants: dict[str, np.ndarray]) -> list[str]:
    return [name for name in node.input if name and name not in constants]


# --- convolutions, linear layers, normalisation ------------------------------------------------------------------


@op("Conv")
def conv(node: Any, attrs: dict[str, Any], constants: dict[str, np.ndarray]) -> tuple[nn.Module, list[str]]:
    weight = constants.get(node.input[1])
    if weight is None:
        raise Unsupported("Conv with a computed weight")
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
        raise Unsupported(f"Conv with auto_pad {attrs['auto_pad'].decode()}")
    dims = weight.ndim - 2
    if dims not in (1, 2):
        raise Unsupported(f"Conv{dims}d")
    pads = list(attrs.get("pads", [0] * 2 * dims))
    begin, end = pads[:dims], pads[dims:]
    cls = nn.Conv1d if dims == 1 else nn.Conv2d
    bias = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    module = cls(
        weight.shape[1] * int(attrs.get("group", 1)),
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=tuple(attrs.get("strides", [1] * dims)),
        padding=tuple(begin) if begin == end else 0,
        dilation=tuple(attrs.get("dilations", [1] * dims)),
        groups=int(attrs.get("group", 1)),
        bias=bias is not None,
    )
    module.weight = _param(weight)
    if bias is not None:
        module.bias = _param(bias)
    if begin == end:
        return module, [node.input[0]]
    # Asymmetric padding (as tf2onnx writes for SAME): pad explicitly, F.pad takes the last dim first.
    pad = [p for i in reversed(range(dims)) for p in (begin[i], end[i])]
    return nn.Sequential(Lambda("Pad", lambda x: F.pad(x, pad)), module), [node.input[0]]


@op("Gemm")
def gemm(node: Any, attrs: dict[str, Any], constants: dict[str, np.ndarray]) -> tuple[nn.Module, list[str]]:
    b = constants.get(node.input[1])
    if b is None or attrs.get("transA", 0) or node.input[0] in constants:
        raise Unsupported("Gemm whose second operand is computed or whose first is transposed")
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    weight = b if attrs.get("transB", 0) else b.T  # (out, in)
    c = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if c is not None and c.size not in (1, weight.shape[0]):
        raise Unsupported("Gemm with a 2-D bias")
    module = nn.Linear(weight.shape[1], weight.shape[0], bias=c is not None)
    module.weight = _param(alpha * weight)
    if c is not None:
        module.bias = _param(beta * np.broadcast_to(c.reshape(-1), (weight.shape[0],)))
    return module, [node.input[0]]


@op("MatMul")
def matmul(node: Any, attrs: dict[str, Any], constants: dict[str, np.ndarray]) -> tuple[nn.Module, list[str]]:
    if node.input[1] in constants and constants[node.input[1]].ndim == 2:
        w = constants[node.input[1]]  # (in, out): x @ w is a bias-free linear layer
        module = nn.Linear(w.shape[0], w.shape[1], bias=False)
        module.weight = _param(w.T)
        return module, [node.input[0]]
    if node.input[0] in constants or node.input[1] in constants:
        raise Unsupported("MatMul with a constant of rank other than 2")
    return Lambda("MatMul", torch.matmul), list(node.input)


@op("BatchNormalization")
def batch_norm(node: Any, attrs: dict[str, Any], constants: dict[str, np.ndarray]) -> tuple[nn.Module, list[str]]:
    scale, bias, mean, var = (constants.get(name) for name in node.input[1:5])
    if scale is None or bias is None or mean is None or var is None:
        raise Unsupported("BatchNormalization with computed statistics")
    # ONNX: running = running·momentum + batch·(1 − momentum); torch's momentum is the batch's share.
    module = nn.BatchNorm2d(
        scale.shape[0], eps=float(attrs.get("epsilon", 1e-5)), momentum=1 - float(attrs.get("momentum", 0.9))
    )
    module.weight, module.bias = _param(scale), _param(bias)
    module.get_buffer("running_mean").copy_(torch.from_numpy(np.array(mean, dtype=np.float32)))
    module.get_buffer("running_var").copy_(torch.from_numpy(np.array(var, dtype=np.float32)))
    # BatchNorm2d insists on 4-D input; ONNX BN also takes (N, C) and (N, C, L).
    return _AnyRankBatchNorm(module), [node.input[0]]


class _AnyRankBatchNorm(nn.Module):
    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.bn = bn

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            return self.bn(x)
        shape = x.shape
        return self.bn(x.reshape(shape[0], shape[1], -1, 1)).reshape(shape)
