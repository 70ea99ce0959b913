"""Convert an ONNX graph into a trainable torch module (a student from any framework, DESIGN §3).

The converter reads only tensors and attributes: each node becomes a small module from `ops.BUILDERS`
(weights as parameters), and `OnnxGraphModule.forward` runs them in the graph's order, keyed by tensor
name. Layers are named by their ONNX output tensor names (what `GET /v1/files/{id}/layers` lists for an
ONNX file), and taps read them through `tap_modules`. Every operator the converter lacks is listed at
once in one `UserError(code="unsupported_operator")`; a converted graph is checked against onnxruntime
before it is used (`check_against_onnxruntime`).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distill.errors import UserError
from distill.onnx import simple_ops  # noqa: F401  (registers the parameter-free operators)
from distill.onnx.ops import BUILDERS, Unsupported

_SKIP = {"Constant"}  # folded into the constants table at conversion


class OnnxGraphModule(nn.Module):
    """The graph's nodes as submodules, run in topological order (ONNX requires the node list sorted)."""

    def __init__(self, model: Any, *, param: str) -> None:
        super().__init__()
        from onnx import numpy_helper

        graph = model.graph
        constants: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                constants[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
        inputs = [i.name for i in graph.input if i.name not in constants]
        if len(inputs) != 1:
            raise UserError(
                f"the ONNX graph takes {len(inputs)} inputs; Distillery feeds exactly one",
                code="shape_mismatch",
                param=param,
            )
        self.input_name = inputs[0]
        self.output_name = graph.output[0].name
        self.steps: list[tuple[str, list[str], str]] = []  # (module attribute, input tensor names, output name)
        self.tap_modules: dict[str, str] = {}  # ONNX tensor name -> module attribute, for taps and layer listings
        missing: dict[str, str] = {}
        for index, node in enumerate(graph.node):
            if node.op_type in _SKIP:
                continue
            builder = BUILDERS.get(node.op_type)
            if builder is None or node.domain not in ("", "ai.onnx"):
                missing.setdefault(node.op_type, "not supported")
                continue
            try:
                module, feeds = builder(node, _attrs(node), constants)
            except Unsupported as exc:
                missing.setdefault(node.op_type, str(exc))
                continue
            name = _attribute_name(self, node.output[0] or f"{node.op_type}_{index}")
            module.kind = node.op_type  # what the layer listing shows as the layer's type
            self.add_module(name, module)
            self.steps.append((name, feeds, node.output[0]))
            self.tap_modules[node.output[0]] = name
        if missing:
            listed = "; ".join(f"{k} ({v})" if v != "not supported" else k for k, v in sorted(missing.items()))
            raise UserError(
                f"the ONNX graph uses operators Distillery cannot convert to a trainable network: {listed}",
                code="unsupported_operator",
                param=param,
            )

    def forward(self, x: Tensor) -> Tensor:
        env: dict[str, Tensor] = {self.input_name: x}
        for name, feeds, out in self.steps:
            env[out] = self.get_submodule(name)(*[env[f] for f in feeds])
        return env[self.output_name]


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _attribute_name(module: nn.Module, tensor: str) -> str:
    """A valid, unique submodule name from a tensor name: '/features/block1/Conv_output_0' -> 'features_block1_Conv'."""
    base = re.sub(r"_output_0$", "", re.sub(r"[^0-9A-Za-z_]+", "_", tensor)).strip("_") or "node"
    if base[0].isdigit():
        base = f"n_{base}"
    name, k = base, 2
    while hasattr(module, name):
        name, k = f"{base}_{k}", k + 1
    return name


def load_onnx_graph(path: str, *, param: str) -> OnnxGraphModule:
    import onnx

    from distill.teachers.detect import check_external_data

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise UserError(
            f"not a readable ONNX graph: {' '.join(str(exc).split())[:200]}", code="corrupt_checkpoint", param=param
        ) from None
    check_external_data(model)
    return OnnxGraphModule(model, param=param)


def reinitialise(module: nn.Module) -> None:
    """`init: random`: the same architecture with fresh weights (each layer's own default initialisation)."""
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if sub is not module and callable(reset):
            reset()


@torch.no_grad()
def check_against_onnxruntime(
    module: nn.Module, path: str, example: Tensor, *, param: str, atol: float = 1e-4
) -> float:
    """Max |converted − onnxruntime| on `example`; a UserError if above `atol` (a conversion we got wrong)."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    try:
        outputs = session.run(None, {name: example.numpy().astype(np.float32)})
    except Exception as exc:  # onnxruntime's own types (InvalidArgument, Fail): the graph refuses this input
        raise ValueError(f"onnxruntime cannot run the graph on this input: {exc}") from None
    expected = torch.from_numpy(np.asarray(outputs[0]))
    was_training = module.training
    module.eval()
    got = module(example).float()
    module.train(was_training)
    if got.shape != expected.shape:
        raise UserError(
            f"the converted graph returns {tuple(got.shape)}, onnxruntime {tuple(expected.shape)}",
            code="conversion_mismatch",
            param=param,
        )
    diff = float((got - expected).abs().max()) if got.numel() else 0.0
    if not diff <= atol:
        raise UserError(
            f"the converted graph differs from onnxruntime by {diff:.3g} (> {atol:g}) on the same input; "
            "please report this graph to us",
            code="conversion_mismatch",
            param=param,
        )
    return diff
