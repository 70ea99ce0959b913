"""Taps: read intermediate outputs by module path (`get_submodule` + forward hooks, the torchdistill habit).

A feature or relation term names layers such as `features.block2`; a `Taps` object hooks exactly those
modules of a network and turns one forward pass into `Outputs(logits, {path: feature})`. `list_layers`
runs one dry forward pass with a hook on every submodule and lists the paths with their output shapes,
which is what the layers endpoints and `python -m distill layers` show.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from distill.errors import UserError
from distill.losses.outputs import Outputs

TORCHSCRIPT_UNTAPPABLE = (
    "feature and relation knowledge read a teacher's layers by forward hooks, which a TorchScript graph does not "
    "run; export it to ONNX instead (torch.onnx.export(model, example, 'teacher.onnx'); its layers are then named "
    "by tensor name) or upload a state_dict / safetensors file with its architecture"
)


def first_tensor(out: Any) -> Tensor | None:
    """A module's output as one tensor: the tensor, `out['logits']`, or the first tensor of a tuple."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):
        out = out.get("logits", next(iter(out.values()), None))
        return out if isinstance(out, Tensor) else None
    if isinstance(out, Sequence) and out and isinstance(out[0], Tensor):
        return out[0]
    return None


def module_paths(model: nn.Module) -> list[str]:
    """What a term may name: module paths, or ONNX tensor names for a converted graph (`tap_modules`)."""
    names = _tensor_names(model)
    if names is not None:
        return list(names)
    return [name for name, _ in model.named_modules() if name]


def _tensor_names(model: nn.Module) -> dict[str, str] | None:
    """A converted ONNX graph (distill/onnx) is tapped by its tensor names, each produced by one submodule."""
    names = getattr(model, "tap_modules", None)
    return names if isinstance(names, dict) else None


def closest_paths(path: str, valid: Sequence[str], n: int = 5) -> list[str]:
    close = difflib.get_close_matches(path, valid, n=n, cutoff=0.4)
    return close or list(valid[:n])


def unknown_layer(path: str, valid: Sequence[str], *, param: str) -> UserError:
    hint = ", ".join(closest_paths(path, valid))
    return UserError(
        f"no layer {path!r} in this network; closest valid paths: {hint} (list them all with "
        "GET /v1/files/{id}/layers for an uploaded model, GET /v1/architectures/{name}/layers for a registry "
        "one, or python -m distill layers)",
        code="unknown_layer",
        param=param,
    )


def resolve(model: nn.Module, path: str, *, param: str) -> nn.Module:
    names = _tensor_names(model)
    if names is not None and path in names:
        return model.get_submodule(names[path])
    if path and names is None:
        try:
            return model.get_submodule(path)
        except (AttributeError, IndexError, TypeError):
            pass
    raise unknown_layer(path, module_paths(model), param=param)


class Taps:
    """Forward hooks on `paths` of `model`; calling it returns `Outputs` with those modules' outputs.

    In-place activations are switched off in the tapped model: an `inplace=True` ReLU right after a tapped
    BatchNorm would overwrite the captured tensor and break its gradient.
    """

    def __init__(self, model: nn.Module, paths: Sequence[str], *, params: Sequence[str] | None = None) -> None:
        if paths and isinstance(model, torch.jit.ScriptModule):
            raise UserError(TORCHSCRIPT_UNTAPPABLE, code="untappable_teacher", param="teacher")
        self.model = model
        self.paths = list(dict.fromkeys(paths))
        self._store: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []
        labels = list(params) if params is not None else ["layers"] * len(paths)
        by_path = dict(zip(paths, labels, strict=True))
        for path in self.paths:
            module = resolve(model, path, param=by_path[path])
            self._handles.append(module.register_forward_hook(self._hook(path)))
        if self.paths:
            for module in model.modules():
                if getattr(module, "inplace", False) is True:
                    module.inplace = False  # type: ignore[assignment]

    def _hook(self, path: str) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            tensor = first_tensor(out)
            if tensor is not None:
                self._store[path] = tensor

        return hook

    def __call__(self, x: Tensor) -> Outputs:
        self._store = {}
        out = first_tensor(self.model(x))
        if out is None:
            raise UserError("the network did not return a logits tensor", code="shape_mismatch", param="student")
        missing = [p for p in self.paths if p not in self._store]
        if missing:
            raise UserError(
                f"layers {missing} did not run in the forward pass (or returned no tensor); tap modules that are "
                "called in forward",
                code="unknown_layer",
                param="layers",
            )
        return Outputs(out, {p: self._store[p] for p in self.paths})

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def list_layers(
    model: nn.Module, input_shape: Sequence[int], *, dtype: torch.dtype | None = None
) -> list[dict[str, Any]]:
    """Every submodule called in one forward pass on zeros, with its output shape (no batch dim), in call order.

    The dry run uses eval mode and batch 2 (BatchNorm needs more than one example in train mode, and eval
    keeps its running statistics untouched).
    """
    shapes: dict[str, tuple[list[int], str]] = {}
    handles = []
    names = _tensor_names(model)
    listed = [(t, model.get_submodule(m)) for t, m in names.items()] if names is not None else model.named_modules()
    for name, module in listed:
        if not name:
            continue

        def hook(m: nn.Module, args: Any, out: Any, name: str = name) -> None:
            tensor = first_tensor(out)
            if tensor is not None and name not in shapes:
                kind = getattr(m, "kind", None) if names is not None else None
                shapes[name] = ([int(d) for d in tensor.shape[1:]], kind or type(m).__name__)

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    floats = [p.dtype for p in model.parameters() if p.is_floating_point()]
    try:
        device = next(iter(model.parameters())).device
    except StopIteration:
        device = torch.device("cpu")
    try:
        with torch.no_grad():
            model(torch.zeros(2, *input_shape, dtype=dtype or (floats[0] if floats else torch.float32), device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return [{"path": path, "shape": shape, "type": kind} for path, (shape, kind) in shapes.items()]


def layer_shapes(model: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    return {entry["path"]: tuple(entry["shape"]) for entry in list_layers(model, input_shape)}
