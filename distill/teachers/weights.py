"""Build a teacher's module from `teacher.architecture` and load a state_dict into it, strictly.

safetensors and state_dict checkpoints carry weights but no code, so the architecture comes from the job
spec and is built with the same `build_model` as students. Loading is strict: a missing or unexpected key,
or a shape that differs, almost always means the architecture kwargs do not match the checkpoint, and a
half-loaded teacher would silently teach noise.

num_classes: the data's class count is used when given; when it is not (unlabeled data), or when it
disagrees with the checkpoint, we find the class count that makes the built architecture match the
checkpoint exactly, by building candidates on the meta device (no memory, no init cost). A teacher trained
on another number of classes than the data has is then reported by `load_teacher` as a shape mismatch
naming both sizes, rather than as a confusing list of mismatched weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from distill.config import ArchitectureSpec
from distill.errors import UserError

PARAM = "teacher.architecture"
_DATA_PARALLEL_PREFIX = "module."
_SHOWN = 5
_MAX_CANDIDATES = 16


def require_architecture(architecture: ArchitectureSpec | None, format: str) -> ArchitectureSpec:
    if architecture is None:
        raise UserError(
            f"a {format} teacher holds weights but no code: give teacher.architecture (name and kwargs) "
            "describing the network these weights belong to, or upload TorchScript or ONNX instead.",
            code="missing_architecture",
            param=PARAM,
        )
    return architecture


def strip_data_parallel(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the 'module.' prefix that nn.DataParallel / DistributedDataParallel put on every key."""
    if state and all(k.startswith(_DATA_PARALLEL_PREFIX) for k in state):
        return {k[len(_DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
    return dict(state)


def module_from_weights(
    state: Mapping[str, Tensor],
    *,
    architecture: ArchitectureSpec,
    input_shape: tuple[int, ...],
    num_classes: int | None,
) -> nn.Module:
    """Build `architecture` for `input_shape` and load `state` into it with strict key and shape checks."""
    from distill.models import MAX_PARAMETERS, build_model

    state = strip_data_parallel(state)
    want = {k: tuple(v.shape) for k, v in state.items()}
    preferred = _preferred_classes(num_classes, architecture, state)
    # build_model caps students' size; a teacher is as large as its checkpoint, and an architecture larger
    # than the checkpoint could not match it anyway, so that is the cap here.
    cap = max(MAX_PARAMETERS, sum(t.numel() for t in state.values()))

    def build(classes: int, *, dry_run: bool = True) -> nn.Module:
        return build_model(
            architecture, input_shape=input_shape, num_classes=classes, param=PARAM, max_parameters=cap, dry_run=dry_run
        )

    chosen = preferred[0]
    for classes in preferred:
        try:
            with torch.device("meta"):
                probe = build(classes, dry_run=False)  # parameter shapes only; the real build below runs one
        except Exception:  # this class count (or the builder on meta) fails: the real build below reports why
            continue
        if _shapes(probe) == want:
            chosen = classes
            break
    # Loading a teacher must not move the global RNG: the student's initialisation depends on it.
    with torch.random.fork_rng(devices=[]):
        module = build(chosen)
    _check_match(module, want, architecture, input_shape)
    module.load_state_dict(state, strict=True)
    return module


def _preferred_classes(
    num_classes: int | None, architecture: ArchitectureSpec, state: Mapping[str, Tensor]
) -> list[int]:
    """Class counts to try, most likely first: the data's, the kwargs', then each weight matrix's output size."""
    # Heads are usually the last weights, but safetensors sorts its keys, so every matrix is a candidate.
    heads = [int(t.shape[0]) for t in reversed(list(state.values())) if t.dim() >= 2]
    found = [num_classes, architecture.kwargs.get("num_classes"), *heads]
    ordered = list(dict.fromkeys(c for c in found if isinstance(c, int) and not isinstance(c, bool) and c > 0))
    if not ordered:
        raise UserError(
            "cannot tell how many classes this teacher predicts: give num_classes in teacher.architecture.kwargs "
            "or use labeled data.",
            code="missing_num_classes",
            param=PARAM,
        )
    return ordered[:_MAX_CANDIDATES]


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _check_match(
    module: nn.Module, want: dict[str, tuple[int, ...]], architecture: ArchitectureSpec, input_shape: tuple[int, ...]
) -> None:
    have = _shapes(module)
    missing = [k for k in have if k not in want]
    unexpected = [k for k in want if k not in have]
    wrong = [f"{k}: checkpoint {want[k]} vs architecture {have[k]}" for k in have if k in want and want[k] != have[k]]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing from the checkpoint ({_few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected in the checkpoint ({_few(unexpected)})")
    if wrong:
        parts.append(f"{len(wrong)} with another shape ({_few(wrong)})")
    raise UserError(
        f"the checkpoint's weights do not fit architecture {architecture.name!r} with kwargs {architecture.kwargs} "
        f"built for examples of shape {tuple(input_shape)}: {'; '.join(parts)}. Check teacher.architecture "
        "(name and kwargs such as hidden sizes) against the network that was saved.",
        code="architecture_mismatch",
        param=PARAM,
    )


def _few(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (", …" if len(items) > _SHOWN else "")
