"""TorchScript teachers: `torch.jit.load`, then a check of every operator its code may call.

Loading a TorchScript archive imports no Python module and calls no Python function: it is TorchScript IR
that TorchScript's own interpreter compiles (its pickles are read by TorchScript's own unpickler, which only
builds TorchScript types). But running it can do whatever its operators can: `torch.from_file` reads (and,
with `shared=True`, writes) any file the process can reach. So before anything runs, every graph of the
module — each method of each submodule, with the functions it calls inlined and the blocks of its ifs and
loops walked — is read, and a module that uses an operator outside the allow-list is refused as
`unsafe_checkpoint`, naming the operators. The allow-list is:
- `aten::*`, PyTorch's tensor operators, except those that touch files (`aten::from_file`, and anything
  else with "file" in its name);
- the `prim::` operators of the language itself (constants, attributes, lists, tuples, control flow,
  calls) — not `prim::Print` or other I/O;
- nothing else: custom operators (`torch.ops.NAMESPACE.*`, which a loaded extension library could register)
  are refused. Jobs still run in a sandboxed, killable process: this is the first wall, not the only one.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from distill.errors import UserError
from distill.teachers.base import TorchTeacher, one_line

DENIED_ATEN = frozenset({"aten::from_file"})
ALLOWED_PRIM = frozenset(
    {
        "prim::Constant",
        "prim::GetAttr",
        "prim::SetAttr",
        "prim::ListConstruct",
        "prim::ListUnpack",
        "prim::TupleConstruct",
        "prim::TupleUnpack",
        "prim::TupleIndex",
        "prim::DictConstruct",
        "prim::If",
        "prim::Loop",
        "prim::CallMethod",
        "prim::CallFunction",
        "prim::RaiseException",
        "prim::Uninitialized",
        "prim::unchecked_cast",
        "prim::isinstance",
        "prim::device",
        "prim::dtype",
        "prim::layout",
        "prim::shape",
        "prim::is_cuda",
        "prim::NumToTensor",
        "prim::min",
        "prim::max",
        "prim::abs",
        "prim::data",
        "prim::requires_grad",
        "prim::grad",
        "prim::unchecked_unwrap_optional",
        "prim::Enter",
        "prim::Exit",
        "prim::TypeCheck",
        "prim::BailOut",
        "prim::Guard",
        "prim::ConstantChunk",
        "prim::FusionGroup",
        "prim::DifferentiableGraph",
        "prim::AutogradZero",
        "prim::AutogradAdd",
        "prim::dict",
        "prim::StringIndex",
        "prim::str",
        "prim::id",
        "prim::tolist",
        "prim::type",
        "prim::rangelist",
        "prim::EnumName",
        "prim::EnumValue",
        "prim::CreateObject",
        "prim::ModuleContainerIndex",
        "prim::IgnoredPythonOp",
    }
)


def load_torchscript(path: str, *, device: torch.device) -> TorchTeacher:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still the format
            module = torch.jit.load(path, map_location="cpu")
    except Exception as exc:  # a damaged or hand-made archive: any error means "not a usable TorchScript file"
        raise UserError(
            f"the TorchScript teacher could not be loaded: {one_line(exc)}", code="corrupt_checkpoint", param="teacher"
        ) from None
    check_operators(module)
    module = module.to(device)
    return TorchTeacher(module, format="torchscript", device=device, bytes_on_disk=os.path.getsize(path))


def check_operators(module: torch.jit.ScriptModule) -> None:
    """Refuse (unsafe_checkpoint) a module whose code uses an operator outside the allow-list."""
    refused = sorted({kind for kind in operators(module) if not allowed(kind)})
    if refused:
        raise UserError(
            f"the TorchScript teacher uses operators that are not allowed: {', '.join(refused[:10])} "
            "(file access, I/O or custom operators); export the model without them, or as ONNX",
            code="unsafe_checkpoint",
            param="teacher",
        )


def allowed(kind: str) -> bool:
    namespace = kind.split("::", 1)[0]
    if namespace == "aten":
        return kind not in DENIED_ATEN and "file" not in kind.lower()
    if namespace == "prim":
        return kind in ALLOWED_PRIM
    return False


def operators(module: torch.jit.ScriptModule) -> set[str]:
    """The kind of every node of every method of the module and its submodules (functions inlined)."""
    kinds: set[str] = set()
    for _, sub in module.named_modules():
        for name in sub._c._method_names():
            method = sub._c._get_method(name)
            for graph in (method.graph, method.inlined_graph):
                kinds.update(node.kind() for node in _nodes(graph.nodes()))
    return kinds


def _nodes(nodes: Any) -> Iterator[Any]:
    for node in nodes:
        yield node
        for block in node.blocks():
            yield from _nodes(block.nodes())
