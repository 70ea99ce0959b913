"""Turn an `ArchitectureSpec` from a job into a checked, ready-to-train module.

Everything a user can get wrong surfaces here as a `UserError` naming `param`: an unknown name, a misspelt
or ill-typed argument, a net too large to be a student, or an input the net cannot process (found by one
dry-run forward pass, so no job ever fails on its first training step with a raw shape error).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from distill.config import ArchitectureSpec
from distill.errors import UserError
from distill.models.registry import STUDENTS

# A student is meant to be small; this bounds memory (weights + Adam state ≈ 16 bytes per parameter).
MAX_PARAMETERS = 200_000_000


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def feature_layers(model: nn.Module) -> list[str]:
    """Module paths worth tapping for feature distillation, shallow to deep; [] if the model names none.

    A typed accessor: `model.feature_layers` on an `nn.Module` is `Tensor | Module` to a type checker.
    """
    return [str(path) for path in getattr(model, "feature_layers", [])]


def embedding_layer(model: nn.Module) -> str | None:
    """Module path of the classifier's input (the penultimate representation), if the model names it."""
    path = getattr(model, "embedding_layer", None)
    return None if path is None else str(path)


def _tuples(value: Any) -> Any:
    """JSON has only lists; builders take tuples (hashable, and what their signatures promise)."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value


def build_model(
    arch: ArchitectureSpec,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    param: str = "student.architecture",
    max_parameters: int = MAX_PARAMETERS,
    dry_run: bool = True,
) -> nn.Module:
    """Build `arch` for inputs of `input_shape` (one example, no batch dim) and `num_classes` outputs.

    input_shape and num_classes given in arch.kwargs win over the inferred ones. Weights are drawn from
    torch's global generator, so the caller seeds it for a repeatable run. dry_run=False skips the forward
    pass on zeros that checks the output shape (for a shape-only build on the meta device, where a forward
    pass goes through torch's decompositions and imports torch._dynamo: a second of start-up).
    """
    kwargs = {k: _tuples(v) for k, v in arch.kwargs.items()}
    kwargs.setdefault("input_shape", tuple(input_shape))
    kwargs.setdefault("num_classes", num_classes)
    STUDENTS.check_kwargs(arch.name, kwargs, param=param)

    # Size it on the meta device first: free, whatever the kwargs ask for, and it leaves the RNG untouched.
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        size = count_parameters(_create(arch.name, kwargs, param))
    if size > max_parameters:
        raise UserError(
            f"architecture {arch.name!r} with these arguments has {size:,} parameters; "
            f"a student may have at most {max_parameters:,}",
            code="model_too_large",
            param=param,
        )
    model = _create(arch.name, kwargs, param)
    # The dry run feeds the data's shape, not a shape the user put in kwargs: the data is what it will see.
    if dry_run:
        _dry_run(model, arch.name, tuple(input_shape), kwargs["num_classes"], param)
    return model


def _create(name: str, kwargs: dict[str, Any], param: str) -> nn.Module:
    try:
        return STUDENTS.create(name, param=param, **kwargs)
    except (RuntimeError, OverflowError, MemoryError) as exc:
        # The builders validate their arguments, so this is torch refusing a size they let through.
        raise UserError(f"architecture {name!r} cannot be built: {exc}", code="invalid_kwargs", param=param) from exc


def _dry_run(model: nn.Module, name: str, input_shape: tuple[int, ...], num_classes: int, param: str) -> None:
    """One forward pass on zeros (batch 2; eval mode, so BatchNorm statistics stay untouched)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(2, *input_shape))  # (2, num_classes)
    except (RuntimeError, ValueError, IndexError) as exc:
        raise UserError(
            f"architecture {name!r} cannot process inputs of shape {input_shape} (check input_shape if it is "
            f"given in the architecture's kwargs): {exc}",
            code="shape_mismatch",
            param=param,
        ) from exc
    finally:
        model.train(was_training)
    if tuple(logits.shape) != (2, num_classes):
        raise UserError(
            f"architecture {name!r} returns outputs of shape {tuple(logits.shape[1:])}, "
            f"expected ({num_classes},) class scores",
            code="shape_mismatch",
            param=param,
        )
